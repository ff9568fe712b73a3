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
from appliance.audit.witness import read_checkpoints


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

    def to_dict(self) -> dict[str, Any]:
        """The report as the API and `appliance audit verify --json` show it."""
        return asdict(self)

    def summary(self) -> str:
        """One line for people."""
        if self.ok:
            span = f"seq {self.first_seq}..{self.last_seq}" if self.events else "no events"
            return (
                f"OK: {self.events} events ({span}), {self.checkpoints} checkpoints, "
                f"{self.witnessed} witnessed checkpoints verified"
            )
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
    return VerifyReport(
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
    """The witness file the `audit_witness` setting names, if it is a file (not syslog)."""
    if not setting or setting == "syslog" or setting.startswith("syslog:"):
        return None
    return Path(setting)


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
    path = witness_file(witness_setting)
    if path is not None and path.exists():
        witnessed += read_checkpoints(path)
    report = verify(audit.engine, key=key or audit.verify_key, witnessed=witnessed)
    details: dict[str, Scalar] = {
        "events": report.events,
        "last_seq": report.last_seq,
        "checkpoints": report.checkpoints,
        "witnessed": report.witnessed,
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
