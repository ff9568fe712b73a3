"""The `audit_witness` setting: on by default, comma lists, `none`."""

from __future__ import annotations

from pathlib import Path

from appliance.audit.witness import (
    FileWitness,
    OptionalSyslogWitness,
    Witnesses,
    from_setting,
    witness_files,
)
from appliance.config import Settings


def test_the_default_is_a_private_file_plus_syslog_when_present(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)

    witness = from_setting(settings.audit_witness)

    assert isinstance(witness, Witnesses)
    kinds = [type(w) for w in witness.witnesses]
    assert kinds == [FileWitness, OptionalSyslogWitness]
    assert witness_files(settings.audit_witness) == [
        (tmp_path / "witness" / "audit-checkpoints.jsonl").resolve()
    ]


def test_none_and_empty_turn_the_witness_off() -> None:
    assert from_setting("none") is None
    assert from_setting("") is None
    assert witness_files("none") == []
