"""API keys: 256-bit, HMAC-stored under the pepper, prefix lookup, revocation, expiry, owner."""

from __future__ import annotations

import base64
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from appliance.auth import accounts, apikeys
from appliance.auth.models import ApiKey
from appliance.db.engine import session_scope
from appliance.db.models import utcnow
from appliance.errors import InvalidInput


@pytest.fixture
def pepper(tmp_path: Path) -> bytes:
    return apikeys.load_pepper(tmp_path / "keys" / "pepper")


def test_pepper_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "pepper"
    first = apikeys.load_pepper(path)
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert apikeys.load_pepper(path) == first


def test_a_key_has_256_random_bits_and_only_its_hmac_is_stored(
    engine: Engine, pepper: bytes
) -> None:
    row, key = apikeys.create(engine, pepper, name="tool", scopes=["chat"])
    secret = key.split("_", 2)[2]
    assert len(base64.urlsafe_b64decode(secret + "=")) == 32
    with session_scope(engine) as session:
        stored = session.get(ApiKey, row.id)
    assert stored is not None
    assert key not in stored.digest and secret not in stored.digest
    assert len(stored.digest) == 64
    assert key.startswith(f"slm_{stored.prefix}_")
    check = apikeys.verify(engine, pepper, key)
    assert check.key is not None and check.key.id == row.id
    assert check.key.last_used_at is not None


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"), "wrong_secret"),
        (lambda k: "slm_00000000_" + k.split("_", 2)[2], "unknown"),
        (lambda k: "sk-" + k, "malformed"),
    ],
)
def test_wrong_keys_are_refused(engine: Engine, pepper: bytes, mangle, reason: str) -> None:  # type: ignore[no-untyped-def]
    _, key = apikeys.create(engine, pepper, name="tool", scopes=["chat"])
    check = apikeys.verify(engine, pepper, mangle(key))
    assert check.key is None and check.reason == reason


def test_another_pepper_does_not_verify(engine: Engine, pepper: bytes) -> None:
    _, key = apikeys.create(engine, pepper, name="tool", scopes=["chat"])
    assert apikeys.verify(engine, b"x" * 32, key).reason == "wrong_secret"


def test_revoked_expired_and_disabled_owner_keys_are_refused(engine: Engine, pepper: bytes) -> None:
    row, key = apikeys.create(engine, pepper, name="a", scopes=["chat"])
    assert apikeys.revoke(engine, row.id) is True
    assert apikeys.verify(engine, pepper, key).reason == "revoked"

    _, expiring = apikeys.create(engine, pepper, name="b", scopes=["chat"], expires_days=1)
    assert apikeys.verify(engine, pepper, expiring).key is not None
    later = utcnow() + timedelta(days=1, seconds=1)
    assert apikeys.verify(engine, pepper, expiring, now=later).reason == "expired"

    user, _ = accounts.create_user(engine, username="ada", role="staff")
    _, owned = apikeys.create(engine, pepper, name="c", scopes=["chat"], owner_id=user.id)
    accounts.set_disabled(engine, user.id, True)
    assert apikeys.verify(engine, pepper, owned).reason == "owner_disabled"
    assert len(apikeys.revoke_owned(engine, user.id)) == 1


def test_scopes_are_validated(engine: Engine, pepper: bytes) -> None:
    assert apikeys.parse_scopes("chat, pii,chat") == ["chat", "pii"]
    for bad in ("", "chat,root"):
        with pytest.raises(InvalidInput) as exc:
            apikeys.parse_scopes(bad)
        assert exc.value.field == "scopes"
    for days in (0, apikeys.MAX_EXPIRES_DAYS + 1, 10**12):
        with pytest.raises(InvalidInput) as expires:
            apikeys.create(engine, pepper, name="x", scopes=["chat"], expires_days=days)
        assert expires.value.field == "expires"
    row, _ = apikeys.create(
        engine, pepper, name="x", scopes=["chat"], expires_days=apikeys.MAX_EXPIRES_DAYS
    )
    assert row.expires_at is not None


def test_public_view_never_shows_the_digest(engine: Engine, pepper: bytes) -> None:
    row, key = apikeys.create(engine, pepper, name="tool", scopes=["chat", "pii"])
    view = apikeys.public_view(row)
    assert "digest" not in view and key not in str(view) and row.digest not in str(view)
    assert view["prefix"] == key[: len("slm_") + 8]
