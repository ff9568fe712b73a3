"""Local accounts: argon2id password hashes and the bootstrap administrator."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.low_level import Type
from sqlalchemy import Engine
from sqlmodel import select

from appliance.db.engine import session_scope
from appliance.db.models import User

# argon2id with OWASP's recommended minimum (m=19 MiB, t=2, p=1).
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, type=Type.ID)


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
