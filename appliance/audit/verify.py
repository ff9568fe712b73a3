"""Verify the audit trail: every hash, every link, every checkpoint, and the external witness.

The report is OK, or names the first bad sequence number and why. What is checked:

- each row's hash is the SHA-256 of its canonical contents (a changed field shows here);
- each row's `prev_hash` is the previous row's hash and sequence numbers have no gap (a removed,
  inserted or reordered row shows here);
- the first row is the first event ever, or continues from a signed anchor checkpoint written
  by a retention purge (deleting old rows any other way shows here);
- every checkpoint, in the database or from a witness, carries a valid Ed25519 signature, and
  the chain still has the head it vouches for (a rewritten chain, rows cut from the end, or an
  older copy of the database restored, show here).

Rows are read in a stream, so memory does not grow with the length of the trail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from appliance.audit import checkpoints
from appliance.audit.chain import GENESIS, row_hash
from appliance.audit.checkpoints import Checkpoint
from appliance.audit.events import AuditVerified, Scalar
from appliance.audit.keys import VerifyKey
from appliance.audit.store import EVENTS_TABLE, AuditLog
from appliance.audit.witness import last_checkpoints, read_checkpoints, witness_files


@dataclass(frozen=True)
class VerifyReport:
    """The verifier's answer: OK, or the first bad sequence number and the reason."""

    ok: bool
    events: int
    first_seq: int | None
    last_seq: int | None
    head_hash: str | None
    checkpoints: int
    witnessed: int
    bad_seq: int | None = None
    reason: str | None = None
    witnessed_seq: int | None = None
    """The highest sequence number a witnessed (external) checkpoint vouches for."""
    unvouched: int = 0
    """Events after the last witnessed head: they verify as a chain, but nothing outside the
    database vouches for them, so rows cut from (or rewritten at) the end would not show."""

    def to_dict(self) -> dict[str, Any]:
        """The report as the API and `appliance audit verify --json` show it."""
        return asdict(self)

    def summary(self) -> str:
        """One line for people."""
        if self.ok:
            span = f"seq {self.first_seq}..{self.last_seq}" if self.events else "no events"
            line = (
                f"OK: {self.events} events ({span}), {self.checkpoints} checkpoints, "
                f"{self.witnessed} witnessed checkpoints verified"
            )
            if self.unvouched:
                after = (
                    f"the last witnessed head (seq {self.witnessed_seq})"
                    if self.witnessed_seq is not None
                    else "any witnessed head (no witness checkpoint found)"
                )
                line += f"; UNVOUCHED: {self.unvouched} events after {after}"
            return line
        return f"FAILED at seq {self.bad_seq}: {self.reason}"


class _Failure(Exception):
    def __init__(self, seq: int | None, reason: str) -> None:
        super().__init__(reason)
        self.seq = seq
        self.reason = reason


def _describe(checkpoint: Checkpoint, witnessed: bool) -> str:
    origin = "witnessed" if witnessed else "stored"
    return f"{origin} {checkpoint.kind} checkpoint at seq {checkpoint.seq}"


def verify(
    engine: Engine,
    *,
    key: VerifyKey | None,
    witnessed: Sequence[Checkpoint] = (),
    batch: int = 2000,
) -> VerifyReport:
    """Check the whole trail in `engine` against its checkpoints and `witnessed` ones."""
    counters = {"events": 0, "first": None, "last": None, "head": None}
    with engine.connect() as connection:
        stored = checkpoints.all_checkpoints(connection)
        try:
            _check_signatures(stored, key, witnessed=False)
            _check_signatures(witnessed, key, witnessed=True)
            every = [(c, False) for c in stored] + [(c, True) for c in witnessed]
            expected: dict[int, list[tuple[Checkpoint, bool]]] = {}
            for checkpoint, is_witnessed in every:
                expected.setdefault(checkpoint.seq, []).append((checkpoint, is_witnessed))
            anchors = {c.seq: c for c in stored if c.kind == "anchor"}
            rows = connection.execution_options(stream_results=True, yield_per=batch).execute(
                select(EVENTS_TABLE).order_by(EVENTS_TABLE.c.seq)
            )
            try:
                _walk(rows.mappings(), expected, anchors, counters)
            finally:
                rows.close()
            _check_ends(every, anchors, counters)
        except _Failure as failure:
            return _report(counters, stored, witnessed, ok=False, failure=failure)
    return _report(counters, stored, witnessed, ok=True, failure=None)


def _report(
    counters: dict[str, Any],
    stored: Sequence[Checkpoint],
    witnessed: Sequence[Checkpoint],
    *,
    ok: bool,
    failure: _Failure | None,
) -> VerifyReport:
    vouched = max((c.seq for c in witnessed), default=None)
    last = counters["last"]
    unvouched = 0
    if last is not None:
        first = counters["first"] or 1
        unvouched = last - max(vouched or 0, first - 1)
    return VerifyReport(
        witnessed_seq=vouched,
        unvouched=max(unvouched, 0),
        ok=ok,
        events=counters["events"],
        first_seq=counters["first"],
        last_seq=counters["last"],
        head_hash=counters["head"],
        checkpoints=len(stored),
        witnessed=len(witnessed),
        bad_seq=failure.seq if failure else None,
        reason=failure.reason if failure else None,
    )


def _check_signatures(
    found: Sequence[Checkpoint], key: VerifyKey | None, *, witnessed: bool
) -> None:
    for checkpoint in found:
        if key is None:
            raise _Failure(checkpoint.seq, "no public key to check checkpoint signatures with")
        if checkpoint.key_id != key.key_id:
            raise _Failure(
                checkpoint.seq,
                f"{_describe(checkpoint, witnessed)} is signed by key {checkpoint.key_id}, "
                f"not by this appliance's key {key.key_id}",
            )
        if not checkpoint.verify(key):
            raise _Failure(
                checkpoint.seq,
                f"{_describe(checkpoint, witnessed)}: the signature does not verify "
                "(the checkpoint or its signature was altered)",
            )


def _walk(
    rows: Any,
    expected: dict[int, list[tuple[Checkpoint, bool]]],
    anchors: dict[int, Checkpoint],
    counters: dict[str, Any],
) -> None:
    prev_seq: int | None = None
    prev_hash = GENESIS
    for row in rows:
        seq = int(row["seq"])
        if prev_seq is None:
            counters["first"] = seq
            prev_hash = _start_of_chain(seq, anchors)
        elif seq != prev_seq + 1:
            raise _Failure(
                prev_seq + 1,
                f"event seq {prev_seq + 1} is missing (the chain jumps from {prev_seq} to {seq})",
            )
        if row_hash(row) != row["hash"]:
            raise _Failure(seq, "the event's contents do not match its hash (a field was altered)")
        if row["prev_hash"] != prev_hash:
            raise _Failure(
                seq,
                "prev_hash does not match the hash of the event before it "
                "(an event was inserted, removed, reordered or rewritten)",
            )
        for checkpoint, is_witnessed in expected.get(seq, ()):
            if checkpoint.head_hash != row["hash"]:
                raise _Failure(
                    seq,
                    f"the {_describe(checkpoint, is_witnessed)} vouches for a different head "
                    "(the chain was rewritten or an older copy was restored)",
                )
        prev_seq, prev_hash = seq, str(row["hash"])
        counters["events"] += 1
        counters["last"], counters["head"] = seq, prev_hash


def _start_of_chain(first_seq: int, anchors: dict[int, Checkpoint]) -> str:
    if first_seq == 1:
        return GENESIS
    anchor = anchors.get(first_seq - 1)
    if anchor is None:
        below = [s for s in anchors if s < first_seq]
        missing = max(below) + 1 if below else 1
        raise _Failure(
            missing,
            f"events {missing}..{first_seq - 1} are missing and no signed anchor checkpoint "
            "covers them (removed without a retention purge)",
        )
    return anchor.head_hash


def _check_ends(
    every: list[tuple[Checkpoint, bool]], anchors: dict[int, Checkpoint], counters: dict[str, Any]
) -> None:
    last, first = counters["last"], counters["first"]
    for checkpoint, is_witnessed in sorted(every, key=lambda item: -item[0].seq):
        if last is None or checkpoint.seq > last:
            ends = f"ends at seq {last}" if last is not None else "is empty"
            raise _Failure(
                (last or 0) + 1,
                f"the chain {ends} but the {_describe(checkpoint, is_witnessed)} vouches for "
                "more: events were removed from the end or an older copy was restored",
            )
        anchor = anchors.get(checkpoint.seq)
        # Purged: only the anchor's own head is left to compare with.
        purged = first is not None and checkpoint.seq < first and anchor is not None
        if purged and anchor is not None and checkpoint.head_hash != anchor.head_hash:
            raise _Failure(
                checkpoint.seq,
                f"the {_describe(checkpoint, is_witnessed)} disagrees with the signed "
                "anchor of the purge at the same seq",
            )


def witness_file(setting: str) -> Path | None:
    """The first witness file the `audit_witness` setting names, if any (not syslog)."""
    files = witness_files(setting)
    return files[0] if files else None


def verify_and_record(
    audit: AuditLog,
    *,
    witness_setting: str,
    extra: Sequence[Checkpoint] = (),
    key: VerifyKey | None = None,
    actor: str,
    role: str | None = None,
    source: str | None = None,
    request_id: str | None = None,
) -> VerifyReport:
    """Verify against the stored checkpoints, the witness file and `extra`; record the result.

    The `audit.verified` event is written after the check, so it is not part of what was
    checked; its outcome and details say what the verifier found.
    """
    witnessed = list(extra)
    for path in witness_files(witness_setting):
        if path.exists():
            witnessed += read_checkpoints(path)
    report = verify(audit.engine, key=key or audit.verify_key, witnessed=witnessed)
    details: dict[str, Scalar] = {
        "events": report.events,
        "last_seq": report.last_seq,
        "checkpoints": report.checkpoints,
        "witnessed": report.witnessed,
        "unvouched": report.unvouched,
    }
    if not report.ok:
        details["bad_seq"] = report.bad_seq
        details["reason"] = (report.reason or "")[:200]
    audit.append_sync(
        AuditVerified(
            actor=actor,
            role=role,
            source=source,
            request_id=request_id,
            outcome="ok" if report.ok else "failed",
            details=details,
        ).record()
    )
    return report


# -- start-up integrity: the triggers are there and the tail verifies ---------------------------

SQLITE_TRIGGERS = frozenset(
    {
        "audit_events_no_update",
        "audit_events_no_delete",
        "audit_checkpoints_no_update",
        "audit_checkpoints_no_delete",
    }
)
POSTGRES_TRIGGERS = frozenset(
    {
        "audit_events_append_only",
        "audit_events_no_truncate",
        "audit_checkpoints_append_only",
        "audit_checkpoints_no_truncate",
    }
)


@dataclass
class Integrity:
    """Whether the trail can be trusted right now: `ok`, or `failed: <reason>`. Read by
    `/readyz`; set at start-up and by the audit maintenance loop."""

    status: str = "unchecked"

    @property
    def ok(self) -> bool:
        """True once a check passed and none failed since."""
        return self.status == "ok"


def missing_triggers(engine: Engine) -> list[str]:
    """The append-only triggers of the audit tables that are missing (or disabled)."""
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            rows = connection.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'trigger'"
            )
            present = {str(row[0]) for row in rows}
            return sorted(SQLITE_TRIGGERS - present)
        rows = connection.exec_driver_sql(
            "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgenabled <> 'D' "
            "AND tgrelid IN ('audit_events'::regclass, 'audit_checkpoints'::regclass)"
        )
        present = {str(row[0]) for row in rows}
        return sorted(POSTGRES_TRIGGERS - present)


def verify_tail(
    engine: Engine, *, key: VerifyKey | None, witnessed: Sequence[Checkpoint] = ()
) -> VerifyReport:
    """Verify the chain from the last checkpoint (stored or witnessed) to the head: cheap enough
    for every start, and what a cut or rewritten tail breaks. The full check is `verify`."""
    counters: dict[str, Any] = {"events": 0, "first": None, "last": None, "head": None}
    with engine.connect() as connection:
        # Only the newest stored checkpoint matters here (there is one a minute: reading and
        # checking all of them would grow with the trail's age).
        newest = checkpoints.latest(connection)
        stored = [newest] if newest is not None else []
        newest_witnessed = max(witnessed, key=lambda c: c.seq, default=None)
        witnessed = [newest_witnessed] if newest_witnessed is not None else []
        try:
            _check_signatures(stored, key, witnessed=False)
            _check_signatures(witnessed, key, witnessed=True)
            every = [(c, False) for c in stored] + [(c, True) for c in witnessed]
            if not every:
                return verify(engine, key=key, witnessed=witnessed)
            start = max(c.seq for c, _ in every)
            anchor_rows = connection.execute(
                select(checkpoints.CHECKPOINTS).where(
                    checkpoints.CHECKPOINTS.c.kind == "anchor",
                    checkpoints.CHECKPOINTS.c.seq == start,
                )
            )
            stored += [Checkpoint.from_row(row) for row in anchor_rows]
            expected: dict[int, list[tuple[Checkpoint, bool]]] = {}
            for checkpoint, is_witnessed in every:
                if checkpoint.seq >= start:
                    expected.setdefault(checkpoint.seq, []).append((checkpoint, is_witnessed))
            anchors = {c.seq: c for c in stored if c.kind == "anchor"}
            rows: Any = connection.execute(
                select(EVENTS_TABLE).where(EVENTS_TABLE.c.seq >= start).order_by(EVENTS_TABLE.c.seq)
            ).mappings()
            prev_seq: int | None = None
            prev_hash = ""
            for row in rows:
                seq = int(row["seq"])
                if prev_seq is None:
                    counters["first"] = seq
                    if seq != start:
                        anchor = anchors.get(start)
                        if seq != start + 1 or anchor is None:
                            raise _Failure(start, f"the checkpointed event seq {start} is missing")
                        prev_hash = anchor.head_hash
                    else:
                        prev_hash = str(row["prev_hash"])
                elif seq != prev_seq + 1:
                    raise _Failure(prev_seq + 1, f"event seq {prev_seq + 1} is missing")
                if row_hash(row) != row["hash"]:
                    raise _Failure(seq, "the event's contents do not match its hash")
                if row["prev_hash"] != prev_hash:
                    raise _Failure(seq, "prev_hash does not match the event before it")
                for checkpoint, is_witnessed in expected.get(seq, ()):
                    if checkpoint.head_hash != row["hash"]:
                        raise _Failure(
                            seq,
                            f"the {_describe(checkpoint, is_witnessed)} vouches for a different "
                            "head (the chain was rewritten or an older copy was restored)",
                        )
                prev_seq, prev_hash = seq, str(row["hash"])
                counters["events"] += 1
                counters["last"], counters["head"] = seq, prev_hash
            if prev_seq is None and start not in anchors:
                raise _Failure(
                    start,
                    f"the chain ends before seq {start}, which a checkpoint vouches for: events "
                    "were removed from the end or an older copy was restored",
                )
        except _Failure as failure:
            return _report(counters, stored, witnessed, ok=False, failure=failure)
    return _report(counters, stored, witnessed, ok=True, failure=None)


def check_integrity(audit: AuditLog, *, witness_setting: str) -> str:
    """`ok`, or `failed: <reason>`: the append-only triggers exist and the chain verifies from
    its last checkpoint against the stored and witnessed checkpoints."""
    missing = missing_triggers(audit.engine)
    if missing:
        return f"failed: append-only triggers missing: {', '.join(missing)}"
    witnessed: list[Checkpoint] = []
    for path in witness_files(witness_setting):
        if path.exists():
            try:
                witnessed += last_checkpoints(path)
            except (OSError, ValueError) as exc:
                return f"failed: the witness file cannot be read ({type(exc).__name__})"
    report = verify_tail(audit.engine, key=audit.verify_key, witnessed=witnessed)
    if not report.ok:
        return f"failed: the chain does not verify at seq {report.bad_seq}: {report.reason}"
    return "ok"
