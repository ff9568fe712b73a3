"""External witnesses of checkpoints: an append-only file (ideally on other storage) or syslog.

The witness is what makes restoring an older database copy detectable: the database can be
rolled back, the witness (kept elsewhere, forwarded by syslog) cannot be rolled back with it.
A checkpoint is witnessed after its transaction commits, so the witness never holds a checkpoint
the database does not.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import Protocol

from appliance.audit.checkpoints import Checkpoint

log = logging.getLogger(__name__)

SYSLOG_PREFIX = "appliance-audit-checkpoint: "


class Witness(Protocol):
    """Somewhere outside the database that keeps a copy of every checkpoint."""

    def write(self, checkpoint: Checkpoint) -> None:
        """Record one checkpoint durably."""


class FileWitness:
    """Appends one JSON line per checkpoint to a file (0600, in a directory it creates 0700)
    and fsyncs it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, checkpoint: Checkpoint) -> None:
        """Append and fsync one line."""
        if not self.path.parent.is_dir():
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, (checkpoint.to_json() + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)


class SyslogWitness:
    """Sends each checkpoint to the local syslog socket (facility local0), to be forwarded."""

    def __init__(self, address: str = "/dev/log") -> None:
        self.address = address

    def write(self, checkpoint: Checkpoint) -> None:
        """One datagram per checkpoint: `<134>appliance-audit-checkpoint: {json}`."""
        message = f"<134>{SYSLOG_PREFIX}{checkpoint.to_json()}".encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message, self.address)


class OptionalSyslogWitness(SyslogWitness):
    """Syslog when its socket exists (journald serves `/dev/log` too); silent where there is
    none, as in a container, so the file witness alone stands there."""

    def write(self, checkpoint: Checkpoint) -> None:
        """Send the checkpoint if the socket is there."""
        if os.path.exists(self.address):
            super().write(checkpoint)


class Witnesses:
    """Several witnesses; each gets every checkpoint, one failing does not stop the others."""

    def __init__(self, witnesses: list[Witness]) -> None:
        self.witnesses = witnesses

    def write(self, checkpoint: Checkpoint) -> None:
        """Write to each; the first error is raised after all were tried."""
        failed: OSError | None = None
        for witness in self.witnesses:
            try:
                witness.write(checkpoint)
            except OSError as exc:
                failed = failed or exc
        if failed is not None:
            raise failed


DISABLED = ("", "none")
"""`audit_witness` values that turn the witness off."""


def parts(value: str) -> list[str]:
    """The comma-separated entries of an `audit_witness` setting."""
    if value.strip().lower() in DISABLED:
        return []
    return [part.strip() for part in value.split(",") if part.strip()]


def _one(part: str) -> Witness:
    if part == "syslog":
        return SyslogWitness()
    if part == "syslog?":
        return OptionalSyslogWitness()
    if part.startswith("syslog:"):
        return SyslogWitness(part.removeprefix("syslog:"))
    return FileWitness(Path(part))


def from_setting(value: str) -> Witness | None:
    """The witnesses the `audit_witness` setting names: comma-separated file paths, `syslog`,
    `syslog?` (syslog when `/dev/log` exists) or `syslog:<socket>`; `none` or empty: none."""
    found = [_one(part) for part in parts(value)]
    if not found:
        return None
    return found[0] if len(found) == 1 else Witnesses(found)


def witness_files(value: str) -> list[Path]:
    """The witness files an `audit_witness` setting names (not the syslog entries)."""
    return [Path(part) for part in parts(value) if not part.startswith("syslog")]


def read_checkpoints(path: Path) -> list[Checkpoint]:
    """Every checkpoint in a witness file, a syslog capture, or a single checkpoint JSON file.

    A torn last line (the process died mid-write) is skipped; any other unreadable line is an
    error naming its line number, since a witness that cannot be read must not pass silently.
    """
    text = path.read_text(encoding="utf-8")
    stripped = text.strip()
    if stripped.startswith("{") and "\n" not in stripped:
        return [Checkpoint.from_dict(json.loads(stripped))]
    lines = text.splitlines()
    found: list[Checkpoint] = []
    for number, line in enumerate(lines, start=1):
        if SYSLOG_PREFIX in line:
            line = line.split(SYSLOG_PREFIX, 1)[1]
        elif not line.strip():
            continue
        try:
            found.append(Checkpoint.from_dict(json.loads(line)))
        except (ValueError, TypeError) as exc:
            if number == len(lines) and not text.endswith("\n"):
                log.warning("skipping a torn last line in the witness file")
                continue
            raise ValueError(f"{path}, line {number}: not a checkpoint ({exc})") from exc
    return found


def last_checkpoints(path: Path, *, tail_bytes: int = 65_536) -> list[Checkpoint]:
    """The checkpoints in the last `tail_bytes` of a witness file (the newest ones): what a
    quick check of the chain's tail needs, however long the file has grown."""
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(size - tail_bytes, 0))
        chunk = handle.read().decode("utf-8", errors="replace")
    lines = chunk.splitlines()
    if size > tail_bytes and lines:
        lines = lines[1:]  # the first line is cut
    found: list[Checkpoint] = []
    for line in lines:
        if SYSLOG_PREFIX in line:
            line = line.split(SYSLOG_PREFIX, 1)[1]
        if not line.strip():
            continue
        try:
            found.append(Checkpoint.from_dict(json.loads(line)))
        except (ValueError, TypeError):
            continue  # a torn last line; `read_checkpoints` is the strict reader
    return found
