"""The verifier, attacked: every change to the trail must be reported at the right place.

Each test builds a real chain (real appends, real signed checkpoints) on SQLite and PostgreSQL,
then changes it the way someone with direct database access could: the append-only triggers
are removed first, since they only stop the application and honest mistakes.
"""

from __future__ import annotations

import random
import sqlite3
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, select, text, update
from sqlalchemy.engine import make_url

from appliance.audit.chain import GENESIS, HASHED_FIELDS, row_hash
from appliance.audit.checkpoints import CHECKPOINTS
from appliance.audit.keys import SigningKey, load_or_create
from appliance.audit.store import EVENTS_TABLE, AuditLog
from appliance.audit.verify import VerifyReport, verify
from appliance.audit.witness import FileWitness, read_checkpoints
from appliance.db.engine import make_engine
from tests.unit.audit.conftest import drop_guards, record

CHAIN = 40
EVERY = 10


def build(log: AuditLog, count: int = CHAIN, *, start: int = 0, batch: int = 5) -> None:
    for first in range(start, start + count, batch):
        log.append_many_sync([record(n) for n in range(first, min(first + batch, start + count))])


def check(engine: Engine, key: SigningKey, witness: Path | None = None) -> VerifyReport:
    witnessed = read_checkpoints(witness) if witness is not None else []
    return verify(engine, key=key.verify_key, witnessed=witnessed)


def rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        found = connection.execute(select(EVENTS_TABLE).order_by(EVENTS_TABLE.c.seq))
        return [dict(row) for row in found.mappings()]


@pytest.fixture
def chain(make_log: Callable[..., AuditLog], engine: Engine) -> AuditLog:
    log = make_log(checkpoint_every=EVERY)
    build(log)
    assert check(engine, log.key).ok  # type: ignore[arg-type]
    drop_guards(engine)
    return log


def test_a_clean_chain_of_10000_events_verifies(
    make_log: Callable[..., AuditLog], engine: Engine, key: SigningKey
) -> None:
    log = make_log(checkpoint_every=1000)
    build(log, 10_000, batch=500)

    report = check(engine, key)

    assert report.ok, report.summary()
    assert (report.events, report.first_seq, report.last_seq) == (10_000, 1, 10_000)
    assert report.checkpoints == 10
    assert report.head_hash == log.head().hash


def _changed(field: str, value: Any, rng: random.Random) -> Any:
    if field == "seq":
        return value + 1000
    if field == "time":
        return value + timedelta(microseconds=1)
    if field in ("hash", "prev_hash"):
        return "".join(rng.choice("0123456789abcdef") for _ in range(64))
    if field == "entity_counts":
        return {**value, "US_SSN": 1}
    if field == "details":
        return {"note": "added"}
    if field == "status_code":
        return 500 if value != 500 else 200
    if field == "id":
        return uuid.uuid4().hex
    return "forged" if value != "forged" else "forged2"


@pytest.mark.parametrize("field", [*HASHED_FIELDS, "hash"])
def test_changing_any_field_of_an_event_is_detected_at_that_event(
    chain: AuditLog, engine: Engine, key: SigningKey, field: str
) -> None:
    rng = random.Random(field)
    for _ in range(3):
        seq = rng.randint(1, CHAIN)
        original = next(r for r in rows(engine) if r["seq"] == seq)
        with engine.begin() as connection:
            connection.execute(
                update(EVENTS_TABLE)
                .where(EVENTS_TABLE.c.seq == seq)
                .values({field: _changed(field, original[field], rng)})
            )

        report = check(engine, key)

        assert not report.ok
        assert report.bad_seq == seq, report.reason
        with engine.begin() as connection:  # put it back for the next round
            connection.execute(delete(EVENTS_TABLE).where(EVENTS_TABLE.c.id == original["id"]))
            connection.execute(
                delete(EVENTS_TABLE).where(EVENTS_TABLE.c.seq.in_([seq, seq + 1000]))
            )
            connection.execute(EVENTS_TABLE.insert().values(**original))
        assert check(engine, key).ok


def test_a_deleted_event_is_detected(chain: AuditLog, engine: Engine, key: SigningKey) -> None:
    with engine.begin() as connection:
        connection.execute(delete(EVENTS_TABLE).where(EVENTS_TABLE.c.seq == 17))

    report = check(engine, key)

    assert (report.ok, report.bad_seq) == (False, 17)
    assert "missing" in (report.reason or "")


def test_deleting_the_oldest_events_without_a_purge_is_detected(
    chain: AuditLog, engine: Engine, key: SigningKey
) -> None:
    with engine.begin() as connection:
        connection.execute(delete(EVENTS_TABLE).where(EVENTS_TABLE.c.seq <= 3))

    report = check(engine, key)

    assert (report.ok, report.bad_seq) == (False, 1)
    assert "anchor" in (report.reason or "")


def _shift_in(engine: Engine, at: int, *, rehash: bool) -> None:
    """Insert a forged event at `at`, moving the later ones up by one."""
    existing = rows(engine)
    forged = dict(existing[at - 1]) | {"id": uuid.uuid4().hex, "actor": "user:forged"}
    later = [dict(r) | {"seq": r["seq"] + 1} for r in existing[at - 1 :]]
    new_rows = [forged, *later]
    if rehash:  # a careful forger recomputes every hash after the insertion
        prev = existing[at - 2]["hash"] if at > 1 else GENESIS
        for row in new_rows:
            row["prev_hash"] = prev
            row["hash"] = prev = row_hash(row)
    with engine.begin() as connection:
        connection.execute(delete(EVENTS_TABLE).where(EVENTS_TABLE.c.seq >= at))
        connection.execute(EVENTS_TABLE.insert(), new_rows)


def test_an_inserted_event_is_detected(chain: AuditLog, engine: Engine, key: SigningKey) -> None:
    _shift_in(engine, 12, rehash=False)

    report = check(engine, key)

    assert (report.ok, report.bad_seq) == (False, 12)


def test_an_inserted_event_with_every_later_hash_recomputed_is_caught_by_a_checkpoint(
    chain: AuditLog, engine: Engine, key: SigningKey
) -> None:
    _shift_in(engine, 12, rehash=True)

    report = check(engine, key)

    assert not report.ok
    assert report.bad_seq == 20  # the first signed checkpoint after the insertion
    assert "checkpoint" in (report.reason or "")


def test_a_rewritten_chain_from_the_first_event_is_caught_by_a_checkpoint(
    chain: AuditLog, engine: Engine, key: SigningKey
) -> None:
    existing = rows(engine)
    existing[0]["outcome"] = "blocked"
    prev = GENESIS
    for row in existing:
        row["prev_hash"] = prev
        row["hash"] = prev = row_hash(row)
    with engine.begin() as connection:
        connection.execute(delete(EVENTS_TABLE))
        connection.execute(EVENTS_TABLE.insert(), existing)

    report = check(engine, key)

    assert (report.ok, report.bad_seq) == (False, EVERY)


def test_reordered_events_are_detected(chain: AuditLog, engine: Engine, key: SigningKey) -> None:
    existing = {r["seq"]: r for r in rows(engine)}
    a, b = dict(existing[21]), dict(existing[22])
    with engine.begin() as connection:
        connection.execute(delete(EVENTS_TABLE).where(EVENTS_TABLE.c.seq.in_([21, 22])))
        connection.execute(EVENTS_TABLE.insert(), [b | {"seq": 21}, a | {"seq": 22}])

    report = check(engine, key)

    assert (report.ok, report.bad_seq) == (False, 21)


def test_a_truncated_end_is_detected_by_a_stored_checkpoint(
    chain: AuditLog, engine: Engine, key: SigningKey
) -> None:
    with engine.begin() as connection:
        connection.execute(delete(EVENTS_TABLE).where(EVENTS_TABLE.c.seq > 35))

    report = check(engine, key)

    assert (report.ok, report.bad_seq) == (False, 36)
    assert "removed from the end" in (report.reason or "")


def test_a_truncated_end_with_its_checkpoints_removed_is_detected_by_the_witness(
    make_log: Callable[..., AuditLog], engine: Engine, key: SigningKey, tmp_path: Path
) -> None:
    witness = tmp_path / "witness.jsonl"
    log = make_log(checkpoint_every=EVERY, witness=FileWitness(witness))
    build(log)
    drop_guards(engine)
    with engine.begin() as connection:
        connection.execute(delete(EVENTS_TABLE).where(EVENTS_TABLE.c.seq > 25))
        connection.execute(delete(CHECKPOINTS).where(CHECKPOINTS.c.seq > 25))
    assert check(engine, key).ok  # the database alone now looks consistent

    report = check(engine, key, witness)

    assert (report.ok, report.bad_seq) == (False, 26)
    assert "witnessed" in (report.reason or "")


@pytest.mark.parametrize(
    "change",
    [
        {"head_hash": "f" * 64},
        {"seq": 11},
        {"time": "2020-01-01 00:00:00"},
        {"kind": "manual"},
        {"signature": "A" * 86 + "=="},
    ],
    ids=["head_hash", "seq", "time", "kind", "signature"],
)
def test_an_altered_checkpoint_or_signature_is_detected(
    chain: AuditLog, engine: Engine, key: SigningKey, change: dict[str, Any]
) -> None:
    if "time" in change:
        with engine.connect() as connection:
            first = connection.execute(select(CHECKPOINTS.c.time).limit(1)).scalar_one()
        change = {"time": first - timedelta(seconds=1)}
    with engine.begin() as connection:
        target = connection.execute(select(CHECKPOINTS.c.id).where(CHECKPOINTS.c.seq == 20))
        connection.execute(
            update(CHECKPOINTS).where(CHECKPOINTS.c.id == target.scalar_one()).values(**change)
        )

    report = check(engine, key)

    assert not report.ok
    assert report.bad_seq == change.get("seq", 20)
    assert "signature" in (report.reason or "")


def test_a_checkpoint_signed_by_another_key_is_detected(
    chain: AuditLog, engine: Engine, tmp_path: Path
) -> None:
    other = load_or_create(tmp_path / "other.pem")

    report = verify(engine, key=other.verify_key)

    assert not report.ok and "not by this appliance's key" in (report.reason or "")


def _copy_database(engine: Engine, tmp_path: Path) -> Engine:
    """A backup of the database as it is now, as an operator would restore it later."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        copy = tmp_path / "backup.db"
        with sqlite3.connect(str(url.database)) as src, sqlite3.connect(copy) as dst:
            src.backup(dst)
        return make_engine(f"sqlite:///{copy}")
    engine.dispose()
    name = f"backup_{uuid.uuid4().hex[:8]}"
    admin = make_engine(url.set(database="postgres").render_as_string(hide_password=False))
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{url.database}"'))
    admin.dispose()
    return make_engine(make_url(url).set(database=name).render_as_string(hide_password=False))


@pytest.mark.parametrize("continued", [False, True], ids=["as_is", "then_written_to"])
def test_restoring_an_older_copy_is_detected_against_the_witness(
    make_log: Callable[..., AuditLog],
    engine: Engine,
    key: SigningKey,
    tmp_path: Path,
    continued: bool,
) -> None:
    witness = tmp_path / "witness.jsonl"
    log = make_log(checkpoint_every=EVERY, witness=FileWitness(witness))
    build(log, 20)
    backup = _copy_database(engine, tmp_path)
    build(log, 20, start=20)  # the trail moves on; checkpoints at 30 and 40 are witnessed
    if continued:  # the restored copy is put back into service and written to
        build(AuditLog(backup, key=key, checkpoint_every=EVERY), 25, start=100)
    assert check(backup, key).ok  # on its own, the old copy is a consistent chain

    report = check(backup, key, witness)

    assert not report.ok
    assert report.bad_seq == (30 if continued else 21), report.reason
    assert "witnessed" in (report.reason or "")
    backup.dispose()


def test_the_witness_accepts_its_own_chain(
    make_log: Callable[..., AuditLog], engine: Engine, key: SigningKey, tmp_path: Path
) -> None:
    witness = tmp_path / "witness.jsonl"
    log = make_log(checkpoint_every=EVERY, witness=FileWitness(witness))
    build(log)
    with witness.open("a") as f:
        f.write('{"seq": 1, "head_ha')  # a torn last line (the process died mid-write)

    report = check(engine, key, witness)

    assert report.ok, report.summary()
    assert report.witnessed == 4
