"""The app's background audit work: timed checkpoints."""

from __future__ import annotations

from collections.abc import Callable

import anyio
from sqlalchemy import Engine, select

from appliance.audit.checkpoints import CHECKPOINTS
from appliance.audit.schedule import maintain
from appliance.audit.store import AuditLog
from tests.unit.audit.conftest import record


async def test_maintenance_writes_a_checkpoint_once_the_interval_passed(
    make_log: Callable[..., AuditLog], engine: Engine
) -> None:
    log = make_log(checkpoint_every=1000, checkpoint_minutes=0.1 / 60)
    log.append_sync(record(1))

    with anyio.move_on_after(1.0):
        await maintain(log, retention_days=30, tick_s=0.05)

    with engine.connect() as connection:
        seqs = list(connection.execute(select(CHECKPOINTS.c.seq)).scalars())
    assert seqs == [1]  # one checkpoint: nothing was added after it
    assert log.head().seq == 1  # and the retention pass found nothing old to purge
