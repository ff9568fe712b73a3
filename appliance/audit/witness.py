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
    """Appends one JSON line per checkpoint to a file and fsyncs it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, checkpoint: Checkpoint) -> None:
        """Append and fsync one line."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
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


def from_setting(value: str) -> Witness | None:
    """The witness the `audit_witness` setting names: empty, `syslog[:socket]`, or a file path."""
    if not value:
        return None
    if value == "syslog":
        return SyslogWitness()
    if value.startswith("syslog:"):
        return SyslogWitness(value.removeprefix("syslog:"))
    return FileWitness(Path(value))


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
