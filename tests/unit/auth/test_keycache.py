"""Verified keys are remembered per process, and forgotten at once when anything about them
changes anywhere: two `Identity` objects on two engines stand for two replicas of one database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, update
from sqlalchemy.exc import OperationalError

from appliance.audit.store import AuditLog
from appliance.auth import accounts, apikeys
from appliance.auth.identity import Caller, Identity
from appliance.auth.keycache import KeyCache
from appliance.auth.models import ApiKey
from appliance.config import Settings
from appliance.db import counters
from appliance.db.engine import make_engine
from appliance.db.models import User, utcnow
from appliance.errors import AuthError
from tests.support.windows import SilentServer, assert_waits_off_the_loop, silent_engine

CALLER = Caller(source="10.0.0.9", request_id="r1")


@pytest.fixture
def other_engine(engine: Engine) -> Iterator[Engine]:
    """A second engine on the same database: another replica, or a hand-made change."""
    other = make_engine(str(engine.url.render_as_string(hide_password=False)))
    yield other
    other.dispose()


@pytest.fixture
def replicas(engine: Engine, other_engine: Engine, settings: Settings) -> tuple[Identity, Identity]:
    return (
        Identity(settings, engine, AuditLog(engine)),
        Identity(settings, other_engine, AuditLog(other_engine)),
    )


def _key(identity: Identity, **options: object) -> tuple[str, str]:
    values: dict[str, object] = {"policy": None, "expires_days": None, "owner_id": None}
    row, key = identity.create_key_sync(
        name="tool",
        scopes=["chat"],
        actor="cli:test",
        caller=CALLER,
        **(values | options),  # type: ignore[arg-type]
    )
    return row.id, key


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    original = apikeys.verify

    def counting(*args: object, **kwargs: object) -> apikeys.KeyCheck:
        calls.append("verify")
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(apikeys, "verify", counting)
    return calls


async def test_a_known_key_is_checked_in_the_database_once(
    replicas: tuple[Identity, Identity], verifications: list[str]
) -> None:
    first, _ = replicas
    _, key = _key(first)
    for _ in range(3):
        assert (await first.key_principal(key, caller=CALLER)).scopes == {"chat"}
    assert verifications == ["verify"]


async def test_a_key_revoked_through_another_replica_is_refused_at_once(
    replicas: tuple[Identity, Identity], verifications: list[str]
) -> None:
    first, second = replicas
    key_id, key = _key(first)
    await first.key_principal(key, caller=CALLER)
    await first.key_principal(key, caller=CALLER)  # remembered
    second.revoke_key_sync(key_id, actor="cli:test", caller=CALLER)
    with pytest.raises(AuthError):
        await first.key_principal(key, caller=CALLER)


def _revoke(key_id: str) -> Any:
    return update(ApiKey).where(ApiKey.id == key_id).values(revoked_at=utcnow())


def _delete(key_id: str) -> Any:
    return ApiKey.__table__.delete().where(ApiKey.__table__.c.id == key_id)  # type: ignore[attr-defined]


@pytest.mark.parametrize("change", [_revoke, _delete], ids=["revoked", "deleted"])
async def test_a_key_changed_by_hand_in_the_database_is_refused_at_once(
    replicas: tuple[Identity, Identity], other_engine: Engine, change: Callable[[str], Any]
) -> None:
    first, _ = replicas
    key_id, key = _key(first)
    await first.key_principal(key, caller=CALLER)
    # Not through the appliance at all: the trigger still moves the counter.
    with other_engine.begin() as connection:
        connection.execute(change(key_id))
    with pytest.raises(AuthError):
        await first.key_principal(key, caller=CALLER)


async def test_a_team_change_elsewhere_is_seen_by_the_next_request(
    replicas: tuple[Identity, Identity],
) -> None:
    first, second = replicas
    key_id, key = _key(first)
    assert (await first.key_principal(key, caller=CALLER)).team is None
    second.set_key_team_sync(key_id, "legal", actor="cli:test", caller=CALLER)
    assert (await first.key_principal(key, caller=CALLER)).team == "legal"


async def test_disabling_the_owner_elsewhere_refuses_the_key_at_once(
    replicas: tuple[Identity, Identity], engine: Engine, other_engine: Engine
) -> None:
    first, _ = replicas
    user, _ = accounts.create_user(engine, username="owner", role="staff", password=None)
    _, key = _key(first, owner_id=user.id)
    await first.key_principal(key, caller=CALLER)
    # The owner's flag alone (as a hand-made change would), not the revocation of the keys.
    with other_engine.begin() as connection:
        connection.execute(update(User).where(User.id == user.id).values(disabled=True))
    with pytest.raises(AuthError):
        await first.key_principal(key, caller=CALLER)


async def test_an_expired_key_is_refused_though_remembered(
    replicas: tuple[Identity, Identity], other_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _ = replicas
    _, key = _key(first, expires_days=1)
    await first.key_principal(key, caller=CALLER)
    later = utcnow() + timedelta(days=2)
    monkeypatch.setattr("appliance.auth.keycache.utcnow", lambda: later)
    monkeypatch.setattr("appliance.auth.apikeys.utcnow", lambda: later)
    with pytest.raises(AuthError):
        await first.key_principal(key, caller=CALLER)


def test_what_a_request_does_not_change_moves_no_counter(
    replicas: tuple[Identity, Identity], engine: Engine
) -> None:
    """A key's `last_used_at` and a user's sign-in bookkeeping are written on requests: they
    must not empty every replica's cache."""
    first, _ = replicas
    key_id, _ = _key(first)
    user, _ = accounts.create_user(engine, username="someone", role="staff", password=None)
    before = counters.read(engine, "auth")
    with engine.begin() as connection:
        connection.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=utcnow()))
        connection.execute(update(User).where(User.id == user.id).values(last_login_at=utcnow()))
    assert counters.read(engine, "auth") == before


async def test_the_counter_read_leaves_the_event_loop_free(
    engine: Engine, settings: Settings
) -> None:
    identity = Identity(settings, engine, AuditLog(engine))
    with SilentServer() as silent:
        # The `auth` counter on a host that takes the connection and never answers.
        gone = silent_engine(silent)
        identity.keys = KeyCache(gone)
        check = asyncio.create_task(identity.key_principal("apl_any_secret", caller=CALLER))
        await assert_waits_off_the_loop(silent, check)
        with pytest.raises(OperationalError):
            await asyncio.wait_for(check, 60)
    gone.dispose()
