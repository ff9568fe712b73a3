"""`PolicyService`: every policy change is stored and recorded by one typed event whose target
and details have one shape; a refused change records nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from appliance.audit.store import AuditLog
from appliance.audit.verify import verify
from appliance.config import PROJECT_ROOT
from appliance.db.engine import make_engine, upgrade
from appliance.db.models import AuditEvent
from appliance.errors import InvalidInput, PolicyError, PolicyNotFound
from appliance.policies.service import ChangedBy, PolicyService
from appliance.policies.store import PolicyStore

ADMIN = ChangedBy("user:ana", "admin", "10.0.0.7")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    upgrade(database_url)
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def service(engine: Engine) -> PolicyService:
    store = PolicyStore(engine, default="default")
    store.import_directory(PROJECT_ROOT / "policies")
    return PolicyService(store, AuditLog(engine))


def events(engine: Engine) -> list[AuditEvent]:
    with Session(engine) as session:
        return list(session.exec(select(AuditEvent).order_by(AuditEvent.seq)))  # type: ignore[arg-type]


def strict_edit(score: str) -> str:
    source = (PROJECT_ROOT / "policies" / "strict.yaml").read_text()
    assert "min_score: 0.6\n" in source
    return source.replace("min_score: 0.6\n", f"min_score: {score}\n")


def test_versions_activation_and_rollback_are_recorded_with_name_at_version(
    service: PolicyService, engine: Engine
) -> None:
    first = f"strict@{service.store.get('strict').version}"
    created = service.create_version_sync("strict", strict_edit("0.65"), by=ADMIN, comment="c")
    second = f"strict@{created.version}"
    service.activate_sync("strict", str(created.number), by=ADMIN)
    back = service.rollback_sync("strict", by=ADMIN)
    assert back.ref == first

    rows = [(e.action, e.target, e.policy, e.details) for e in events(engine)]
    assert rows == [
        ("policy.created", second, second, {"number": 2}),
        ("policy.activated", second, second, {"number": 2, "previous": first}),
        ("policy.rolled_back", first, first, {"number": 1, "previous": second}),
    ]
    for event in events(engine):
        assert (event.actor, event.role, event.source, event.outcome) == (
            "user:ana",
            "admin",
            "10.0.0.7",
            "ok",
        )
    assert verify(engine, key=None).ok


def test_assignments_name_the_assignee_and_the_assigned_version(
    service: PolicyService, engine: Engine
) -> None:
    strict = service.store.get("strict").ref
    service.assign_sync("key", "k1", "strict", by=ADMIN, allowed=["legal", "hr", "legal"])
    service.assign_sync("team", "litigation", "strict", by=ADMIN)
    service.assign_sync("task", "summarize", None, by=ADMIN)
    rows = [(e.action, e.target, e.policy, e.details) for e in events(engine)]
    assert rows == [
        (
            "policy.assigned",
            "apikey:k1",
            strict,
            {"kind": "key", "assigned_to": "k1", "allowed": "hr,legal"},
        ),
        (
            "policy.assigned",
            "team:litigation",
            strict,
            {"kind": "team", "assigned_to": "litigation"},
        ),
        ("policy.unassigned", "task:summarize", None, {"kind": "task", "assigned_to": "summarize"}),
    ]
    assert service.store.resolve(key="k1").ref == strict


def test_a_refused_change_records_nothing(service: PolicyService, engine: Engine) -> None:
    with pytest.raises(PolicyError):
        service.create_version_sync("strict", "name: strict\nentities: 3\n", by=ADMIN)
    with pytest.raises(InvalidInput):
        service.create_version_sync("hr", strict_edit("0.7"), by=ADMIN)  # names another policy
    with pytest.raises(PolicyNotFound):
        service.activate_sync("strict", "99", by=ADMIN)
    with pytest.raises(InvalidInput):
        service.rollback_sync("strict", by=ADMIN)  # nothing earlier to roll back to
    with pytest.raises(PolicyNotFound):
        service.assign_sync("team", "litigation", "nope", by=ADMIN)
    assert events(engine) == []


async def test_the_async_twins_record_the_same(service: PolicyService, engine: Engine) -> None:
    created = await service.create_version(
        "strict", strict_edit("0.7"), by=ChangedBy("cli:ops", "admin")
    )
    await service.activate("strict", created.version, by=ChangedBy("cli:ops", "admin"))
    [saved, activated] = events(engine)
    assert (saved.action, saved.actor, saved.source) == ("policy.created", "cli:ops", None)
    assert activated.target == f"strict@{created.version}"
