"""The database-backed policy store on a migrated database: import of the shipped packs,
immutable versions, file-managed versus admin activation, rollback, history, assignment and
resolution (API key → team → task → default)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from appliance.config import PROJECT_ROOT
from appliance.db.engine import alembic_config, make_engine, upgrade
from appliance.db.models import PolicyActivation, PolicyVersion
from appliance.errors import InvalidInput, PolicyError, PolicyNotFound
from appliance.policies.store import PolicyStore

PACKS = ["default", "hr", "legal", "medical", "strict"]


def migrate(url: str) -> None:
    """Migrate to head; if a later migration (not the policies') is broken, to 0002, which
    creates the policy tables."""
    try:
        upgrade(url)
    except Exception:
        command.upgrade(alembic_config(url), "0002")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    migrate(database_url)
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def packs_dir(tmp_path: Path) -> Path:
    """A copy of the shipped packs that a test may edit."""
    target = tmp_path / "policies"
    target.mkdir()
    for path in (PROJECT_ROOT / "policies").glob("*.yaml"):
        shutil.copy(path, target / path.name)
    return target


@pytest.fixture
def store(engine: Engine, packs_dir: Path) -> PolicyStore:
    store = PolicyStore(engine, default="default")
    assert store.import_directory(packs_dir) == PACKS
    return store


def count(engine: Engine, table: type[PolicyVersion] | type[PolicyActivation]) -> int:
    with Session(engine) as session:
        return int(session.execute(select(func.count()).select_from(table)).scalar_one())


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_import_creates_and_activates_version_1_of_every_pack(
    store: PolicyStore, engine: Engine
) -> None:
    assert store.names() == PACKS
    for name in PACKS:
        (info,) = store.history(name)
        assert info.number == 1
        assert info.active
        assert info.author == f"file:{name}.yaml"
        assert info.comment == f"imported from {name}.yaml"
        assert re.fullmatch(r"[0-9a-f]{12}", info.version)
        assert store.get(name).version == info.version
    assert store.get().policy.name == "default"
    assert count(engine, PolicyVersion) == count(engine, PolicyActivation) == len(PACKS)


def test_reimport_of_the_same_content_creates_nothing(
    store: PolicyStore, engine: Engine, packs_dir: Path
) -> None:
    # A comment is not content: the version hash is over the validated policy.
    edit(packs_dir / "hr.yaml", "# HR:", "# Human resources:")
    store.import_directory(packs_dir)
    PolicyStore(engine, default="default").import_directory(packs_dir)
    assert count(engine, PolicyVersion) == count(engine, PolicyActivation) == len(PACKS)


def test_changed_file_becomes_version_2_and_is_active_while_file_managed(
    store: PolicyStore, packs_dir: Path
) -> None:
    edit(packs_dir / "default.yaml", "min_score: 0.4", "min_score: 0.45")
    store.import_directory(packs_dir)
    history = store.history("default")
    assert [(v.number, v.active) for v in history] == [(2, True), (1, False)]
    assert store.get("default").policy.min_score == 0.45
    assert store.get("default").version == history[0].version
    assert [len(store.history(n)) for n in PACKS if n != "default"] == [1, 1, 1, 1]


def test_admin_activation_stops_files_from_activating(store: PolicyStore, packs_dir: Path) -> None:
    edit(packs_dir / "default.yaml", "min_score: 0.4", "min_score: 0.45")
    store.import_directory(packs_dir)
    store.activate("default", "1", by="admin:alice")
    assert store.get("default").policy.min_score == 0.4
    edit(packs_dir / "default.yaml", "min_score: 0.45", "min_score: 0.5")
    store.import_directory(packs_dir)
    history = store.history("default")
    assert [(v.number, v.active) for v in history] == [(3, False), (2, False), (1, True)]
    assert store.get_version("default", "3").policy.min_score == 0.5
    assert store.get("default").policy.min_score == 0.4


@pytest.mark.parametrize("version", ["²", "1²", "٣x", "99999999999", "9" * 5000, "v1"])
def test_a_version_that_is_no_number_or_hash_here_is_not_found(
    store: PolicyStore, version: str
) -> None:
    with pytest.raises(PolicyNotFound) as exc:
        store.source("default", version)
    assert exc.value.field == "version"


def test_create_version_stores_an_inactive_version(store: PolicyStore) -> None:
    text = store.source("strict", "1").replace("min_score: 0.6", "min_score: 0.65", 1)
    info = store.create_version("strict", text, author="admin:alice", comment="tighter")
    assert (info.number, info.author, info.comment, info.active) == (
        2,
        "admin:alice",
        "tighter",
        False,
    )
    assert store.get("strict").policy.min_score == 0.6
    assert store.source("strict", "2") == text
    # The same content again is not a new version.
    again = store.create_version("strict", text, author="admin:bob")
    assert again.number == 2
    assert len(store.history("strict")) == 2


def test_create_version_refuses_bad_yaml_naming_line_and_field(store: PolicyStore) -> None:
    text = store.source("strict", "1").replace("action: block}", "action: explode}", 1)
    line = next(n for n, t in enumerate(text.splitlines(), 1) if "explode" in t)
    with pytest.raises(PolicyError) as info:
        store.create_version("strict", text, author="admin:alice")
    assert f":{line}:" in info.value.message
    assert info.value.field == "entities.1.action"  # EMAIL_ADDRESS, the first plain block
    with pytest.raises(PolicyError, match="not valid YAML"):
        store.create_version("strict", "name: strict\nentities: [\n", author="admin:alice")
    assert len(store.history("strict")) == 1


def test_create_version_refuses_a_name_mismatch(store: PolicyStore) -> None:
    text = store.source("strict", "1")
    with pytest.raises(InvalidInput) as info:
        store.create_version("default", text, author="admin:alice")
    assert info.value.field == "name"
    assert "'strict'" in info.value.message
    assert len(store.history("default")) == 1


def test_activate_by_number_and_by_hash(store: PolicyStore) -> None:
    text = store.source("hr", "1").replace("ttl_minutes: 480", "ttl_minutes: 240", 1)
    v2 = store.create_version("hr", text, author="admin:alice")
    v1 = store.history("hr")[1]
    assert store.activate("hr", "2", by="admin:alice").version == v2.version
    assert store.get("hr").policy.pseudonyms.ttl_minutes == 240
    assert store.activate("hr", v1.version, by="admin:alice").version == v1.version
    assert store.get("hr").policy.pseudonyms.ttl_minutes == 480
    assert [v.active for v in store.history("hr")] == [False, True]
    with pytest.raises(PolicyNotFound):
        store.activate("hr", "9", by="admin:alice")
    with pytest.raises(PolicyNotFound):
        store.activate("hr", "0123456789ab", by="admin:alice")


def test_rollback_returns_to_the_previous_version(store: PolicyStore) -> None:
    with pytest.raises(InvalidInput) as info:
        store.rollback("legal", by="admin:alice")
    assert info.value.field == "policy"
    text = store.source("legal", "1").replace("min_score: 0.4", "min_score: 0.45", 1)
    store.create_version("legal", text, author="admin:alice")
    store.activate("legal", "2", by="admin:alice")
    assert store.rollback("legal", by="admin:alice").policy.min_score == 0.4
    assert [(v.number, v.active) for v in store.history("legal")] == [(2, False), (1, True)]
    # Rolling back again goes to the version active before the current activation.
    assert store.rollback("legal", by="admin:alice").policy.min_score == 0.45
    with pytest.raises(PolicyNotFound):
        store.rollback("nosuch", by="admin:alice")


def test_history_is_newest_first_and_marks_the_active_one(store: PolicyStore) -> None:
    source = store.source("medical", "1")
    for ttl in (30, 45):
        store.create_version(
            "medical", source.replace("ttl_minutes: 60", f"ttl_minutes: {ttl}"), author="a:b"
        )
    store.activate("medical", "2", by="admin:alice")
    history = store.history("medical")
    assert [v.number for v in history] == [3, 2, 1]
    assert [v.active for v in history] == [False, True, False]
    with pytest.raises(PolicyNotFound):
        store.history("nosuch")


def test_unknown_policy_is_not_found(store: PolicyStore) -> None:
    with pytest.raises(PolicyNotFound) as info:
        store.get("paranoid")
    assert "'paranoid'" in info.value.message
    assert "default, hr, legal, medical, strict" in info.value.message
    assert info.value.status_code == 404


def test_missing_default_is_a_policy_error(engine: Engine, packs_dir: Path) -> None:
    (packs_dir / "default.yaml").unlink()
    with pytest.raises(PolicyError) as info:
        PolicyStore(engine, default="default").import_directory(packs_dir)
    assert info.value.field == "default_policy"
    assert "'default'" in info.value.message


def test_an_invalid_file_stops_the_import(engine: Engine, packs_dir: Path) -> None:
    edit(packs_dir / "legal.yaml", "action: pseudonymize", "action: explode")
    with pytest.raises(PolicyError, match=r"legal\.yaml"):
        PolicyStore(engine, default="default").import_directory(packs_dir)
    assert count(engine, PolicyVersion) == 0


def test_resolution_order(store: PolicyStore) -> None:
    assert store.resolve().policy.name == "default"
    assert store.resolve(key="k1", team="t1", task="summarise").policy.name == "default"
    store.assign("task", "summarise", "legal")
    assert store.resolve(key="k1", team="t1", task="summarise").policy.name == "legal"
    store.assign("team", "t1", "hr")
    assert store.resolve(key="k1", team="t1", task="summarise").policy.name == "hr"
    store.assign("key", "k1", "medical")
    assert store.resolve(key="k1", team="t1", task="summarise").policy.name == "medical"
    assert (
        store.resolve(key_policy="strict", key="k1", team="t1", task="summarise").policy.name
        == "strict"
    )
    # Assignments apply only to their own kind and target.
    assert store.resolve(key="t1", team="k1").policy.name == "default"
    assert store.resolve(team="t2", task="summarise").policy.name == "legal"
    # None removes an assignment; the next in order applies again.
    store.assign("key", "k1", None)
    assert store.resolve(key="k1", team="t1", task="summarise").policy.name == "hr"
    store.assign("team", "t1", None)
    store.assign("team", "t1", None)  # removing twice is harmless
    assert store.resolve(key="k1", team="t1", task="summarise").policy.name == "legal"


def test_reassignment_replaces_and_unknown_policy_is_refused(store: PolicyStore) -> None:
    store.assign("team", "t1", "hr")
    store.assign("team", "t1", "legal")
    assert store.resolve(team="t1").policy.name == "legal"
    with pytest.raises(PolicyNotFound):
        store.assign("team", "t1", "paranoid")
    assert store.resolve(team="t1").policy.name == "legal"


def test_resolution_follows_the_active_version(store: PolicyStore) -> None:
    store.assign("team", "t1", "strict")
    text = store.source("strict", "1").replace("min_score: 0.6", "min_score: 0.65", 1)
    v2 = store.create_version("strict", text, author="admin:alice")
    store.activate("strict", "2", by="admin:alice")
    assert store.resolve(team="t1").version == v2.version
