"""The hash chain: a canonical encoding of a row and the SHA-256 that links it to the previous one.

Each row's `hash` is SHA-256 over the canonical JSON of every other column, including
`prev_hash` (the previous row's `hash`; 64 zeros for the first event ever). Changing any field of
any row, or removing, inserting or reordering rows, breaks a link the verifier recomputes.

Canonical JSON: keys sorted, no insignificant whitespace, UTF-8, no floats (integers, strings,
booleans and null only), times as `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC. The encoding is versioned
(`"v": 1`) so it can evolve without invalidating older rows.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64
"""`prev_hash` of the first event ever written."""

CHAIN_VERSION = 1

HASHED_FIELDS = (
    "seq",
    "id",
    "time",
    "actor",
    "role",
    "source",
    "action",
    "target",
    "outcome",
    "policy",
    "entity_counts",
    "model",
    "tier",
    "request_id",
    "status_code",
    "details",
    "prev_hash",
)
"""Every column of `audit_events` except `hash` itself."""


def canonical_time(value: datetime) -> str:
    """A time in the one text form the chain hashes (naive values are taken as UTC)."""
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return aware.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _check(value: Any, where: str) -> None:
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: keys must be strings")
            _check(item, f"{where}.{key}")
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check(item, f"{where}[{index}]")
        return
    raise TypeError(f"{where}: {type(value).__name__} has no canonical form")


def canonical_json(value: Any) -> bytes:
    """The canonical UTF-8 JSON of `value` (sorted keys, compact, no floats)."""
    _check(value, "value")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def hash_input(row: Mapping[str, Any]) -> dict[str, Any]:
    """The document a row's hash covers: every hashed field, times in canonical form."""
    document: dict[str, Any] = {"v": CHAIN_VERSION}
    for name in HASHED_FIELDS:
        value = row[name]
        if name == "time":
            value = canonical_time(value) if isinstance(value, datetime) else value
        elif name in ("entity_counts", "details"):
            value = dict(value or {})
        document[name] = value
    return document


def row_hash(row: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the row's canonical encoding."""
    return hashlib.sha256(canonical_json(hash_input(row))).hexdigest()
