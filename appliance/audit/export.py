"""Export and list audit events: JSONL or CSV, filtered by time, actor and action, streamed.

An export is itself audited: the `audit.exported` event is committed first, and the export holds
every matching event before it, so what was handed out is on the record even if the download
is cut short. Rows come from the database in batches and leave as lines, so an export of years
of events does not sit in memory.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Engine, Select, and_, select

from appliance.audit.chain import HASHED_FIELDS, canonical_time
from appliance.audit.events import EVENTS, AuditExported
from appliance.audit.store import EVENTS_TABLE, AuditLog
from appliance.errors import InvalidInput

Format = Literal["jsonl", "csv"]
FORMATS: tuple[Format, ...] = ("jsonl", "csv")

COLUMNS = (*HASHED_FIELDS, "hash")
"""Every column, in the order the CSV header shows them."""


@dataclass(frozen=True)
class EventFilter:
    """Which events: a time range (`since` inclusive, `until` exclusive), an actor, an action.

    `action` is a dotted event name, or a family such as `auth.*` (every `auth.` event).
    """

    since: datetime | None = None
    until: datetime | None = None
    actor: str | None = None
    action: str | None = None

    def __post_init__(self) -> None:
        if self.action is not None and self.action.removesuffix("*").rstrip(".") not in {
            *EVENTS,
            *(name.split(".")[0] for name in EVENTS),
        }:
            raise InvalidInput(
                f"'{self.action}' is not an audit event or family (e.g. `auth.*`)",
                field="action",
            )
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise InvalidInput(f"'{name}' needs a time zone (e.g. `Z`)", field=name)
        if self.since and self.until and self.since >= self.until:
            raise InvalidInput("'since' must be before 'until'", field="since")

    def as_details(self) -> dict[str, str | None]:
        """The filter as the `audit.exported` event records it."""
        return {
            "since": canonical_time(self.since) if self.since else None,
            "until": canonical_time(self.until) if self.until else None,
            "actor": self.actor,
            "action": self.action,
        }

    def where(self) -> list[ColumnElement[bool]]:
        """The SQL conditions."""
        columns = EVENTS_TABLE.c
        conditions: list[ColumnElement[bool]] = []
        # In UTC: SQLite stores the UTC wall time and compares text, ignoring any zone.
        if self.since is not None:
            conditions.append(columns.time >= self.since.astimezone(UTC))
        if self.until is not None:
            conditions.append(columns.time < self.until.astimezone(UTC))
        if self.actor is not None:
            conditions.append(columns.actor == self.actor)
        if self.action is not None:
            if self.action.endswith("*") or self.action.removesuffix("*") not in EVENTS:
                family = self.action.removesuffix("*").rstrip(".")
                conditions.append(columns.action.startswith(f"{family}."))
            else:
                conditions.append(columns.action == self.action)
        return conditions


def _public(row: Any) -> dict[str, Any]:
    values = {name: row[name] for name in COLUMNS}
    values["time"] = canonical_time(values["time"])
    values["entity_counts"] = dict(values["entity_counts"] or {})
    values["details"] = dict(values["details"] or {})
    return values


def _select(where: list[ColumnElement[bool]]) -> Select[Any]:
    return select(EVENTS_TABLE).where(and_(True, *where))


def iter_events(
    engine: Engine, event_filter: EventFilter, *, through_seq: int | None = None, batch: int = 1000
) -> Iterator[dict[str, Any]]:
    """Matching events oldest first, read in batches (a server-side cursor on PostgreSQL)."""
    where = event_filter.where()
    if through_seq is not None:
        where.append(EVENTS_TABLE.c.seq <= through_seq)
    with engine.connect() as connection:
        result = connection.execution_options(stream_results=True, yield_per=batch).execute(
            _select(where).order_by(EVENTS_TABLE.c.seq)
        )
        try:
            for row in result.mappings():
                yield _public(row)
        finally:
            result.close()


MAX_SEQ = 2**31 - 1
"""The largest audit sequence number the column holds."""


def list_events(
    engine: Engine, event_filter: EventFilter, *, limit: int = 100, before_seq: int | None = None
) -> list[dict[str, Any]]:
    """A page of matching events, newest first; page on with `before_seq`."""
    where = event_filter.where()
    # Sequence numbers are 32-bit: a larger bound excludes nothing (and PostgreSQL would refuse
    # to compare it with the column).
    if before_seq is not None and before_seq <= MAX_SEQ:
        where.append(EVENTS_TABLE.c.seq < before_seq)
    with engine.connect() as connection:
        rows = connection.execute(
            _select(where).order_by(EVENTS_TABLE.c.seq.desc()).limit(limit)
        ).mappings()
        return [_public(row) for row in rows]


def jsonl(events: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    """One JSON object per line."""
    for event in events:
        yield (json.dumps(event, sort_keys=True, ensure_ascii=False) + "\n").encode()


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    # A spreadsheet would run `=...` in an actor name as a formula; JSONL keeps exact values.
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return "" if value is None else value


def csv_lines(events: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    """CSV with a header; counts and details as JSON in their cells; formula-safe text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for event in events:
        writer.writerow(
            [
                json.dumps(event[name], sort_keys=True)
                if name in ("entity_counts", "details")
                else _cell(event[name])
                for name in COLUMNS
            ]
        )
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


@dataclass(frozen=True)
class Export:
    """A started export: the id of its `audit.exported` event and its content as a stream."""

    event_id: str
    through_seq: int
    content: Iterator[bytes]


def start_export(
    audit: AuditLog,
    *,
    fmt: str,
    event_filter: EventFilter,
    actor: str,
    role: str | None = None,
    source: str | None = None,
    request_id: str | None = None,
) -> Export:
    """Record `audit.exported`, then stream every matching event written before it."""
    if fmt not in FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(FORMATS)}", field="format")
    through = audit.head().seq
    event_id = audit.append_sync(
        AuditExported(
            actor=actor,
            role=role,
            source=source,
            request_id=request_id,
            details={"format": fmt, "through_seq": through, **event_filter.as_details()},
        ).record()
    )
    events = iter_events(audit.engine, event_filter, through_seq=through)
    content = jsonl(events) if fmt == "jsonl" else csv_lines(events)
    return Export(event_id=event_id, through_seq=through, content=content)
