"""Signed checkpoints: `{seq, head_hash, time, kind}` signed with the appliance's Ed25519 key.

A checkpoint says "the chain had this head at this sequence number". Kept in the database and,
when configured, copied to an external witness; a database restored from an older copy (or cut
short) no longer reaches a checkpoint the witness holds, and the verifier says so.

Kinds: `periodic` (every N events or T minutes), `anchor` (written by a retention purge: the head
of the purged prefix, which the first remaining event links to), `manual` (on request).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select

from appliance.audit.chain import canonical_json, canonical_time
from appliance.audit.keys import SigningKey, VerifyKey
from appliance.db.models import AuditCheckpoint

CHECKPOINTS = AuditCheckpoint.__table__  # type: ignore[attr-defined]
KINDS = ("periodic", "anchor", "manual")


@dataclass(frozen=True)
class Checkpoint:
    """One signed checkpoint, as stored, witnessed and exported."""

    seq: int
    head_hash: str
    time: str
    kind: str
    key_id: str
    signature: str

    def signed_bytes(self) -> bytes:
        """What the signature covers: the canonical JSON of seq, head hash, time and kind."""
        return signed_payload(self.seq, self.head_hash, self.time, self.kind)

    def verify(self, key: VerifyKey) -> bool:
        """Whether the signature is `key`'s over this checkpoint's fields."""
        return self.key_id == key.key_id and key.verify(self.signature, self.signed_bytes())

    def to_json(self) -> str:
        """One line of a witness file."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        """Parse a checkpoint from its JSON object; `ValueError` names a missing field."""
        try:
            return cls(
                seq=int(data["seq"]),
                head_hash=str(data["head_hash"]),
                time=str(data["time"]),
                kind=str(data["kind"]),
                key_id=str(data["key_id"]),
                signature=str(data["signature"]),
            )
        except KeyError as exc:
            raise ValueError(f"checkpoint without field {exc}") from exc

    @classmethod
    def from_row(cls, row: Any) -> Checkpoint:
        """A checkpoint read from `audit_checkpoints`."""
        return cls(
            seq=int(row.seq),
            head_hash=row.head_hash,
            time=canonical_time(row.time),
            kind=row.kind,
            key_id=row.key_id,
            signature=row.signature,
        )


def signed_payload(seq: int, head_hash: str, time: str, kind: str) -> bytes:
    """The bytes a checkpoint signature covers."""
    return canonical_json({"v": 1, "seq": seq, "head_hash": head_hash, "time": time, "kind": kind})


def sign(key: SigningKey, *, seq: int, head_hash: str, kind: str) -> Checkpoint:
    """A new checkpoint of the head `(seq, head_hash)`, signed now."""
    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind '{kind}'")
    time = canonical_time(datetime.now(UTC))
    signature = key.sign(signed_payload(seq, head_hash, time, kind))
    return Checkpoint(seq, head_hash, time, kind, key.verify_key.key_id, signature)


def insert(connection: Connection, checkpoint: Checkpoint) -> None:
    """Store a checkpoint (inside the caller's transaction)."""
    connection.execute(
        CHECKPOINTS.insert().values(
            seq=checkpoint.seq,
            head_hash=checkpoint.head_hash,
            time=datetime.strptime(checkpoint.time, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC),
            kind=checkpoint.kind,
            key_id=checkpoint.key_id,
            signature=checkpoint.signature,
        )
    )


def latest(connection: Connection, *, kind: str | None = None) -> Checkpoint | None:
    """The checkpoint with the highest sequence number (of `kind`, if given)."""
    statement = select(CHECKPOINTS).order_by(CHECKPOINTS.c.seq.desc(), CHECKPOINTS.c.id.desc())
    if kind is not None:
        statement = statement.where(CHECKPOINTS.c.kind == kind)
    row = connection.execute(statement.limit(1)).first()
    return Checkpoint.from_row(row) if row is not None else None


def all_checkpoints(connection: Connection) -> list[Checkpoint]:
    """Every stored checkpoint, oldest first."""
    statement = select(CHECKPOINTS).order_by(CHECKPOINTS.c.id)
    return [Checkpoint.from_row(row) for row in connection.execute(statement)]
