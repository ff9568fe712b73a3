"""Local accounts: argon2id, backoff then lockout, reset on success, disabled, password change."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine

from appliance.auth import accounts
from appliance.config import Settings
from appliance.db.engine import session_scope
from appliance.db.models import User, utcnow
from appliance.errors import Conflict, InvalidInput, LoginFailed, LoginThrottled

PASSWORD = "correct horse battery"


def _login(engine: Engine, settings: Settings, password: str, **kw: object) -> User:
    return accounts.authenticate(engine, settings, username="ada", password=password, **kw)  # type: ignore[arg-type]


def test_passwords_are_stored_as_argon2id(engine: Engine) -> None:
    user, _ = accounts.create_user(engine, username="ada", role="staff", password=PASSWORD)
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash
    assert user.must_change_password is True


def test_right_password_signs_in_and_wrong_one_fails_without_saying_why(
    engine: Engine, settings: Settings
) -> None:
    accounts.create_user(engine, username="ada", role="staff", password=PASSWORD)
    assert _login(engine, settings, PASSWORD).username == "ada"
    with pytest.raises(LoginFailed) as wrong:
        _login(engine, settings, "not the password")
    with pytest.raises(LoginFailed) as unknown:
        accounts.authenticate(engine, settings, username="nobody", password="x" * 12)
    assert wrong.value.message == unknown.value.message
    assert (wrong.value.reason, unknown.value.reason) == ("bad_password", "unknown_user")


def test_repeated_failures_back_off_then_lock_the_account(
    engine: Engine, settings: Settings
) -> None:
    accounts.create_user(engine, username="ada", role="staff", password=PASSWORD)
    now = utcnow()
    for _ in range(accounts.BACKOFF_FROM - 1):
        with pytest.raises(LoginFailed):
            _login(engine, settings, "wrong password!", now=now)
    # The next failure starts the backoff: even the right password must wait.
    with pytest.raises(LoginFailed):
        _login(engine, settings, "wrong password!", now=now)
    with pytest.raises(LoginThrottled) as throttled:
        _login(engine, settings, PASSWORD, now=now)
    assert 1 <= throttled.value.retry_after <= 3
    # Keep failing after each wait until the lockout.
    while True:
        now += timedelta(seconds=settings.login_lockout_s)
        with pytest.raises(LoginFailed) as failed:
            _login(engine, settings, "wrong password!", now=now)
        if failed.value.reason == "locked":
            break
    with pytest.raises(LoginThrottled) as locked:
        _login(engine, settings, PASSWORD, now=now + timedelta(seconds=60))
    assert locked.value.retry_after > settings.login_lockout_s - 70
    assert locked.value.status_code == 429
    # After the lockout the right password works and resets the count.
    user = _login(
        engine, settings, PASSWORD, now=now + timedelta(seconds=settings.login_lockout_s + 1)
    )
    assert user.failed_logins == 0 and user.locked_until is None


def test_disabled_accounts_cannot_sign_in(engine: Engine, settings: Settings) -> None:
    user, _ = accounts.create_user(engine, username="ada", role="staff", password=PASSWORD)
    accounts.set_disabled(engine, user.id, True)
    with pytest.raises(LoginFailed) as failed:
        _login(engine, settings, PASSWORD)
    assert failed.value.reason == "disabled"


def test_password_change_checks_the_current_one_and_clears_the_forced_flag(
    engine: Engine, settings: Settings
) -> None:
    user, _ = accounts.create_user(engine, username="ada", role="staff", password=PASSWORD)
    with pytest.raises(InvalidInput) as short:
        accounts.change_password(engine, user.id, current=PASSWORD, new="short")
    assert short.value.field == "password"
    with pytest.raises(InvalidInput) as wrong:
        accounts.change_password(engine, user.id, current="nope", new="a much longer one")
    assert wrong.value.field == "current_password"
    accounts.change_password(engine, user.id, current=PASSWORD, new="a much longer one")
    changed = _login(engine, settings, "a much longer one")
    assert changed.must_change_password is False


def test_bootstrap_admin_is_created_once_and_must_change_its_password(engine: Engine) -> None:
    password = accounts.ensure_first_admin(engine)
    assert password is not None
    assert accounts.ensure_first_admin(engine) is None
    admin = accounts.find_user(engine, "admin")
    assert admin.role == "admin" and admin.must_change_password


def test_usernames_are_unique_and_roles_checked(engine: Engine) -> None:
    accounts.create_user(engine, username="ada", role="staff")
    with pytest.raises(Conflict):
        accounts.create_user(engine, username="ada", role="staff")
    with pytest.raises(InvalidInput) as bad:
        accounts.create_user(engine, username="bob", role="root")
    assert bad.value.field == "role"
    with session_scope(engine) as session:
        assert session.get(User, accounts.find_user(engine, "ada").id) is not None
