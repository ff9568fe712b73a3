"""The Ed25519 key that signs audit checkpoints.

Generated once into the data directory with mode 0600 (created exclusively, so two processes
starting together agree on one key). The public key is what an auditor keeps outside the box.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from appliance.errors import AuditKeyError


def key_id_of(public: Ed25519PublicKey) -> str:
    """A short, stable name of a public key: SHA-256 of its raw bytes, first 16 hex digits."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class VerifyKey:
    """A public key that checks checkpoint signatures."""

    public: Ed25519PublicKey

    @property
    def key_id(self) -> str:
        """See `key_id_of`."""
        return key_id_of(self.public)

    def pem(self) -> str:
        """The public key as PEM (SubjectPublicKeyInfo), as `appliance audit pubkey` prints it."""
        return self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def verify(self, signature_b64: str, message: bytes) -> bool:
        """Whether `signature_b64` is this key's signature of `message`."""
        try:
            self.public.verify(base64.b64decode(signature_b64, validate=True), message)
        except (InvalidSignature, ValueError):
            return False
        return True

    @classmethod
    def from_pem(cls, text: str | bytes) -> VerifyKey:
        """Load a PEM public key (for verifying with only what the auditor keeps)."""
        data = text.encode() if isinstance(text, str) else text
        try:
            public = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise AuditKeyError(f"not a PEM public key ({exc})") from exc
        if not isinstance(public, Ed25519PublicKey):
            raise AuditKeyError("the public key is not an Ed25519 key")
        return cls(public)


@dataclass(frozen=True)
class SigningKey:
    """The private key of this appliance's checkpoints."""

    private: Ed25519PrivateKey

    @property
    def verify_key(self) -> VerifyKey:
        """The matching public key."""
        return VerifyKey(self.private.public_key())

    def sign(self, message: bytes) -> str:
        """Base64 signature of `message`."""
        return base64.b64encode(self.private.sign(message)).decode()


def _write_new_key(path: Path) -> None:
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        # A hard link appears whole or not at all, and fails if another process was first:
        # then that process's key wins and this one is discarded.
        os.link(temporary, path)
    finally:
        temporary.unlink()


def load_or_create(path: Path) -> SigningKey:
    """The signing key at `path`, generated (mode 0600) when the file does not exist."""
    if not path.exists():
        with contextlib.suppress(FileExistsError):
            _write_new_key(path)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise AuditKeyError(
            f"the audit signing key {path} is readable by others (mode {mode:o}); "
            "run `chmod 600` on it"
        )
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except ValueError as exc:
        raise AuditKeyError(f"the audit signing key {path} cannot be read ({exc})") from exc
    if not isinstance(private, Ed25519PrivateKey):
        raise AuditKeyError(f"the audit signing key {path} is not an Ed25519 key")
    return SigningKey(private)
