"""The pseudonym vault on a migrated database (SQLite, and PostgreSQL when its binaries exist):
scoping, restore, expiry, encryption bound to scope and placeholder, concurrent allocation."""

from __future__ import annotations

import os
import random
import threading
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from cryptography.exceptions import InvalidTag
from sqlalchemy import Engine, event, select, update

from appliance.db.engine import alembic_config, make_engine, upgrade
from appliance.pii.actions import ActionContext, PlaceholderBook, transform
from appliance.pii.detector import Finding
from appliance.pii.vault import PseudonymVault, pseudonyms
from appliance.policies.schema import Policy

TTL = timedelta(minutes=10)


def migrate(url: str) -> None:
    """Migrate to head; if a later migration (not the vault's) is broken, to 0002, which
    creates the vault table."""
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
def vault(engine: Engine) -> PseudonymVault:
    return PseudonymVault(engine, key=os.urandom(32), digest_key=os.urandom(32))


def rows(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(pseudonyms))]


def test_same_value_same_placeholder_within_a_scope(vault: PseudonymVault) -> None:
    scope = vault.scope("conv:alice:1", ttl=TTL)
    assert scope.placeholder("PERSON", "Ann Lee") == "<PERSON_1>"
    assert scope.placeholder("PERSON", "Bob Stone") == "<PERSON_2>"
    assert scope.placeholder("PERSON", "ann  LEE") == "<PERSON_1>"
    assert scope.placeholder("EMAIL_ADDRESS", "ann@example.org") == "<EMAIL_ADDRESS_1>"
    # A later request in the same conversation reads the mapping from the database.
    again = vault.scope("conv:alice:1", ttl=TTL)
    assert again.placeholder("PERSON", "Ann Lee") == "<PERSON_1>"
    assert again.placeholder("PERSON", "Cleo Park") == "<PERSON_3>"


def test_restore_replaces_only_the_scopes_own_placeholders(vault: PseudonymVault) -> None:
    a = vault.scope("conv:alice:1", ttl=TTL)
    b = vault.scope("conv:bob:7", ttl=TTL)
    assert a.placeholder("PERSON", "Ann Lee") == "<PERSON_1>"
    assert a.placeholder("PERSON", "Bob Stone") == "<PERSON_2>"
    assert b.placeholder("PERSON", "Bob Stone") == "<PERSON_1>"  # independent numbering
    text = "<PERSON_1> met <PERSON_2> and <EMAIL_ADDRESS_1>."
    assert a.restore(text) == ("Ann Lee met Bob Stone and <EMAIL_ADDRESS_1>.", 2)
    assert b.restore(text) == ("Bob Stone met <PERSON_2> and <EMAIL_ADDRESS_1>.", 1)
    assert vault.scope("conv:eve:1", ttl=TTL).restore(text) == (text, 0)
    assert a.restore("no placeholders here") == ("no placeholders here", 0)


def test_expired_entry_is_not_restored_and_is_purged(vault: PseudonymVault, engine: Engine) -> None:
    scope = vault.scope("req:1", ttl=TTL)
    scope.placeholder("PERSON", "Ann Lee")
    scope.placeholder("PERSON", "Bob Stone")
    other = vault.scope("req:2", ttl=TTL)
    other.placeholder("PERSON", "Cleo Park")
    past = datetime.now(UTC) - timedelta(seconds=1)
    with engine.begin() as conn:
        conn.execute(
            update(pseudonyms)
            .where(pseudonyms.c.scope == "req:1", pseudonyms.c.placeholder == "<PERSON_1>")
            .values(expires_at=past)
        )
    assert scope.restore("<PERSON_1> and <PERSON_2>") == ("<PERSON_1> and Bob Stone", 1)
    assert vault.purge_expired() == 1
    remaining = {(r[1], r[2]) for r in rows(engine)}
    assert remaining == {("req:1", "<PERSON_2>"), ("req:2", "<PERSON_1>")}
    assert vault.purge_expired() == 0


def test_expired_entries_of_a_scope_go_when_the_scope_allocates(
    vault: PseudonymVault, engine: Engine
) -> None:
    vault.scope("req:1", ttl=TTL).placeholder("PERSON", "Ann Lee")
    with engine.begin() as conn:
        conn.execute(update(pseudonyms).values(expires_at=datetime.now(UTC) - TTL))
    fresh = vault.scope("req:1", ttl=TTL)
    assert fresh.placeholder("PERSON", "Bob Stone") == "<PERSON_1>"
    assert fresh.restore("<PERSON_1>") == ("Bob Stone", 1)
    assert len(rows(engine)) == 1


def test_ciphertext_moved_to_another_scope_does_not_decrypt(
    vault: PseudonymVault, engine: Engine
) -> None:
    vault.scope("conv:alice:1", ttl=TTL).placeholder("PERSON", "Ann Lee")
    with engine.begin() as conn:
        conn.execute(update(pseudonyms).values(scope="conv:eve:1"))
    thief = vault.scope("conv:eve:1", ttl=TTL)
    # The moved row fails authentication: nothing is restored, the placeholder stays.
    assert thief.restore("Hello <PERSON_1>") == ("Hello <PERSON_1>", 0)


def test_ciphertext_is_bound_to_scope_and_placeholder(vault: PseudonymVault) -> None:
    nonce, sealed = vault.seal("req:1", "<PERSON_1>", "Ann Lee")
    assert vault.open_sealed("req:1", "<PERSON_1>", nonce, sealed) == "Ann Lee"
    with pytest.raises(InvalidTag):
        vault.open_sealed("req:2", "<PERSON_1>", nonce, sealed)
    with pytest.raises(InvalidTag):
        vault.open_sealed("req:1", "<PERSON_2>", nonce, sealed)
    other_key = PseudonymVault(vault._engine, key=os.urandom(32), digest_key=b"d" * 32)
    with pytest.raises(InvalidTag):
        other_key.open_sealed("req:1", "<PERSON_1>", nonce, sealed)


def test_table_never_holds_the_plaintext(vault: PseudonymVault, engine: Engine) -> None:
    values = ["Ann Lee", "ann.lee@example.org", "219-09-9999", "José Müller"]
    scope = vault.scope("conv:alice:1", ttl=TTL)
    for value in values:
        scope.placeholder("PERSON", value)
    stored = rows(engine)
    assert len(stored) == len(values)
    for row in stored:
        for cell in row:
            raw = bytes(cell) if isinstance(cell, bytes | memoryview) else str(cell).encode()
            for value in values:
                for form in (value, value.casefold()):
                    assert form.encode() not in raw
                    assert form.encode("utf-16-le") not in raw


def test_concurrent_allocation_agrees_on_one_mapping(vault: PseudonymVault, engine: Engine) -> None:
    names = [f"Person Number{i}" for i in range(12)]
    results: dict[int, dict[str, str]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker(index: int) -> None:
        try:
            # Each thread is its own request: its own scope object, the same conversation.
            scope = vault.scope("conv:shared:1", ttl=TTL)
            mine = random.Random(index).sample(names, k=9)
            barrier.wait()
            results[index] = {value: scope.placeholder("PERSON", value) for value in mine}
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    seen: dict[str, set[str]] = defaultdict(set)
    for mapping in results.values():
        for value, placeholder in mapping.items():
            seen[value].add(placeholder)
    assert all(len(placeholders) == 1 for placeholders in seen.values()), seen
    issued = [next(iter(p)) for p in seen.values()]
    assert len(set(issued)) == len(issued)
    stored = {(r[2]) for r in rows(engine) if r[1] == "conv:shared:1"}
    assert stored == set(issued)
    restored, count = vault.scope("conv:shared:1", ttl=TTL).restore(" | ".join(sorted(issued)))
    assert count == len(issued)
    by_placeholder = {next(iter(p)): v for v, p in seen.items()}
    assert restored == " | ".join(by_placeholder[p] for p in sorted(issued))


def test_transform_with_a_vault_scope_round_trips(vault: PseudonymVault) -> None:
    policy = Policy.model_validate(
        {
            "name": "t",
            "entities": [
                {"entity": "PERSON", "action": "pseudonymize"},
                {"entity": "EMAIL_ADDRESS", "action": "redact"},
            ],
        }
    )
    text = "Ann Lee <ann@example.org> wrote to Bob Stone; Ann Lee signed."
    findings = [
        Finding("PERSON", 0, 7, 0.9),
        Finding("EMAIL_ADDRESS", 9, 24, 0.9),
        Finding("PERSON", 35, 44, 0.9),
        Finding("PERSON", 46, 53, 0.9),
    ]
    scope = vault.scope("conv:alice:1", ttl=TTL)
    context = ActionContext(book=PlaceholderBook(), hash_key=b"k" * 32, pseudonyms=scope)
    out = transform(text, findings, policy, context).text
    assert out == "<PERSON_1> <<EMAIL_ADDRESS_1>> wrote to <PERSON_2>; <PERSON_1> signed."
    # The answer is restored for the caller: pseudonyms only; the redacted e-mail stays hidden.
    answer = "<PERSON_2> replied to <PERSON_1> at <EMAIL_ADDRESS_1>."
    assert scope.restore(answer) == ("Bob Stone replied to Ann Lee at <EMAIL_ADDRESS_1>.", 2)


def test_restore_counts_what_it_put_back_per_entity_type(vault: PseudonymVault) -> None:
    # The receipt says what was restored (issue 15): counts per type, never the values.
    scope = vault.scope("req:alice:1", ttl=TTL)
    person = scope.placeholder("PERSON", "John Smith")
    email = scope.placeholder("EMAIL_ADDRESS", "john@example.org")
    answer = f"Dear {person}, I wrote to {email}. Regards to {person}. <US_SSN_1> stays."
    restored, counts = scope.restore_counted(answer)
    assert restored == (
        "Dear John Smith, I wrote to john@example.org. Regards to John Smith. <US_SSN_1> stays."
    )
    assert dict(counts) == {"PERSON": 2, "EMAIL_ADDRESS": 1}
    assert scope.restore(answer) == (restored, 3)
    assert vault.scope("req:bob:1", ttl=TTL).restore_counted(answer) == (answer, {})


def test_each_new_value_costs_one_transaction(vault: PseudonymVault, engine: Engine) -> None:
    """A request's pseudonyms are written as it finds them: one commit per new value (the
    scope's stored entries are read with the first), none for a value seen before."""
    commits: list[int] = []

    def count(connection: object) -> None:
        commits.append(1)

    event.listen(engine, "commit", count)
    try:
        scope = vault.scope("request:cost", ttl=timedelta(minutes=5))
        values = [("PERSON", f"Person {n}") for n in range(5)]
        placeholders = [scope.placeholder(entity, value) for entity, value in values]
        assert len(commits) == 5
        assert [scope.placeholder(e, v) for e, v in values] == placeholders
        assert len(commits) == 5
    finally:
        event.remove(engine, "commit", count)
