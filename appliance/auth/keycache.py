"""API keys this process has verified, so a request with a known key skips the database lookup.

An entry is the principal a key authenticated as, filed under the key's HMAC digest (never the
key). It is dropped, and the key checked in the database again, when:

- the `auth` change counter moved (`appliance.db.counters`): a key was revoked, re-scoped,
  re-teamed or deleted, or an owner disabled or moved, in this process, another replica or by
  hand in the database; the counter is read on every request, so such a change holds at once;
- the key's own expiry passed;
- `recheck` seconds passed since it was verified (the check writes the key's `last_used_at`, at
  most once a minute, so a cached key still shows when it was last used).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from appliance.auth.accounts import as_utc
from appliance.auth.roles import Principal
from appliance.db import counters
from appliance.db.models import utcnow


@dataclass(frozen=True)
class _Entry:
    principal: Principal
    expires_at: datetime | None
    recheck_at: float


class KeyCache:
    """Verified keys of this process, valid while the `auth` counter stays where it was."""

    def __init__(self, engine: Engine, *, recheck_s: float = 60.0) -> None:
        self._recheck_s = recheck_s
        self._entries: counters.CounterMemo[str, _Entry] = counters.CounterMemo(engine, "auth")

    def version(self) -> int:
        """Read the counter (one indexed read) and drop every entry if it moved; returns it.

        Read before the key is looked up or verified, and passed back to `put`: an entry
        verified against older rows than the counter says is then never kept."""
        return self._entries.version()

    def get(self, digest: str, *, version: int) -> Principal | None:
        """The principal of a key verified under `version`, if still fresh and unexpired."""
        entry = self._entries.get(digest, version=version)
        if entry is None:
            return None
        if time.monotonic() >= entry.recheck_at or (
            entry.expires_at is not None and as_utc(entry.expires_at) <= utcnow()
        ):
            return None
        return entry.principal

    def put(
        self, digest: str, principal: Principal, *, expires_at: datetime | None, version: int
    ) -> None:
        """Keep a key verified after the counter was read as `version` (see `version()`)."""
        entry = _Entry(principal, expires_at, time.monotonic() + self._recheck_s)
        self._entries.put(digest, entry, version=version)
