"""Export: JSONL and CSV, filters, streamed, and recorded as `audit.exported` first."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from types import GeneratorType

import pytest
from sqlalchemy import Engine

from appliance.audit.chain import row_hash
from appliance.audit.export import EventFilter, list_events, start_export
from appliance.audit.store import AuditLog, AuditRecord
from appliance.errors import InvalidInput
from tests.unit.audit.conftest import record


@pytest.fixture
def log(make_log: Callable[..., AuditLog]) -> AuditLog:
    log = make_log()
    log.append_many_sync([record(n) for n in range(6)])
    log.append_sync(AuditRecord(actor="user:9", action="auth.login", outcome="ok", target="s1"))
    log.append_sync(AuditRecord(actor="user:9", action="auth.logout", outcome="ok"))
    return log


def test_jsonl_export_holds_every_event_before_it_and_is_audited(log: AuditLog) -> None:
    export = start_export(log, fmt="jsonl", event_filter=EventFilter(), actor="user:auditor")

    lines = [json.loads(line) for line in b"".join(export.content).decode().splitlines()]

    assert [e["seq"] for e in lines] == list(range(1, 9))
    assert all(row_hash(e | {"time": e["time"]}) == e["hash"] for e in lines)
    exported = log.recent(1)[0]
    assert (exported.id, exported.action, exported.actor) == (
        export.event_id,
        "audit.exported",
        "user:auditor",
    )
    assert exported.details["format"] == "jsonl"
    assert exported.details["through_seq"] == 8


def test_csv_export_has_a_header_and_one_row_per_event(log: AuditLog) -> None:
    export = start_export(
        log, fmt="csv", event_filter=EventFilter(actor="user:9"), actor="user:auditor"
    )

    rows = list(csv.DictReader(io.StringIO(b"".join(export.content).decode())))

    assert [r["action"] for r in rows] == ["auth.login", "auth.logout"]
    assert rows[0]["target"] == "s1" and rows[1]["target"] == ""
    assert json.loads(rows[0]["entity_counts"]) == {}


@pytest.mark.parametrize(
    ("action", "expected"),
    [("auth.login", ["auth.login"]), ("auth.*", ["auth.login", "auth.logout"])],
)
def test_action_filter_takes_an_event_or_a_family(
    log: AuditLog, action: str, expected: list[str]
) -> None:
    found = list_events(log.engine, EventFilter(action=action))
    assert sorted(e["action"] for e in found) == expected


def test_time_range_filter(log: AuditLog) -> None:
    now = datetime.now(UTC)
    elsewhere = now.astimezone(timezone(timedelta(hours=-5)))  # the same instant, another zone
    assert list_events(log.engine, EventFilter(since=elsewhere + timedelta(minutes=1))) == []
    assert len(list_events(log.engine, EventFilter(until=elsewhere + timedelta(minutes=1)))) == 8
    assert len(list_events(log.engine, EventFilter(since=now - timedelta(minutes=5)))) == 8
    assert list_events(log.engine, EventFilter(until=now - timedelta(minutes=5))) == []
    assert list_events(log.engine, EventFilter(since=now + timedelta(minutes=5))) == []


def test_listing_pages_newest_first(log: AuditLog) -> None:
    first = list_events(log.engine, EventFilter(), limit=3)
    second = list_events(log.engine, EventFilter(), limit=3, before_seq=first[-1]["seq"])
    assert [e["seq"] for e in first + second] == [8, 7, 6, 5, 4, 3]


@pytest.mark.parametrize("before_seq", [2**31, 2**63, 10**30])
def test_a_bound_beyond_any_sequence_number_lists_from_the_newest(
    log: AuditLog, before_seq: int
) -> None:
    found = list_events(log.engine, EventFilter(), limit=2, before_seq=before_seq)
    assert [e["seq"] for e in found] == [8, 7]


def test_export_is_streamed_in_batches(make_log: Callable[..., AuditLog], engine: Engine) -> None:
    log = make_log()
    log.append_many_sync([record(n) for n in range(2500)])

    export = start_export(log, fmt="jsonl", event_filter=EventFilter(), actor="a")

    assert isinstance(export.content, GeneratorType)  # nothing read until iterated
    first = next(export.content)
    assert first.count(b"\n") == 1
    assert sum(chunk.count(b"\n") for chunk in export.content) == 2499


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"action": "auth.logni"}, "action"),
        ({"since": datetime(2026, 1, 1)}, "since"),
        (
            {"since": datetime(2026, 2, 1, tzinfo=UTC), "until": datetime(2026, 1, 1, tzinfo=UTC)},
            "since",
        ),
    ],
)
def test_bad_filters_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        EventFilter(**kwargs)  # type: ignore[arg-type]
    assert raised.value.field == field


def test_an_unknown_format_is_refused_and_not_audited(log: AuditLog) -> None:
    with pytest.raises(InvalidInput, match="format"):
        start_export(log, fmt="xml", event_filter=EventFilter(), actor="a")
    assert log.head().seq == 8


def test_csv_cells_cannot_run_as_spreadsheet_formulas(
    make_log: Callable[..., AuditLog],
) -> None:
    log = make_log()
    log.append_sync(AuditRecord(actor="=HYPERLINK(1)", action="auth.login_failed", outcome="x"))

    export = start_export(log, fmt="csv", event_filter=EventFilter(), actor="a")
    rows = list(csv.DictReader(io.StringIO(b"".join(export.content).decode())))

    assert rows[0]["actor"] == "'=HYPERLINK(1)"
