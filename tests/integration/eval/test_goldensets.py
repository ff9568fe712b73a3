"""Golden-set storage on SQLite and PostgreSQL: sealed at rest, versioned, appendable."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from appliance.db.engine import make_engine, upgrade
from appliance.documents.crypto import Sealer
from appliance.errors import InvalidInput, NotFound
from appliance.eval import goldensets


@pytest.fixture
def store(database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    upgrade(database_url)
    engine = make_engine(database_url)
    yield engine, Sealer.from_keys_dir(tmp_path / "keys")
    engine.dispose()


def test_append_items_makes_a_new_version_and_keeps_the_old_one(store) -> None:  # type: ignore[no-untyped-def]
    engine, sealer = store
    rows = goldensets.parse(
        b'{"input": "My laptop will not boot", "expected": "it", "id": "a"}\n'
        b'{"input": "When is payday?", "expected": "payroll"}\n',
        task="classify",
    )
    assert (
        goldensets.create_set(
            engine, sealer, name="tickets", task="classify", rows=rows, author="admin"
        )
        == 1
    )
    version = goldensets.append_items(
        engine, sealer, "tickets", [("Reset my badge", {"label": "facilities"})], author="rev"
    )
    assert version == 2
    _, number, items = goldensets.load_items(engine, sealer, "tickets")
    assert number == 2
    assert [(i.input, i.expected) for i in items][-1] == ("Reset my badge", "facilities")
    assert len({i.key for i in items}) == 3
    _, first, old = goldensets.load_items(engine, sealer, "tickets", 1)
    assert first == 1 and len(old) == 2
    # Sealed at rest: the plain text is nowhere in the table.
    with engine.connect() as connection:
        blobs = [
            bytes(r[0]) for r in connection.execute(text("SELECT content_sealed FROM eval_items"))
        ]
    assert blobs and all(b"laptop" not in b and b"badge" not in b for b in blobs)


def test_append_items_to_a_missing_set_is_not_found(store) -> None:  # type: ignore[no-untyped-def]
    engine, sealer = store
    with pytest.raises(NotFound) as caught:
        goldensets.append_items(engine, sealer, "nope", [("x", "y")], author="a")
    assert caught.value.status_code == 404


def test_append_items_checks_the_expected_shape_of_the_task(store) -> None:  # type: ignore[no-untyped-def]
    engine, sealer = store
    rows = goldensets.parse(b'{"input": "Invoice 1", "expected": {"total": 3}}\n', task="extract")
    goldensets.create_set(engine, sealer, name="inv", task="extract", rows=rows, author="a")
    with pytest.raises(InvalidInput) as caught:
        goldensets.append_items(engine, sealer, "inv", [("Invoice 2", "not an object")], author="a")
    assert caught.value.field == "item 1.expected"


def test_routing_overrides_newest_wins_and_apply_is_seen_at_once(store) -> None:  # type: ignore[no-untyped-def]
    from appliance.eval.overrides import Override, RoutingOverrides

    engine, _ = store
    overrides = RoutingOverrides(engine)
    assert overrides.for_task("classify") is None
    overrides.apply(task="classify", model="a", threshold=0.4, run_id="r1", actor="admin")
    assert overrides.for_task("classify") == overrides.current()["classify"]
    overrides.apply(task="classify", model=None, threshold=0.7, run_id="r2", actor="admin")
    found = overrides.for_task("classify")
    assert found is not None and (found.model, found.threshold) == (None, 0.7)
    assert "confidence threshold 0.70 (evaluation run r2)" in found.note()
    # Another replica (a second instance on its own engine) that had read the table before
    # sees the next change on its next request, as it sees one made by hand in the database.
    other_engine = make_engine(str(engine.url.render_as_string(hide_password=False)))
    other = RoutingOverrides(other_engine)
    assert other.for_task("classify") == found
    overrides.apply(task="classify", model="b", threshold=None, run_id="r3", actor="admin")
    seen = other.for_task("classify")
    assert seen is not None and (seen.model, seen.run_id) == ("b", "r3")
    with other_engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO routing_overrides (task, model, threshold, run_id, applied_by, "
                "applied_at) VALUES ('classify', 'c', NULL, NULL, 'sql', CURRENT_TIMESTAMP)"
            )
        )
    assert overrides.for_task("classify") == Override("classify", "c", None, None)
    other_engine.dispose()
    with pytest.raises(InvalidInput):
        overrides.apply(task="classify", model=None, threshold=1.5, run_id=None, actor="a")
