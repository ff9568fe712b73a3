"""What the policy store remembers between requests is forgotten at once when a version, an
activation or an assignment changes, here or through another replica (a second store on a
second engine), or by hand in the database."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert

from appliance.audit.store import AuditLog
from appliance.config import PROJECT_ROOT
from appliance.db.engine import make_engine, upgrade
from appliance.db.models import PolicyAssignment
from appliance.policies.resolve import resolve_policy
from appliance.policies.service import ChangedBy, PolicyService
from appliance.policies.store import PolicyStore

BY = ChangedBy("cli:test")


@pytest.fixture
def engines(database_url: str, tmp_path: Path) -> Iterator[tuple[Engine, Engine]]:
    upgrade(database_url)
    first, second = make_engine(database_url), make_engine(database_url)
    packs = tmp_path / "policies"
    packs.mkdir()
    for path in (PROJECT_ROOT / "policies").glob("*.yaml"):
        shutil.copy(path, packs / path.name)
    PolicyStore(first, default="default").import_directory(packs)
    yield first, second
    first.dispose()
    second.dispose()


def _floor(store: PolicyStore, **caller: str | None) -> str:
    values: dict[str, str | None] = {"key_id": None, "key_policy": None, "team": None}
    return resolve_policy(store, **(values | caller)).policy.name  # type: ignore[arg-type]


def test_a_resolved_policy_is_read_from_the_database_once(
    engines: tuple[Engine, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PolicyStore(engines[0], default="default")
    reads: list[str] = []
    original = store._resolve
    monkeypatch.setattr(store, "_resolve", lambda **kw: reads.append("db") or original(**kw))
    for _ in range(3):
        assert _floor(store, team="legal") == "default"
    assert reads == ["db"]


def test_an_assignment_made_through_another_replica_holds_on_the_next_request(
    engines: tuple[Engine, Engine],
) -> None:
    here = PolicyStore(engines[0], default="default")
    there = PolicyService(PolicyStore(engines[1], default="default"), AuditLog(engines[1]))
    assert _floor(here, team="legal") == "default"
    there.assign_sync("team", "legal", "legal", by=BY)
    assert _floor(here, team="legal") == "legal"
    there.assign_sync("team", "legal", None, by=BY)
    assert _floor(here, team="legal") == "default"


def test_an_activation_elsewhere_is_the_version_the_next_request_runs_under(
    engines: tuple[Engine, Engine],
) -> None:
    here = PolicyStore(engines[0], default="default")
    there = PolicyService(PolicyStore(engines[1], default="default"), AuditLog(engines[1]))
    before = here.get("strict")
    text = (PROJECT_ROOT / "policies" / "strict.yaml").read_text()
    changed = text.replace("description:", "description: Changed.", 1)
    created = there.create_version_sync("strict", changed, by=BY)
    there.activate_sync("strict", str(created.number), by=BY)
    assert here.get("strict").version == created.version != before.version
    floor = resolve_policy(here, key_id=None, key_policy="strict", team=None)
    assert floor.version == created.version


def test_an_assignment_written_by_hand_is_seen(engines: tuple[Engine, Engine]) -> None:
    here = PolicyStore(engines[0], default="default")
    assert _floor(here, key_id="k1") == "default"
    with engines[1].begin() as connection:
        connection.execute(
            insert(PolicyAssignment.__table__).values(  # type: ignore[attr-defined]
                kind="key", target="k1", policy="hr", allowed=""
            )
        )
    assert _floor(here, key_id="k1") == "hr"
