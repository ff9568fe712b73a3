"""The canonical encoding and the row hash."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from appliance.audit.chain import (
    GENESIS,
    HASHED_FIELDS,
    canonical_json,
    canonical_time,
    row_hash,
)


def a_row() -> dict[str, Any]:
    return {
        "seq": 1,
        "id": "a" * 32,
        "time": datetime(2026, 11, 28, 10, 0, 0, 123456, tzinfo=UTC),
        "actor": "user:1",
        "role": "staff",
        "source": "127.0.0.1",
        "action": "completion.allowed",
        "target": None,
        "outcome": "allowed",
        "policy": "default@1",
        "entity_counts": {"PERSON": 1, "EMAIL_ADDRESS": 2},
        "model": "smollm2-135m",
        "tier": "small",
        "request_id": "r",
        "status_code": 200,
        "details": {},
        "prev_hash": GENESIS,
    }


def test_canonical_json_sorts_keys_and_has_no_whitespace() -> None:
    assert (
        canonical_json({"b": 1, "a": [True, None, "é"]}) == '{"a":[true,null,"é"],"b":1}'.encode()
    )


def test_floats_have_no_canonical_form() -> None:
    with pytest.raises(TypeError, match="float"):
        canonical_json({"x": 0.1})


def test_times_are_one_text_whatever_the_zone_or_naivety() -> None:
    aware = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    elsewhere = aware.astimezone(timezone(timedelta(hours=5)))
    naive = aware.replace(tzinfo=None)  # SQLite hands back UTC without a zone
    assert canonical_time(aware) == canonical_time(elsewhere) == canonical_time(naive)
    assert canonical_time(aware) == "2026-01-02T03:04:05.000006Z"


def test_key_order_of_counts_does_not_change_the_hash() -> None:
    row = a_row()
    reordered = a_row() | {"entity_counts": {"EMAIL_ADDRESS": 2, "PERSON": 1}}
    assert row_hash(row) == row_hash(reordered)


@pytest.mark.parametrize("field", HASHED_FIELDS)
def test_every_field_is_covered_by_the_hash(field: str) -> None:
    row = a_row()
    changed = dict(row)
    value = row[field]
    if isinstance(value, datetime):
        changed[field] = value + timedelta(microseconds=1)
    elif isinstance(value, dict):
        changed[field] = {**value, "X": 1}
    elif isinstance(value, int):
        changed[field] = value + 1
    else:
        changed[field] = (value or "") + "x"
    assert row_hash(changed) != row_hash(row)


def test_the_hash_is_sha256_hex() -> None:
    digest = row_hash(a_row())
    assert len(digest) == 64 and int(digest, 16) >= 0
