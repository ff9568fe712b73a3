"""AES-GCM sealing: round trip, binding to the row, tamper detection, the key file's mode."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from appliance.documents.crypto import KEY_FILE, Sealer


def test_round_trip_and_key_file(tmp_path: Path) -> None:
    sealer = Sealer.from_keys_dir(tmp_path / "keys")
    sealed = sealer.seal(b"salary 90,000", bound_to="document:1")
    assert b"salary" not in sealed
    assert sealer.open(sealed, bound_to="document:1") == b"salary 90,000"
    mode = stat.S_IMODE((tmp_path / "keys" / KEY_FILE).stat().st_mode)
    assert mode == 0o600
    # The same key is loaded again, so a restarted app still opens old rows.
    assert Sealer.from_keys_dir(tmp_path / "keys").open(sealed, bound_to="document:1")


def test_ciphertext_moved_to_another_row_does_not_open(tmp_path: Path) -> None:
    sealer = Sealer.from_keys_dir(tmp_path)
    sealed = sealer.seal(b"x", bound_to="document:1")
    with pytest.raises(ValueError, match="does not authenticate"):
        sealer.open(sealed, bound_to="document:2")


def test_tampering_is_detected(tmp_path: Path) -> None:
    sealer = Sealer.from_keys_dir(tmp_path)
    sealed = bytearray(sealer.seal(b"hello", bound_to="d"))
    sealed[-1] ^= 1
    with pytest.raises(ValueError):
        sealer.open(bytes(sealed), bound_to="d")
