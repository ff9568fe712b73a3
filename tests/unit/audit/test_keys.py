"""The checkpoint signing key: created once with mode 0600, refused when others can read it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from appliance.audit.keys import VerifyKey, load_or_create
from appliance.errors import AuditKeyError


def test_the_key_is_created_with_mode_0600_and_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "audit_signing.pem"

    first = load_or_create(path)
    again = load_or_create(path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.verify_key.key_id == again.verify_key.key_id
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit_signing.pem"
    load_or_create(path)
    path.chmod(0o644)

    with pytest.raises(AuditKeyError, match="chmod 600"):
        load_or_create(path)


def test_signatures_verify_only_for_the_signed_bytes_and_the_right_key(tmp_path: Path) -> None:
    key = load_or_create(tmp_path / "a.pem")
    other = load_or_create(tmp_path / "b.pem")
    signature = key.sign(b"checkpoint")

    assert key.verify_key.verify(signature, b"checkpoint")
    assert not key.verify_key.verify(signature, b"checkpoinT")
    assert not other.verify_key.verify(signature, b"checkpoint")
    assert not key.verify_key.verify("not base64!", b"checkpoint")


def test_the_public_key_round_trips_through_pem(tmp_path: Path) -> None:
    key = load_or_create(tmp_path / "a.pem").verify_key

    loaded = VerifyKey.from_pem(key.pem())

    assert loaded.key_id == key.key_id
    assert key.pem().startswith("-----BEGIN PUBLIC KEY-----")
    with pytest.raises(AuditKeyError):
        VerifyKey.from_pem("not a key")
