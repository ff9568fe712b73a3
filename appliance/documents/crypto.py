"""AES-GCM sealing of content kept at rest (documents, batch inputs and results).

Each value is `nonce (12 bytes) || ciphertext+tag`, sealed with the install's content key and
bound to its row by associated data, so a ciphertext copied onto another row does not open.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from appliance.pii.keys import load_or_create_key

KEY_FILE = "content.key"
"""Name of the key file in `<data_dir>/keys/` (created 0600 on first use)."""


class Sealer:
    """Encrypts and decrypts content with one AES-256-GCM key."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    @classmethod
    def from_keys_dir(cls, keys_dir: Path) -> Sealer:
        """The sealer for the key in `keys_dir`, creating the key if it does not exist."""
        return cls(load_or_create_key(keys_dir / KEY_FILE))

    def seal(self, plaintext: bytes, *, bound_to: str) -> bytes:
        """Encrypt `plaintext` for the row named `bound_to`."""
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext, bound_to.encode())

    def open(self, sealed: bytes, *, bound_to: str) -> bytes:
        """Decrypt; raises `ValueError` when the value was altered or belongs to another row."""
        try:
            return self._aead.decrypt(sealed[:12], sealed[12:], bound_to.encode())
        except InvalidTag:
            raise ValueError(f"sealed content of {bound_to} does not authenticate") from None
