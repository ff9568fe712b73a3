"""A request's usage row is committed in its audit event's own transaction (`alongside=`): both
rows or neither, the chain unbroken, and the request counted as audited only once committed."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import Engine, func, select

from appliance.audit import requests
from appliance.audit.store import EVENTS_TABLE, AuditLog
from appliance.audit.verify import verify
from appliance.costs.models import UsageRecord
from tests.unit.audit.conftest import record

USAGE = UsageRecord.__table__  # type: ignore[attr-defined]


def usage(row_id: str | None = None) -> UsageRecord:
    values = {"actor": "apikey:k", "task": "chat", "model": "smollm2-135m", "tier": "small"}
    return UsageRecord(**values, **({"id": row_id} if row_id else {}))  # type: ignore[arg-type]


def count(engine: Engine, table: object) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


async def test_the_usage_row_commits_with_the_event(
    make_log: Callable[..., AuditLog], engine: Engine
) -> None:
    log = make_log()
    first = usage()
    event_id = await log.append(record(1), alongside=[first])
    await log.append(record(2), alongside=[usage()])
    with engine.connect() as connection:
        stored = connection.execute(select(USAGE).where(USAGE.c.id == first.id)).one()
        assert (
            connection.execute(
                select(EVENTS_TABLE.c.id).where(EVENTS_TABLE.c.request_id == "req-1")
            ).scalar_one()
            == event_id
        )
    assert stored.model == "smollm2-135m"
    assert count(engine, USAGE) == 2
    assert verify(engine, key=log.verify_key).ok


async def test_a_usage_row_that_fails_takes_the_event_with_it(
    make_log: Callable[..., AuditLog], engine: Engine
) -> None:
    log = make_log()
    taken = usage()
    await log.append(record(1), alongside=[taken])
    rows, token = requests.track()
    try:
        with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
            # The same primary key again: the insert fails after the event was linked.
            await log.append(record(2), alongside=[usage(taken.id)])
    finally:
        requests.untrack(token)
    assert count(engine, EVENTS_TABLE) == 1
    assert count(engine, USAGE) == 1
    # Not counted as audited: the HTTP layer still writes the request's failure row.
    assert rows.count == 0
    await log.append(record(3), alongside=[usage()])
    assert count(engine, EVENTS_TABLE) == 2
    assert verify(engine, key=log.verify_key).ok
