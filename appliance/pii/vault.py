"""The pseudonym vault: placeholders out, original values kept encrypted, scoped and expiring.

A pseudonymized value leaves as `<PERSON_1>`; the value itself is stored AES-GCM-encrypted under
the install's vault key, bound (as associated data) to its scope and placeholder, so a row copied
into another scope does not decrypt. A scope is one request or one conversation; restoring only
ever replaces placeholders issued in the caller's own scope. Lookups of known values use an HMAC
digest, never the plaintext. Unique constraints on (scope, placeholder) and (scope, digest) make
concurrent requests in one conversation agree on one mapping: a loser of a race re-reads and
retries.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    and_,
    delete,
    select,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from appliance.pii.actions import PLACEHOLDER

log = logging.getLogger(__name__)
metadata = MetaData()
pseudonyms = Table(
    "pii_pseudonyms",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("scope", String(200), nullable=False, index=True),
    Column("placeholder", String(80), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("nonce", LargeBinary(12), nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("scope", "placeholder", name="uq_pii_pseudonyms_scope_placeholder"),
    UniqueConstraint("scope", "digest", name="uq_pii_pseudonyms_scope_digest"),
)


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes for timezone-aware columns.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class PseudonymVault:
    """Encrypted pseudonym storage shared by all requests of one app."""

    def __init__(self, engine: Engine, *, key: bytes, digest_key: bytes) -> None:
        self._engine = engine
        self._aead = AESGCM(key)
        self._digest_key = digest_key

    def scope(self, name: str, *, ttl: timedelta) -> PseudonymScope:
        """The scope `name` (e.g. `req:<id>` or `conv:<actor>:<id>`), entries living `ttl`."""
        return PseudonymScope(self, name, ttl)

    def digest(self, scope: str, entity: str, value: str) -> str:
        """Lookup key for a value: HMAC, so the table never holds plaintext or a plain hash."""
        normal = " ".join(value.split()).casefold()
        message = "\x1f".join((scope, entity, normal)).encode()
        return hmac.new(self._digest_key, message, hashlib.sha256).hexdigest()

    def seal(self, scope: str, placeholder: str, value: str) -> tuple[bytes, bytes]:
        """Encrypt `value`, bound to its scope and placeholder."""
        nonce = os.urandom(12)
        aad = f"{scope}\x1f{placeholder}".encode()
        return nonce, self._aead.encrypt(nonce, value.encode(), aad)

    def open_sealed(self, scope: str, placeholder: str, nonce: bytes, ciphertext: bytes) -> str:
        """Decrypt a stored value (fails if the row was moved to another scope or placeholder)."""
        aad = f"{scope}\x1f{placeholder}".encode()
        return self._aead.decrypt(nonce, ciphertext, aad).decode()

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A transaction on the vault's database."""
        with self._engine.begin() as connection:
            yield connection

    def purge_expired(self) -> int:
        """Delete expired entries everywhere; returns how many."""
        with self.connect() as conn:
            result = conn.execute(delete(pseudonyms).where(pseudonyms.c.expires_at <= _now()))
            return int(result.rowcount or 0)


class PseudonymScope:
    """Pseudonyms of one request or conversation."""

    def __init__(self, vault: PseudonymVault, name: str, ttl: timedelta) -> None:
        self.vault = vault
        self.name = name
        self.ttl = ttl
        self._by_digest: dict[str, str] = {}
        self._numbers: dict[str, int] = {}
        self._loaded = False  # the scope's stored entries have been read

    def _refresh(self, conn: Connection) -> None:
        conn.execute(
            delete(pseudonyms).where(
                and_(pseudonyms.c.scope == self.name, pseudonyms.c.expires_at <= _now())
            )
        )
        rows = conn.execute(
            select(pseudonyms.c.placeholder, pseudonyms.c.digest).where(
                pseudonyms.c.scope == self.name
            )
        )
        for placeholder, digest in rows:
            self._by_digest[digest] = placeholder
            match = PLACEHOLDER.fullmatch(placeholder)
            if match:
                entity, number = match.group(1), int(match.group(2))
                self._numbers[entity] = max(self._numbers.get(entity, 0), number)

    def placeholder(self, entity: str, value: str) -> str:
        """The scope's placeholder for `value`, storing the encrypted value when it is new.

        One transaction per new value: the scope's stored entries are read in the first one
        (and again after a conflict), and the insert relies on the unique (scope, digest) and
        (scope, placeholder) constraints to notice a concurrent request of the same scope."""
        digest = self.vault.digest(self.name, entity, value)
        for _attempt in range(20):
            if digest in self._by_digest:
                return self._by_digest[digest]
            try:
                with self.vault.connect() as conn:
                    if not self._loaded:
                        self._refresh(conn)
                        self._loaded = True
                        if digest in self._by_digest:
                            return self._by_digest[digest]
                    number = self._numbers.get(entity, 0) + 1
                    placeholder = f"<{entity}_{number}>"
                    nonce, ciphertext = self.vault.seal(self.name, placeholder, value)
                    now = _now()
                    conn.execute(
                        pseudonyms.insert().values(
                            scope=self.name,
                            placeholder=placeholder,
                            digest=digest,
                            nonce=nonce,
                            ciphertext=ciphertext,
                            expires_at=now + self.ttl,
                            created_at=now,
                        )
                    )
            except IntegrityError:
                # A concurrent request took this number or stored this value: re-read.
                self._loaded = False
                continue
            self._by_digest[digest] = placeholder
            self._numbers[entity] = number
            return placeholder
        raise RuntimeError(f"could not allocate a pseudonym in scope {self.name}")

    def restore(self, text: str) -> tuple[str, int]:
        """Replace this scope's placeholders in `text` by their values; others stay as they are."""
        restored, counts = self.restore_counted(text)
        return restored, sum(counts.values())

    def restore_counted(self, text: str) -> tuple[str, Counter[str]]:
        """As `restore`, with how many placeholders of each entity type were restored (for the
        receipt: what the caller got back, never the values)."""
        wanted = {m.group(0) for m in PLACEHOLDER.finditer(text)}
        if not wanted:
            return text, Counter()
        with self.vault.connect() as conn:
            rows = conn.execute(
                select(
                    pseudonyms.c.placeholder,
                    pseudonyms.c.nonce,
                    pseudonyms.c.ciphertext,
                    pseudonyms.c.expires_at,
                ).where(
                    and_(
                        pseudonyms.c.scope == self.name,
                        pseudonyms.c.placeholder.in_(sorted(wanted)),
                    )
                )
            ).all()
        now = _now()
        values: dict[str, str] = {}
        for placeholder, nonce, ciphertext, expires_at in rows:
            if _aware(expires_at) <= now:
                continue
            try:
                values[placeholder] = self.vault.open_sealed(
                    self.name, placeholder, nonce, ciphertext
                )
            except InvalidTag:
                # A row altered or moved from another scope: keep the placeholder (fail closed).
                log.warning("pseudonym vault entry failed authentication; not restored")
        counts: Counter[str] = Counter()

        def swap(match: re.Match[str]) -> str:
            token = match.group(0)
            if token in values:
                counts[match.group(1)] += 1
                return values[token]
            return token

        return PLACEHOLDER.sub(swap, text), counts
