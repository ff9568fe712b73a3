"""Leases: background work that several replicas on one database share, each piece run by one.

A lease is a holder token and an expiry on a row. A worker takes work by writing a fresh token
and `now + lease_s` in one conditional statement, renews the expiry while the work runs (every
third of `lease_s`), and finishes the work only if the row still names its token. A replica that
dies (`kill -9`, power cut) stops renewing: once its expiry passes another replica takes the work
over. A worker that only stalled and finds its lease taken stops, and its late writes are dropped.
`leased()` is that whole life of one claim: claim, renew in the background, stop when the lease
is lost, give the work back when stopped early.

Two kinds:

- `RowLeases`: rows of a work table that carry `lease_holder` and `lease_expires_at` (batch
  items, evaluation runs, model pulls). On PostgreSQL a claim reads its candidates with
  `SELECT ... FOR UPDATE SKIP LOCKED`, so concurrent claimers skip each other's rows instead of
  queueing on them; on SQLite the claim runs in a `BEGIN IMMEDIATE` transaction, which holds the
  database's one write lock (SQLite means one server process; this also covers the CLI beside it).
- `NamedLeases`: one row per singleton duty in `leases(name, holder, expires_at)` (expiry
  sweeps, timed audit checkpoints, the retention purge), taken with one atomic upsert that
  succeeds only when the row is free, expired, or already this holder's.

Times are the database's clock on PostgreSQL (app hosts' clocks may differ; the database's is one)
and this host's on SQLite (one host). Each process has one holder id (host, pid and a random
part), which named leases use as it is. A row lease's token is that id plus a random part drawn
for each claim: two workers of one process never share one, so a worker whose lease ran out and
was claimed again by its neighbour can neither renew nor finish the row.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

import anyio
from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    MetaData,
    Row,
    String,
    Table,
    delete,
    func,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

from appliance.db.engine import begin_write_locked
from appliance.db.models import utcnow

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_LEASE_S = 30.0
"""How long a lease lasts without renewal (the `lease_s` setting's default)."""

LEASES = Table(
    "leases",
    MetaData(),
    Column("name", String(100), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)
"""Named leases (migration 0013): one row per singleton duty."""

_holder: tuple[int, str] | None = None


def process_holder() -> str:
    """This process's holder id, `host:pid:random` (a forked child gets its own)."""
    global _holder
    pid = os.getpid()
    if _holder is None or _holder[0] != pid:
        _holder = (pid, f"{socket.gethostname()[:120]}:{pid}:{secrets.token_hex(4)}")
    return _holder[1]


@dataclass(frozen=True)
class LeaseTerms:
    """Who holds (this process, unless a test names another) and for how long."""

    holder: str = field(default_factory=process_holder)
    lease_s: float = DEFAULT_LEASE_S

    def token(self) -> str:
        """A fresh token for one claim of rows: the holder id and a random part."""
        return f"{self.holder}:{secrets.token_hex(4)}"

    @property
    def renew_every_s(self) -> float:
        """How often a held lease is renewed: three chances before it runs out."""
        return self.lease_s / 3

    def expiry(self, now: datetime) -> datetime:
        """When a lease taken or renewed at `now` runs out."""
        return now + timedelta(seconds=self.lease_s)


def database_now(connection: Connection) -> datetime:
    """The time leases are measured in: PostgreSQL's clock, else this host's (SQLite)."""
    if connection.dialect.name == "postgresql":
        value: datetime = connection.execute(select(func.now())).scalar_one()
        return value
    return utcnow()


@dataclass(frozen=True)
class Lease:
    """One claimed row: its key (a tuple of its primary key's values) and the token of the claim
    that holds it."""

    key: tuple[Any, ...]
    token: str


class RowLeases:
    """Leases on the rows of `table`, which has `lease_holder` and `lease_expires_at` columns;
    rows are named by their primary key (a tuple of its columns' values)."""

    def __init__(self, engine: Engine, table: Table, terms: LeaseTerms) -> None:
        self.engine = engine
        self.table = table
        self.terms = terms
        self._key = tuple(table.primary_key.columns)
        self._holder = table.c.lease_holder
        self._expires = table.c.lease_expires_at

    def held(self, token: str | None) -> ColumnElement[bool]:
        """The condition a conditional finish adds: the row is still held by the claim `token`
        (None: by no claim, as a run the command line runs itself)."""
        return self._holder.is_(None) if token is None else self._holder == token

    def lease_of(self, row: Any) -> Lease:
        """The lease a claimed row (or a model object of it) carries, as `renew` and `release`
        take it."""
        return Lease(tuple(getattr(row, c.name) for c in self._key), str(row.lease_holder))

    def _matching(self, leases: Collection[Lease]) -> ColumnElement[bool]:
        pairs = [(*lease.key, lease.token) for lease in leases]
        return tuple_(*self._key, self._holder).in_(pairs)

    def claim(
        self,
        *where: ColumnElement[bool],
        order_by: Collection[Any],
        limit: int = 1,
        values: Mapping[str, Any] | None = None,
    ) -> list[Row[Any]]:
        """Lease up to `limit` rows matching `where` that nobody holds (or whose lease ran
        out), in `order_by` order, to one new claim; sets `values` on them too. Returns the
        claimed rows (their `lease_holder` is the claim's token: `lease_of` reads it)."""
        with self.engine.connect() as connection:
            # SQLite: no other writer reads the same free rows between our read and our update.
            begin_write_locked(connection)
            now = database_now(connection)
            free = or_(self._expires.is_(None), self._expires < now)
            candidates = select(*self._key).where(*where, free).order_by(*order_by).limit(limit)
            if connection.dialect.name == "postgresql":
                candidates = candidates.with_for_update(skip_locked=True)
            keys = [tuple(row) for row in connection.execute(candidates)]
            if not keys:
                connection.rollback()
                return []
            chosen = tuple_(*self._key).in_(keys)
            connection.execute(
                update(self.table)
                .where(chosen)
                .values(
                    lease_holder=self.terms.token(),
                    lease_expires_at=self.terms.expiry(now),
                    **(values or {}),
                )
            )
            rows = list(connection.execute(select(self.table).where(chosen)))
            connection.commit()
        return rows

    def renew(self, leases: Collection[Lease]) -> set[Lease]:
        """Push out the expiry of those of `leases` whose claim still holds its row; returns
        them."""
        if not leases:
            return set()
        with self.engine.begin() as connection:
            expires = self.terms.expiry(database_now(connection))
            renewed = connection.execute(
                update(self.table)
                .where(self._matching(leases))
                .values(lease_expires_at=expires)
                .returning(*self._key, self._holder)
            )
            return {Lease(tuple(row[:-1]), row[-1]) for row in renewed}

    def release(
        self, leases: Collection[Lease], *, values: Mapping[str, Any] | None = None
    ) -> None:
        """Give up those of `leases` whose claim still holds its row (at shutdown), so another
        replica takes them at once instead of after the expiry; sets `values` on them too."""
        if not leases:
            return
        with self.engine.begin() as connection:
            connection.execute(
                update(self.table)
                .where(self._matching(leases))
                .values(lease_holder=None, lease_expires_at=None, **(values or {}))
            )


class NamedLeases:
    """Singleton duties by name: `take(name)` takes or renews, `release(name)` gives up."""

    def __init__(self, engine: Engine, terms: LeaseTerms) -> None:
        self.engine = engine
        self.terms = terms

    def take(self, name: str) -> bool:
        """Hold `name` for another `lease_s` if it is free, expired or already ours."""
        with self.engine.begin() as connection:
            now = database_now(connection)
            dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
            insert = dialect.insert(LEASES).values(
                name=name, holder=self.terms.holder, expires_at=self.terms.expiry(now)
            )
            upsert = insert.on_conflict_do_update(
                index_elements=[LEASES.c.name],
                set_={"holder": insert.excluded.holder, "expires_at": insert.excluded.expires_at},
                where=or_(LEASES.c.holder == self.terms.holder, LEASES.c.expires_at < now),
            ).returning(LEASES.c.holder)
            return connection.execute(upsert).first() is not None

    def release(self, name: str) -> None:
        """Give `name` up if this holder has it."""
        with self.engine.begin() as connection:
            connection.execute(
                delete(LEASES).where(LEASES.c.name == name, LEASES.c.holder == self.terms.holder)
            )

    def holder(self, name: str) -> str | None:
        """Who holds `name` now (None: nobody, or the lease ran out)."""
        with self.engine.connect() as connection:
            now = database_now(connection)
            found = connection.execute(
                select(LEASES.c.holder).where(LEASES.c.name == name, LEASES.c.expires_at >= now)
            ).scalar()
            return None if found is None else str(found)


@asynccontextmanager
async def kept(
    renew: Callable[[], bool], *, every_s: float, on_lost: Callable[[], object] | None = None
) -> AsyncIterator[None]:
    """Renew a lease in the background while the block runs: `renew()` (blocking, run in a
    thread) every `every_s`; when it returns False the lease is gone and `on_lost()` is called
    once. A renewal that fails (the database away) is retried at the next turn."""

    async def renewing() -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                held = await anyio.to_thread.run_sync(renew)
            except Exception:
                log.warning("renewing a lease failed; retrying", exc_info=True)
                continue
            if not held:
                if on_lost is not None:
                    on_lost()
                return

    task = asyncio.create_task(renewing())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@dataclass
class Held(Generic[T]):
    """Work a claim holds, as `leased` yields it; `lost` once the lease passed to another."""

    work: T
    lease: Lease
    lost: bool = False


@asynccontextmanager
async def leased(
    leases: RowLeases,
    claim: Callable[[], tuple[T, Lease] | None],
    *,
    what: str,
    give_back: Mapping[str, Any] | None = None,
) -> AsyncIterator[Held[T] | None]:
    """Claim work and hold it while the block runs (`holding`); yields None when there was none
    to claim. `claim()` (blocking, run in a thread) returns the work and its lease, or None;
    cancelled meanwhile, what it claimed is given back (`claim_in_thread`)."""
    claimed = await claim_in_thread(
        claim,
        lambda taken: leases.release([taken[1]], values=give_back),
        what=what,
    )
    if claimed is None:
        yield None
        return
    work, lease = claimed
    async with holding(leases, work, lease, what=what, give_back=give_back) as held:
        yield held


@asynccontextmanager
async def holding(
    leases: RowLeases,
    work: T,
    lease: Lease,
    *,
    what: str,
    give_back: Mapping[str, Any] | None = None,
) -> AsyncIterator[Held[T]]:
    """Hold claimed work while the block runs: its lease is renewed every third of `lease_s`.

    When a renewal finds the row taken over (this worker stalled past `lease_s`), the block is
    stopped where it is, `lost` is set and the `async with` ends without an error: the new
    holder runs the work. When the block ends early (cancelled at shutdown, or failed), the row
    is given back at once (off the event loop, to its end even when cancelled again), with
    `give_back` values set on it, and the exception goes on. A block that ends normally has
    finished its work (its conditional finish cleared the lease): nothing is given back, and a
    renewal that raced that finish and found the row cleared is no loss (`lost` stays False).
    `what` names the work in logs (never its content)."""
    held = Held(work, lease)
    finished = False
    with anyio.CancelScope() as scope:

        def lost() -> None:
            if finished:  # the work's own finish cleared the row
                return
            held.lost = True
            scope.cancel()

        renewing = kept(
            lambda: bool(leases.renew([lease])), every_s=leases.terms.renew_every_s, on_lost=lost
        )
        try:
            async with renewing:
                yield held
                finished = True
        except BaseException:
            if not held.lost and not finished:
                await released(lambda: leases.release([lease], values=give_back), what=what)
            raise
    if finished:
        # A renewal in flight while the work finished saw the row its finish had just cleared:
        # the block was not stopped, so the lease was never another's.
        held.lost = False
    elif held.lost:
        detail = f"{what} {':'.join(map(str, lease.key))}"
        log.warning("lease passed to another replica; stopped", extra={"detail": detail})


async def periodically(
    work: Callable[[], Awaitable[object]],
    *,
    every_s: float,
    leases: NamedLeases | None,
    name: str,
) -> None:
    """Run `work` now and then every `every_s` until cancelled. With `leases`, only while this
    process holds the lease `name` (taken or renewed at each turn, kept during the work), so one
    replica runs it at a time; the holder gives it up when it stops. A failing run is logged
    and the next turn tries again."""
    tick = every_s if leases is None else min(every_s, leases.terms.renew_every_s)
    last: float | None = None
    try:
        while True:
            held = True
            if leases is not None:
                try:
                    held = await anyio.to_thread.run_sync(leases.take, name)
                except Exception:
                    log.warning("taking a lease failed", extra={"detail": name}, exc_info=True)
                    held = False
            if not held:
                last = None  # whoever holds it runs it; if it comes back to us, run at once
            elif last is None or time.monotonic() - last >= every_s:
                last = time.monotonic()
                try:
                    if leases is None:
                        await work()
                    else:
                        async with kept(lambda: leases.take(name), every_s=tick):
                            await work()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.error("background work failed", extra={"detail": name}, exc_info=True)
            await asyncio.sleep(tick)
    finally:
        if leases is not None:
            await released(lambda: leases.release(name), what=name)


def release_quietly(release: Callable[[], object], *, what: str) -> None:
    """Give a lease up at shutdown; a failure only means the others wait for the expiry."""
    try:
        release()
    except Exception:
        log.warning("releasing a lease failed", extra={"detail": what}, exc_info=True)


async def released(release: Callable[[], object], *, what: str) -> None:
    """`release_quietly` from async code: in a thread, so a database outage's reconnect does not
    stop the event loop, and to its end even when cancelled meanwhile (a shutdown is what gives
    leases back); a cancellation that arrived is raised once the lease is given back."""
    _, cancelled = await _to_the_end(lambda: release_quietly(release, what=what))
    if cancelled is not None:
        raise cancelled


async def claim_in_thread(
    claim: Callable[[], T | None], give_back: Callable[[T], object], *, what: str
) -> T | None:
    """Run `claim()` (blocking) in a thread and return what it claimed (None: nothing).

    A cancellation (a shutdown) does not abandon the claim: its thread goes on and may commit,
    which would leave a lease that nobody renews or gives back until it runs out. So the claim
    is waited for, what it took is given back with `give_back(claimed)` (`released`), and then
    the cancellation goes on."""
    claimed, cancelled = await _to_the_end(claim)
    if cancelled is None:
        return claimed
    if claimed is not None:
        taken = claimed
        await released(lambda: give_back(taken), what=what)
    raise cancelled


async def _to_the_end(
    call: Callable[[], T],
) -> tuple[T, asyncio.CancelledError | None]:
    """Run `call()` (blocking) in a thread and wait for its result even when cancelled meanwhile,
    by `Task.cancel()` (plain asyncio tasks, which anyio's shield does not stop) or by an anyio
    scope; returns the result and the cancellation that arrived (the caller raises it). When
    both `call()` failed and a cancellation arrived, the cancellation is raised."""
    done = asyncio.ensure_future(anyio.to_thread.run_sync(call))
    cancelled: asyncio.CancelledError | None = None
    with anyio.CancelScope(shield=True):
        while not done.done():
            try:
                await asyncio.wait([done])
            except asyncio.CancelledError as exc:
                cancelled = exc
    if cancelled is not None and done.exception() is not None:
        raise cancelled
    return done.result(), cancelled
