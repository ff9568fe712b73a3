"""Model pull jobs as rows, so every replica sees every pull and an interrupted one is resumed.

`appliance.inference.pulls` runs the pulls; it keeps them here through its `PullStore`
protocol (the inference package reaches no database itself). A row holds what the API shows
(status, phase, node, bytes per layer), who asked (for the audit row written when the pull ends),
and a lease (`appliance.db.leases`): the replica running the pull renews it and saves progress
now and then, and writes the end only while its claim (the token `add` or `claim_abandoned`
returned) still holds the row; when that replica dies, another claims the row once the lease ran
out and pulls again (Ollama continues a pull where it stopped). A partial unique index allows one
running pull per backend and model, across replicas: `add` reports a second one, and the caller
refuses it.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from appliance.db.leases import (
    Held,
    Lease,
    LeaseTerms,
    RowLeases,
    claim_in_thread,
    database_now,
    holding,
    released,
)

PULLS = Table(
    "model_pulls",
    MetaData(),
    Column("id", String(32), primary_key=True),
    Column("backend", String(200), nullable=False),
    Column("model", String(200), nullable=False),
    Column("nodes", JSON, nullable=False),
    Column("requester", JSON, nullable=False),
    Column("status", String(20), nullable=False),
    Column("phase", String(200), nullable=False),
    Column("node_index", Integer, nullable=False),
    Column("layers", JSON, nullable=False),
    Column("error", String(300)),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("lease_holder", String(200)),
    Column("lease_expires_at", DateTime(timezone=True)),
    Index("ix_model_pulls_status", "status"),
)
"""Migration 0013; `status` is `running`, `succeeded` or `failed`."""

PROGRESS = ("status", "phase", "node_index", "layers", "error", "finished_at")
"""The columns a running pull updates."""


class PullRows:
    """Pull jobs in the database, as dicts of their columns (the inference package's
    `PullStore`); a job is leased to the process that adds or claims it."""

    def __init__(self, engine: Engine, lease: LeaseTerms | None = None) -> None:
        self.engine = engine
        self.leases = RowLeases(engine, PULLS, lease or LeaseTerms())

    @property
    def renew_every_s(self) -> float:
        """How often the runner renews a pull's lease."""
        return self.leases.terms.renew_every_s

    def add(self, job: dict[str, Any], *, keep_finished: int) -> str | None:
        """Store a new running pull, leased to a new claim of this process, and forget all but
        the newest `keep_finished` finished ones. Returns the claim's token; None when the same
        model is being pulled on the same backend (by any replica) and nothing was stored."""
        token = self.leases.terms.token()
        try:
            with self.engine.begin() as connection:
                expires = self.leases.terms.expiry(database_now(connection))
                connection.execute(
                    insert(PULLS).values(
                        {**job, "lease_holder": token, "lease_expires_at": expires}
                    )
                )
                finished = select(PULLS.c.id).where(PULLS.c.status != "running")
                old = finished.order_by(PULLS.c.started_at.desc()).offset(keep_finished)
                connection.execute(delete(PULLS).where(PULLS.c.id.in_(old.scalar_subquery())))
        except IntegrityError:
            return None
        return token

    def save(self, job: dict[str, Any], token: str) -> bool:
        """Write a running pull's progress if the claim `token` still holds it."""
        with self.engine.begin() as connection:
            saved = connection.execute(
                update(PULLS)
                .where(PULLS.c.id == job["id"], self.leases.held(token))
                .values({name: job[name] for name in PROGRESS})
            )
            return bool(saved.rowcount)

    def finish(self, connection: Connection, job: dict[str, Any], token: str) -> bool:
        """Write a pull's end, in the caller's transaction (the one that audits it), if the
        claim `token` still holds it; its lease ends with it. Returns whether it was written."""
        ended = connection.execute(
            update(PULLS)
            .where(PULLS.c.id == job["id"], self.leases.held(token))
            .values(
                {name: job[name] for name in PROGRESS}
                | {"lease_holder": None, "lease_expires_at": None}
            )
        )
        return bool(ended.rowcount)

    def remove(self, job_id: str) -> None:
        """Forget a pull that never started (its start could not be audited)."""
        with self.engine.begin() as connection:
            connection.execute(delete(PULLS).where(PULLS.c.id == job_id))

    def get(self, job_id: str) -> dict[str, Any] | None:
        """One pull by id."""
        with self.engine.connect() as connection:
            row = connection.execute(select(PULLS).where(PULLS.c.id == job_id)).first()
            return None if row is None else dict(row._mapping)

    def recent(self) -> list[dict[str, Any]]:
        """Every pull kept, newest first."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(PULLS).order_by(PULLS.c.started_at.desc()))
            return [dict(row._mapping) for row in rows]

    async def claim_abandoned(self) -> dict[str, Any] | None:
        """Lease to this process the oldest running pull nobody holds (its replica stopped or
        died); None when there is none. The claim runs in a thread; cancelled meanwhile (a
        shutdown), the pull it took is given back (`claim_in_thread`)."""

        def claim() -> dict[str, Any] | None:
            rows = self.leases.claim(PULLS.c.status == "running", order_by=[PULLS.c.started_at])
            return dict(rows[0]._mapping) if rows else None

        return await claim_in_thread(
            claim,
            lambda row: self.leases.release([Lease((row["id"],), row["lease_holder"])]),
            what="model pull",
        )

    def held(self, job_id: str, token: str) -> AbstractAsyncContextManager[Held[None]]:
        """Hold the pull `job_id` under the claim `token` while the block runs
        (`appliance.db.leases.holding`): renewed, the block stopped once another replica has
        it, the pull given back when the block ends early."""
        return holding(self.leases, None, Lease((job_id,), token), what="model pull")

    async def release(self, job_id: str, token: str) -> None:
        """Give a running pull up (a stopping server): another replica resumes it at once. Off
        the event loop, to its end even when cancelled meanwhile (`released`)."""
        lease = Lease((job_id,), token)
        await released(lambda: self.leases.release([lease]), what="model pull")
