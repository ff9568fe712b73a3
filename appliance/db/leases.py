"""Leases: background work that several replicas on one database share, each piece run by one.

A lease is a holder id and an expiry on a row. A replica takes work by writing its id and
`now + lease_s` in one conditional statement, renews the expiry while the work runs (every third
of `lease_s`), and finishes the work only if the row still names it. A replica that dies (`kill
-9`, power cut) stops renewing: once its expiry passes another replica takes the work over. A
replica that only stalled and finds its lease taken drops its result.

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
and this host's on SQLite (one host). Each process has one holder id: host, pid and a random part.
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
from typing import Any

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

from appliance.db.models import utcnow

log = logging.getLogger(__name__)

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


def begin_claim(connection: Connection) -> None:
    """Open the transaction a claim runs in: on SQLite with the write lock taken up front, so no
    other writer reads the same free rows between our read and our update."""
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")


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

    def held(self) -> ColumnElement[bool]:
        """The condition a conditional finish adds: the row is still this holder's."""
        return self._holder == self.terms.holder

    def key_of(self, row: Row[Any]) -> tuple[Any, ...]:
        """A row's key, as `renew` and `release` take it."""
        return tuple(getattr(row, c.name) for c in self._key)

    def claim(
        self,
        *where: ColumnElement[bool],
        order_by: Collection[Any],
        limit: int = 1,
        values: Mapping[str, Any] | None = None,
    ) -> list[Row[Any]]:
        """Lease up to `limit` rows matching `where` that nobody holds (or whose lease ran
        out), in `order_by` order; sets `values` on them too. Returns the claimed rows."""
        with self.engine.connect() as connection:
            begin_claim(connection)
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
                    lease_holder=self.terms.holder,
                    lease_expires_at=self.terms.expiry(now),
                    **(values or {}),
                )
            )
            rows = list(connection.execute(select(self.table).where(chosen)))
            connection.commit()
        return rows

    def renew(self, keys: Collection[tuple[Any, ...]]) -> set[tuple[Any, ...]]:
        """Push out the expiry of those of `keys` this holder still holds; returns them."""
        if not keys:
            return set()
        with self.engine.begin() as connection:
            expires = self.terms.expiry(database_now(connection))
            renewed = connection.execute(
                update(self.table)
                .where(tuple_(*self._key).in_(list(keys)), self.held())
                .values(lease_expires_at=expires)
                .returning(*self._key)
            )
            return {tuple(row) for row in renewed}

    def release(
        self, keys: Collection[tuple[Any, ...]], *, values: Mapping[str, Any] | None = None
    ) -> None:
        """Give up those of `keys` this holder holds (at shutdown), so another replica takes
        them at once instead of after the expiry; sets `values` on them too."""
        if not keys:
            return
        with self.engine.begin() as connection:
            connection.execute(
                update(self.table)
                .where(tuple_(*self._key).in_(list(keys)), self.held())
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
            release_quietly(lambda: leases.release(name), what=name)


def release_quietly(release: Callable[[], object], *, what: str) -> None:
    """Give a lease up at shutdown; a failure only means the others wait for the expiry."""
    try:
        release()
    except Exception:
        log.warning("releasing a lease failed", extra={"detail": what}, exc_info=True)
