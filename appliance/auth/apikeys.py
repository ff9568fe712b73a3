"""API keys: 256 random bits, shown once, stored as HMAC-SHA256 under a server pepper.

A key reads `slm_<prefix>_<secret>`. The prefix (8 hex characters) is stored in clear to find
the row; the whole key is compared as an HMAC digest in constant time. A database dump alone
therefore yields neither keys nor anything to brute-force offline without the pepper file.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import select

from appliance.auth.accounts import as_utc
from appliance.auth.models import ApiKey
from appliance.auth.roles import SCOPES
from appliance.auth.teams import check_team
from appliance.db.engine import session_scope
from appliance.db.models import User, utcnow
from appliance.errors import InvalidInput, NotFound

KEY_PREFIX = "slm_"
# `last_used_at` is written at most this often per key (a write per request would serialise
# inference behind the database).
_TOUCH_EVERY = timedelta(seconds=60)


MAX_EXPIRES_DAYS = 3650
"""The longest lifetime a key can be given (ten years); for longer, leave it unset."""


def load_pepper(path: Path) -> bytes:
    """The server pepper; created (32 random bytes, mode 0600) the first time."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(32))
    pepper = path.read_bytes()
    if len(pepper) < 32:
        raise InvalidInput(f"the API key pepper file {path} is shorter than 32 bytes")
    return pepper


def _digest(pepper: bytes, key: str) -> str:
    return hmac.new(pepper, key.encode(), hashlib.sha256).hexdigest()


def digest_of(pepper: bytes, key: str) -> str:
    """The HMAC digest a key is stored (and cached) under; never the key itself."""
    return _digest(pepper, key)


def parse_scopes(text: str | list[str]) -> list[str]:
    """Scopes from `a,b` or a list; InvalidInput naming `scopes` for unknown or empty ones."""
    items = text.split(",") if isinstance(text, str) else text
    scopes = sorted({s.strip() for s in items if s.strip()})
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise InvalidInput(
            f"scopes must be a non-empty list of {', '.join(SCOPES)}"
            + (f"; unknown: {', '.join(unknown)}" if unknown else ""),
            field="scopes",
        )
    return scopes


def create(
    engine: Engine,
    pepper: bytes,
    *,
    name: str,
    scopes: list[str],
    policy: str | None = None,
    expires_days: int | None = None,
    owner_id: str | None = None,
    team: str | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; returns its row and the key itself (the only time it exists in clear)."""
    name = name.strip()
    if not name or len(name) > 100:
        raise InvalidInput("name must have 1 to 100 characters", field="name")
    scopes = parse_scopes(scopes)
    team = check_team(team)
    if expires_days is not None and not 0 < expires_days <= MAX_EXPIRES_DAYS:
        raise InvalidInput(f"expires must be 1 to {MAX_EXPIRES_DAYS} days", field="expires")
    prefix = secrets.token_hex(4)
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey(
        name=name,
        prefix=prefix,
        digest=_digest(pepper, key),
        scopes=scopes,
        policy=policy,
        owner_id=owner_id,
        team=team,
        expires_at=utcnow() + timedelta(days=expires_days) if expires_days else None,
    )
    with session_scope(engine) as session:
        session.add(row)
    return row, key


@dataclass(frozen=True)
class KeyCheck:
    """The outcome of presenting a key: the row if valid, else why not (for the audit)."""

    key: ApiKey | None
    reason: str
    key_id: str | None = None
    team: str | None = None
    """The team the key's requests belong to: its own, else its owner's."""


def verify(
    engine: Engine, pepper: bytes, presented: str, *, now: datetime | None = None
) -> KeyCheck:
    """Check a presented key: known, digest equal, not revoked, not expired, owner enabled."""
    now = now or utcnow()
    if not presented.startswith(KEY_PREFIX) or presented.count("_") < 2:
        return KeyCheck(None, "malformed")
    prefix = presented[len(KEY_PREFIX) :].split("_", 1)[0]
    with session_scope(engine) as session:
        row = session.exec(select(ApiKey).where(ApiKey.prefix == prefix)).first()
        if row is None:
            # Same work as a hit, so timing does not tell whether the prefix exists.
            hmac.compare_digest(_digest(pepper, presented), "0" * 64)
            return KeyCheck(None, "unknown")
        if not hmac.compare_digest(_digest(pepper, presented), row.digest):
            return KeyCheck(None, "wrong_secret", row.id)
        if row.revoked_at is not None:
            return KeyCheck(None, "revoked", row.id)
        if row.expires_at is not None and as_utc(row.expires_at) <= now:
            return KeyCheck(None, "expired", row.id)
        team = row.team
        if row.owner_id is not None:
            owner = session.get(User, row.owner_id)
            if owner is None or owner.disabled:
                return KeyCheck(None, "owner_disabled", row.id)
            team = team or owner.team
        if row.last_used_at is None or now - as_utc(row.last_used_at) > _TOUCH_EVERY:
            row.last_used_at = now
            session.add(row)
        return KeyCheck(row, "ok", row.id, team)


def list_keys(engine: Engine) -> list[ApiKey]:
    """Every key, newest first (digests included; callers show `ApiKeyBase` fields only)."""
    with session_scope(engine) as session:
        return list(session.exec(select(ApiKey).order_by(ApiKey.created_at.desc())))  # type: ignore[attr-defined]


def find(engine: Engine, ref: str) -> ApiKey:
    """The key whose id or prefix is `ref`; NotFound otherwise."""
    with session_scope(engine) as session:
        row = (
            session.get(ApiKey, ref)
            or session.exec(select(ApiKey).where(ApiKey.prefix == ref)).first()
        )
    if row is None:
        raise NotFound(f"no API key '{ref}'", field="key")
    return row


def set_team(engine: Engine, key_id: str, team: str | None) -> str | None:
    """Put the key in `team` (None: its owner's team applies); returns the team it had."""
    team = check_team(team)
    with session_scope(engine) as session:
        row = session.get(ApiKey, key_id)
        if row is None:
            raise NotFound(f"no API key '{key_id}'", field="key")
        old = row.team
        row.team = team
        session.add(row)
    return old


def revoke(engine: Engine, key_id: str) -> bool:
    """Revoke a key at once; False if it was already revoked."""
    with session_scope(engine) as session:
        row = session.get(ApiKey, key_id)
        if row is None:
            raise NotFound(f"no API key '{key_id}'", field="key")
        if row.revoked_at is not None:
            return False
        row.revoked_at = utcnow()
        session.add(row)
    return True


def revoke_owned(engine: Engine, user_id: str) -> list[str]:
    """Revoke every live key a user owns; their ids."""
    now = utcnow()
    with session_scope(engine) as session:
        rows = list(
            session.exec(
                select(ApiKey).where(ApiKey.owner_id == user_id, ApiKey.revoked_at == None)  # noqa: E711
            )
        )
        for row in rows:
            row.revoked_at = now
            session.add(row)
    return [r.id for r in rows]


def public_view(row: ApiKey) -> dict[str, object]:
    """What the admin API and CLI show of a key: never its digest."""
    return {
        "id": row.id,
        "name": row.name,
        "prefix": f"{KEY_PREFIX}{row.prefix}",
        "scopes": list(row.scopes),
        "policy": row.policy,
        "owner_id": row.owner_id,
        "team": row.team,
        "created_at": row.created_at.isoformat(),
        "expires_at": row.expires_at.isoformat() if row.expires_at else None,
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
        "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
    }
