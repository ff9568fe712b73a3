"""Per-install secrets in the data directory, created on first use with mode 0600."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def load_or_create_key(path: Path, size: int = 32) -> bytes:
    """The key stored at `path`, creating it atomically (owner-only) if it does not exist."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = secrets.token_bytes(size)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_or_create_key(path, size)  # another process created it first
        with os.fdopen(fd, "wb") as handle:
            handle.write(key)
        return key
    if len(data) != size:
        raise ValueError(f"key file {path} has {len(data)} bytes, expected {size}")
    return data
