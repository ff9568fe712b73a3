"""Sessions: digest-only storage, idle and absolute expiry, disabled users, end everywhere."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine

from appliance.auth import accounts, sessions
from appliance.auth.models import UserSession
from appliance.config import Settings
from appliance.db.engine import session_scope
from appliance.db.models import utcnow


def test_cookie_value_is_not_stored_and_each_login_gets_a_new_id(
    engine: Engine, settings: Settings
) -> None:
    user, _ = accounts.create_user(engine, username="ada", role="staff")
    first, csrf1 = sessions.create(engine, user_id=user.id, source="127.0.0.1")
    second, csrf2 = sessions.create(engine, user_id=user.id, source="127.0.0.1")
    assert first != second and csrf1 != csrf2
    with session_scope(engine) as session:
        assert session.get(UserSession, first) is None
        assert session.get(UserSession, sessions.digest(first)) is not None
    active = sessions.lookup(engine, settings, first)
    assert active is not None and active.user.id == user.id and active.csrf_token == csrf1


def test_idle_timeout(engine: Engine, settings: Settings) -> None:
    user, _ = accounts.create_user(engine, username="ada", role="staff")
    token, _ = sessions.create(engine, user_id=user.id, source=None)
    idle = timedelta(seconds=settings.session_idle_timeout_s)
    assert sessions.lookup(engine, settings, token, now=utcnow() + idle - timedelta(seconds=5))
    # That request counted as activity: the idle clock restarted from it.
    later = utcnow() + idle * 2 - timedelta(seconds=10)
    assert sessions.lookup(engine, settings, token, now=later) is not None
    assert sessions.lookup(engine, settings, token, now=later + idle + timedelta(seconds=1)) is None
    # An expired session is gone, not just refused.
    assert sessions.lookup(engine, settings, token) is None


def test_absolute_timeout_even_when_active(engine: Engine, settings: Settings) -> None:
    user, _ = accounts.create_user(engine, username="ada", role="staff")
    token, _ = sessions.create(engine, user_id=user.id, source=None)
    step = timedelta(seconds=settings.session_idle_timeout_s - 60)
    now = utcnow()
    limit = now + timedelta(seconds=settings.session_absolute_timeout_s)
    while now + step < limit:
        now += step
        assert sessions.lookup(engine, settings, token, now=now) is not None
    assert sessions.lookup(engine, settings, token, now=limit + timedelta(seconds=1)) is None


def test_disabled_user_and_end_all(engine: Engine, settings: Settings) -> None:
    user, _ = accounts.create_user(engine, username="ada", role="staff")
    a, _ = sessions.create(engine, user_id=user.id, source=None)
    b, _ = sessions.create(engine, user_id=user.id, source=None)
    assert sessions.end_all(engine, user.id) == 2
    assert sessions.lookup(engine, settings, a) is None
    assert sessions.lookup(engine, settings, b) is None
    c, _ = sessions.create(engine, user_id=user.id, source=None)
    accounts.set_disabled(engine, user.id, True)
    assert sessions.lookup(engine, settings, c) is None
