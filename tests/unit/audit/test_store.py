"""Appending: one linear chain under concurrency, append-only tables, checkpoints, validation."""

from __future__ import annotations

import itertools
import json
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import DBAPIError

from appliance.audit.checkpoints import CHECKPOINTS
from appliance.audit.keys import SigningKey
from appliance.audit.store import EVENTS_TABLE, AuditLog, AuditRecord
from appliance.audit.verify import verify
from appliance.audit.witness import FileWitness, SyslogWitness, read_checkpoints
from appliance.config import PROJECT_ROOT
from tests.unit.audit.conftest import record


def seqs_and_links(engine: Engine) -> list[tuple[int, str, str]]:
    with engine.connect() as connection:
        found = connection.execute(
            select(EVENTS_TABLE.c.seq, EVENTS_TABLE.c.prev_hash, EVENTS_TABLE.c.hash).order_by(
                EVENTS_TABLE.c.seq
            )
        )
        return [(int(s), p, h) for s, p, h in found]


def assert_one_linear_chain(engine: Engine, count: int) -> None:
    chain = seqs_and_links(engine)
    assert [s for s, _, _ in chain] == list(range(1, count + 1))  # no gap
    for (_, _, previous), (_, prev_hash, _) in itertools.pairwise(chain):
        assert prev_hash == previous  # no fork
    assert len({h for _, _, h in chain}) == count


def test_the_first_event_links_to_genesis_and_the_id_is_returned(
    make_log: Callable[..., AuditLog], engine: Engine
) -> None:
    log = make_log()
    event_id = log.append_sync(record(1))

    recent = log.recent()

    assert [r.id for r in recent] == [event_id]
    assert recent[0].prev_hash == "0" * 64
    assert recent[0].action == "completion.redacted"


async def test_async_append_commits_before_returning(
    make_log: Callable[..., AuditLog], engine: Engine
) -> None:
    log = make_log()
    event_id = await log.append(
        AuditRecord(actor="local", action="chat.completion", outcome="allowed")
    )

    with engine.connect() as connection:
        stored = connection.execute(
            select(EVENTS_TABLE.c.action).where(EVENTS_TABLE.c.id == event_id)
        ).scalar_one()
    assert stored == "completion.allowed"


def test_sixteen_threads_make_one_chain_with_no_fork_or_gap(
    make_log: Callable[..., AuditLog], engine: Engine, key: SigningKey
) -> None:
    log = make_log(checkpoint_every=25)
    barrier = threading.Barrier(16)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            barrier.wait()
            for i in range(20):
                log.append_sync(record(n * 100 + i))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert_one_linear_chain(engine, 320)
    assert verify(engine, key=key.verify_key).ok


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from appliance.audit.keys import load_or_create
    from appliance.audit.store import AuditLog, AuditRecord
    from appliance.db.engine import make_engine

    url, key, name = sys.argv[1], sys.argv[2], sys.argv[3]
    log = AuditLog(make_engine(url), key=load_or_create(Path(key)), checkpoint_every=7)
    for i in range(40):
        log.append_sync(AuditRecord(actor=name, action="auth.login", outcome="ok"))
    """
)


def test_several_processes_make_one_chain_with_no_fork_or_gap(
    database_url: str, engine: Engine, key: SigningKey, tmp_path: Path
) -> None:
    key_file = tmp_path / "keys" / "audit_signing.pem"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, database_url, str(key_file), f"proc:{n}"],
            cwd=PROJECT_ROOT,
        )
        for n in range(3)
    ]
    codes = [p.wait(timeout=120) for p in processes]

    assert codes == [0, 0, 0]
    assert_one_linear_chain(engine, 120)
    report = verify(engine, key=key.verify_key)
    assert report.ok, report.summary()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET outcome = 'allowed'",
        "DELETE FROM audit_events",
        "UPDATE audit_checkpoints SET seq = 1",
        "DELETE FROM audit_checkpoints",
    ],
)
def test_the_database_refuses_to_change_or_delete_audit_rows(
    make_log: Callable[..., AuditLog], engine: Engine, statement: str
) -> None:
    log = make_log(checkpoint_every=2)
    log.append_many_sync([record(n) for n in range(4)])

    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
        connection.execute(text(statement))

    assert len(seqs_and_links(engine)) == 4


def test_the_database_refuses_truncate_on_postgresql(
    make_log: Callable[..., AuditLog], engine: Engine
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no TRUNCATE (its DELETE is covered above)")
    make_log().append_sync(record(1))

    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
        connection.execute(text("TRUNCATE audit_events"))


def test_a_checkpoint_is_signed_every_n_events_and_witnessed(
    make_log: Callable[..., AuditLog], engine: Engine, key: SigningKey, tmp_path: Path
) -> None:
    witness = tmp_path / "witness" / "checkpoints.jsonl"
    log = make_log(checkpoint_every=5, witness=FileWitness(witness))
    for n in range(12):
        log.append_sync(record(n))

    with engine.connect() as connection:
        stored = [int(s) for s in connection.execute(select(CHECKPOINTS.c.seq)).scalars()]
    witnessed = read_checkpoints(witness)

    assert stored == [5, 10]
    assert [c.seq for c in witnessed] == [5, 10]
    assert all(c.verify(key.verify_key) for c in witnessed)
    assert oct(witness.stat().st_mode & 0o777) == "0o600"


def test_a_checkpoint_is_written_when_the_interval_passed_with_new_events(
    make_log: Callable[..., AuditLog], engine: Engine
) -> None:
    log = make_log(checkpoint_every=1000, checkpoint_minutes=1 / 600)  # 0.1 s
    assert log.checkpoint_if_due_sync() is None  # no events, nothing to vouch for
    log.append_sync(record(1))

    first = log.checkpoint_if_due_sync()
    assert first is not None and first.seq == 1
    assert log.checkpoint_if_due_sync() is None  # nothing new since

    log.append_sync(record(2))
    assert log.checkpoint_if_due_sync() is None  # too soon
    last_time = datetime.strptime(first.time, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    while datetime.now(UTC) - last_time < timedelta(seconds=0.1):
        pass
    second = log.checkpoint_if_due_sync()
    assert second is not None and second.seq == 2


def test_checkpoints_can_go_to_syslog(
    make_log: Callable[..., AuditLog], engine: Engine, tmp_path: Path
) -> None:
    address = str(tmp_path / "log.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(address)
        server.settimeout(5)
        log = make_log(checkpoint_every=2, witness=SyslogWitness(address))
        log.append_many_sync([record(1), record(2)])

        datagram = server.recv(4096).decode()

    assert datagram.startswith("<134>appliance-audit-checkpoint: ")
    capture = tmp_path / "syslog.txt"
    capture.write_text(f"Nov 28 10:00:00 box {datagram[5:]}\n")
    assert [c.seq for c in read_checkpoints(capture)] == [2]
    assert json.loads(datagram.split(": ", 1)[1])["seq"] == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"action": "auth.logni"}, "unknown audit event"),
        ({"actor": ""}, "'actor'"),
        ({"outcome": ""}, "'outcome'"),
        ({"entity_counts": {"PERSON": -1}}, "entity_counts.PERSON"),
        ({"entity_counts": {"PERSON": "two"}}, "entity_counts.PERSON"),
        ({"details": {"prompt": "x" * 500}}, "details.prompt"),
        ({"details": {"score": 0.5}}, "details.score"),
        ({"request_id": "r" * 65}, "'request_id'"),
    ],
)
def test_a_bad_record_is_refused_before_anything_is_written(
    make_log: Callable[..., AuditLog], engine: Engine, overrides: dict[str, object], message: str
) -> None:
    log = make_log()

    with pytest.raises(ValueError, match=message):
        log.append_sync(record(1, **overrides))

    assert seqs_and_links(engine) == []


def test_an_answer_from_an_escalated_route_is_stored_as_completion_escalated(
    make_log: Callable[..., AuditLog],
) -> None:
    log = make_log()
    log.append_sync(
        AuditRecord(
            actor="user:1",
            action="chat.completion",
            outcome="redacted",
            status_code=200,
            tier="large",
            details={"escalations": 1, "escalation_reason": "schema"},
        )
    )

    stored = log.recent(1)[0]
    assert (stored.action, stored.outcome, stored.tier) == (
        "completion.escalated",
        "redacted",
        "large",
    )
