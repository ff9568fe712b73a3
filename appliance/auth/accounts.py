"""Local accounts: argon2id password hashes, the bootstrap administrator, backoff and lockout.

Sign-in failures are counted per account. From the third failure in a row each further attempt
must wait (2, 4, 8... seconds); at `login_max_failures` the account is locked for
`login_lockout_s`. A success resets the count.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.low_level import Type
from sqlalchemy import Engine
from sqlmodel import select

from appliance.auth.roles import ROLES
from appliance.auth.teams import check_team
from appliance.config import Settings
from appliance.db.engine import session_scope
from appliance.db.models import User, utcnow
from appliance.errors import Conflict, InvalidInput, LoginFailed, LoginThrottled, NotFound

# argon2id with OWASP's recommended minimum (m=19 MiB, t=2, p=1).
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, type=Type.ID)

# Verified against when the username does not exist, so both cases take the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))

MIN_PASSWORD_LENGTH = 12
BACKOFF_FROM = 3
"""The failure count from which each further attempt has to wait."""


def hash_password(password: str) -> str:
    """An argon2id hash of `password` in PHC string format."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether `password` matches the stored hash (constant time inside argon2)."""
    try:
        return _hasher.verify(password_hash, password)
    except Exception:
        return False


def ensure_first_admin(engine: Engine, *, username: str = "admin") -> str | None:
    """Create an admin with a random password if no admin exists; returns that password once."""
    with session_scope(engine) as session:
        existing = session.exec(select(User).where(User.role == "admin")).first()
        if existing is not None:
            return None
        password = secrets.token_urlsafe(18)
        session.add(
            User(
                username=username,
                role="admin",
                password_hash=hash_password(password),
                must_change_password=True,
            )
        )
    return password


def check_role(role: str) -> str:
    """`role` if it is one of the roles, else InvalidInput naming the field."""
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", field="role")
    return role


def check_new_password(password: str) -> None:
    """Refuse passwords shorter than the minimum (ASVS: length, not composition rules)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(
            f"the password must have at least {MIN_PASSWORD_LENGTH} characters",
            field="password",
        )


def create_user(
    engine: Engine,
    *,
    username: str,
    role: str,
    password: str | None = None,
    team: str | None = None,
) -> tuple[User, str]:
    """Create a local account; returns it and its initial password (generated if not given).

    The account must choose a new password at first sign-in.
    """
    username = username.strip()
    if not username or len(username) > 150:
        raise InvalidInput("username must have 1 to 150 characters", field="username")
    check_role(role)
    team = check_team(team)
    if password is None:
        password = secrets.token_urlsafe(18)
    else:
        check_new_password(password)
    with session_scope(engine) as session:
        if session.exec(select(User).where(User.username == username)).first() is not None:
            raise Conflict(f"user '{username}' already exists", field="username")
        user = User(
            username=username,
            role=role,
            password_hash=hash_password(password),
            must_change_password=True,
            team=team,
        )
        session.add(user)
    return user, password


def list_users(engine: Engine) -> list[User]:
    """Every account, oldest first."""
    with session_scope(engine) as session:
        return list(session.exec(select(User).order_by(User.created_at)))  # type: ignore[arg-type]


def find_user(engine: Engine, ref: str) -> User:
    """The account whose id or username is `ref`; NotFound otherwise."""
    with session_scope(engine) as session:
        user = (
            session.get(User, ref) or session.exec(select(User).where(User.username == ref)).first()
        )
    if user is None:
        raise NotFound(f"no user '{ref}'", field="user")
    return user


def set_role(engine: Engine, user_id: str, role: str) -> str:
    """Give the account `role`; returns the role it had."""
    check_role(role)
    with session_scope(engine) as session:
        user = session.get(User, user_id)
        if user is None:
            raise NotFound(f"no user '{user_id}'", field="user")
        old = user.role
        user.role = role
        if role != "staff":
            user.reviewer = False  # the permission is for staff only
        session.add(user)
    return old


def set_reviewer(engine: Engine, user_id: str, reviewer: bool) -> bool:
    """Grant or withdraw the reviewer permission; returns what it was. Staff accounts only:
    admins stay content-blind and auditors read the trail, not content."""
    with session_scope(engine) as session:
        user = session.get(User, user_id)
        if user is None:
            raise NotFound(f"no user '{user_id}'", field="user")
        if reviewer and user.role != "staff":
            raise InvalidInput("the reviewer permission is for staff accounts", field="reviewer")
        old = user.reviewer
        user.reviewer = reviewer
        session.add(user)
    return old


def set_team(engine: Engine, user_id: str, team: str | None) -> str | None:
    """Put the account in `team` (None: no team); returns the team it had."""
    team = check_team(team)
    with session_scope(engine) as session:
        user = session.get(User, user_id)
        if user is None:
            raise NotFound(f"no user '{user_id}'", field="user")
        old = user.team
        user.team = team
        session.add(user)
    return old


def set_disabled(engine: Engine, user_id: str, disabled: bool) -> None:
    """Disable or re-enable an account. Callers end its sessions and keys (see `revoke_all`)."""
    with session_scope(engine) as session:
        user = session.get(User, user_id)
        if user is None:
            raise NotFound(f"no user '{user_id}'", field="user")
        user.disabled = disabled
        session.add(user)


def _backoff(settings: Settings, failures: int) -> int:
    """Seconds the account must wait after `failures` failures in a row."""
    if failures >= settings.login_max_failures:
        return settings.login_lockout_s
    if failures >= BACKOFF_FROM:
        return min(int(2 ** (failures - BACKOFF_FROM + 1)), settings.login_lockout_s)
    return 0


def authenticate(
    engine: Engine, settings: Settings, *, username: str, password: str, now: datetime | None = None
) -> User:
    """The account if the password is right; LoginFailed or RateLimited otherwise.

    The message never says whether the username exists; the exception's `reason` (for the
    audit trail only) does.
    """
    now = now or utcnow()
    with session_scope(engine) as session:
        user = session.exec(select(User).where(User.username == username)).first()
        if user is None or not user.password_hash:
            verify_password(_DUMMY_HASH, password)
            raise _failed("unknown_user" if user is None else "no_password", user)
        if user.locked_until is not None and as_utc(user.locked_until) > now:
            wait = int((as_utc(user.locked_until) - now).total_seconds()) + 1
            raise _throttled(wait, user)
        if not verify_password(user.password_hash, password):
            user.failed_logins += 1
            wait = _backoff(settings, user.failed_logins)
            user.locked_until = now + timedelta(seconds=wait) if wait else None
            session.add(user)
            session.commit()
            raise _failed("locked" if wait >= settings.login_lockout_s else "bad_password", user)
        if user.disabled:
            raise _failed("disabled", user)
        user.failed_logins = 0
        user.locked_until = None
        user.last_login_at = now
        session.add(user)
    return user


def change_password(engine: Engine, user_id: str, *, current: str, new: str) -> None:
    """Replace the password after checking the current one; clears the forced-change flag."""
    check_new_password(new)
    if new == current:
        raise InvalidInput("the new password must differ from the current one", field="password")
    with session_scope(engine) as session:
        user = session.get(User, user_id)
        if user is None or not verify_password(user.password_hash, current):
            raise InvalidInput("the current password is wrong", field="current_password")
        user.password_hash = hash_password(new)
        user.must_change_password = False
        session.add(user)


def as_utc(value: datetime) -> datetime:
    """`value` as an aware UTC datetime."""
    # SQLite hands back naive datetimes for timezone-aware columns; they were stored in UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _failed(reason: str, user: User | None) -> LoginFailed:
    return LoginFailed(
        "wrong username or password", reason=reason, user_id=user.id if user else None
    )


def _throttled(wait: int, user: User) -> LoginThrottled:
    return LoginThrottled(
        f"too many failed sign-ins for this account; try again in {wait} s",
        retry_after=wait,
        user_id=user.id,
    )
