"""Server-side browser sessions: a random cookie value, its SHA-256 in the database.

A new id at every sign-in (no fixation), a CSRF token per session, idle and absolute expiry
checked on every request, and ending every session of a user at once (logout everywhere, admin
revocation, disabling the account).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete
from sqlmodel import select

from appliance.auth.accounts import as_utc
from appliance.auth.models import UserSession
from appliance.config import Settings
from appliance.db.engine import session_scope
from appliance.db.models import User, utcnow

SESSION_COOKIE = "__Host-appliance-session"
# Writes of `last_seen_at` are skipped when the last one is this recent (one write per minute
# per session instead of one per request); idle expiry is coarse by this much at most.
_TOUCH_EVERY = timedelta(seconds=60)


def digest(token: str) -> str:
    """SHA-256 of a cookie value, the only form in which it is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class ActiveSession:
    """A live session and its user, as the guard needs them."""

    id_hash: str
    csrf_token: str
    user: User


def create(engine: Engine, *, user_id: str, source: str | None) -> tuple[str, str]:
    """Start a session; returns (cookie value, CSRF token). The cookie value is not stored."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    with session_scope(engine) as session:
        session.add(
            UserSession(id_hash=digest(token), user_id=user_id, csrf_token=csrf, source=source)
        )
    return token, csrf


def lookup(
    engine: Engine, settings: Settings, token: str, *, now: datetime | None = None
) -> ActiveSession | None:
    """The live session for a cookie value; expired sessions and disabled users end here."""
    now = now or utcnow()
    id_hash = digest(token)
    with session_scope(engine) as session:
        row = session.get(UserSession, id_hash)
        if row is None:
            return None
        user = session.get(User, row.user_id)
        idle = now - as_utc(row.last_seen_at) > timedelta(seconds=settings.session_idle_timeout_s)
        old = now - as_utc(row.created_at) > timedelta(seconds=settings.session_absolute_timeout_s)
        if user is None or user.disabled or idle or old:
            session.delete(row)
            return None
        if now - as_utc(row.last_seen_at) > _TOUCH_EVERY:
            row.last_seen_at = now
            session.add(row)
        return ActiveSession(id_hash=id_hash, csrf_token=row.csrf_token, user=user)


def end(engine: Engine, id_hash: str) -> bool:
    """End one session (logout); whether it existed."""
    with session_scope(engine) as session:
        row = session.get(UserSession, id_hash)
        if row is None:
            return False
        session.delete(row)
    return True


def end_all(engine: Engine, user_id: str) -> int:
    """End every session of a user; how many there were."""
    with session_scope(engine) as session:
        count = len(list(session.exec(select(UserSession).where(UserSession.user_id == user_id))))
        session.exec(delete(UserSession).where(UserSession.user_id == user_id))  # type: ignore[arg-type]
    return count
