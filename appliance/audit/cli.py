"""`appliance audit verify | export | purge | pubkey | checkpoint`: the trail from the shell.

Each command is audited like its API twin (`audit.verified`, `audit.exported`, `audit.purged`);
the actor is `cli:<user>` of the operating-system account that ran it.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.config import Settings
from appliance.errors import AuditKeyError, InvalidInput

if TYPE_CHECKING:
    # Deferred: the database and key libraries load only when a command runs.
    from appliance.audit.store import AuditLog


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"[:200]
    except (KeyError, OSError):
        return "cli"


@contextmanager
def _audit_log(settings: Settings) -> Iterator[AuditLog]:
    # Deferred: the database and key libraries load only when a command runs.
    from appliance.audit.store import AuditLog
    from appliance.db.engine import ensure_migrated, make_engine

    engine = make_engine(settings.resolved_database_url)
    try:
        ensure_migrated(engine)
        yield AuditLog.from_settings(settings, engine)
    finally:
        engine.dispose()


def cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    """Verify the chain, the checkpoints, the witness and any `--checkpoint` files."""
    # Deferred: the database and key libraries load only when a command runs.
    from appliance.audit.keys import VerifyKey
    from appliance.audit.verify import verify_and_record
    from appliance.audit.witness import read_checkpoints

    extra = []
    for path in args.checkpoint or []:
        try:
            extra += read_checkpoints(Path(path))
        except (OSError, ValueError) as exc:
            print(f"error: checkpoint file {path}: {exc}", file=sys.stderr)
            return 2
    key = VerifyKey.from_pem(Path(args.pubkey).read_bytes()) if args.pubkey else None
    if key is None and not settings.resolved_audit_key_file.exists():
        raise AuditKeyError(
            f"no signing key at {settings.resolved_audit_key_file}: pass --pubkey FILE"
        )
    with _audit_log(settings) as audit:
        report = verify_and_record(
            audit, witness_setting=settings.audit_witness, extra=extra, key=key, actor=_actor()
        )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0 if report.ok else 1


def _time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInput(f"--{name}: not an ISO 8601 time ({value})", field=name) from exc


def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    """Stream matching events as JSONL or CSV to `--output` or standard output."""
    # Deferred: the database and key libraries load only when a command runs.
    from appliance.audit.export import EventFilter, start_export

    event_filter = EventFilter(
        since=_time(args.since, "since"),
        until=_time(args.until, "until"),
        actor=args.actor,
        action=args.action,
    )
    with _audit_log(settings) as audit:
        export = start_export(audit, fmt=args.format, event_filter=event_filter, actor=_actor())
        if args.output:
            with open(args.output, "wb") as out:
                for chunk in export.content:
                    out.write(chunk)
        else:
            for chunk in export.content:
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
    print(f"exported events up to seq {export.through_seq}", file=sys.stderr)
    return 0


def cmd_purge(settings: Settings, args: argparse.Namespace) -> int:
    """Remove events older than `--older-than` days (default: setting audit_retention_days)."""
    # Deferred: the database and key libraries load only when a command runs.
    from appliance.audit.retention import purge

    days = args.older_than if args.older_than is not None else settings.audit_retention_days
    if days < 1:
        print(
            "error: give --older-than DAYS (audit_retention_days is 0: keep forever)",
            file=sys.stderr,
        )
        return 2
    with _audit_log(settings) as audit:
        result = purge(audit, older_than_days=days, actor=_actor())
    if result.purged == 0:
        print(f"nothing older than {days} days")
    else:
        print(f"purged {result.purged} events through seq {result.through_seq}; anchor signed")
    return 0


def cmd_pubkey(settings: Settings, _: argparse.Namespace) -> int:
    """Print the checkpoint public key (PEM) on stdout and its key id on stderr."""
    # Deferred: the database and key libraries load only when a command runs.
    from appliance.audit.keys import load_or_create

    key = load_or_create(settings.resolved_audit_key_file).verify_key
    sys.stdout.write(key.pem())
    print(f"key id {key.key_id} (Ed25519)", file=sys.stderr)
    return 0


def cmd_checkpoint(settings: Settings, _: argparse.Namespace) -> int:
    """Sign a checkpoint of the current head now and send it to the witness."""
    with _audit_log(settings) as audit:
        checkpoint = audit.checkpoint_now_sync()
    print(checkpoint.to_json())
    return 0


def register(sub: Any) -> None:
    """Add `audit ...` to the CLI's subcommands."""
    audit = sub.add_parser("audit", help="audit trail commands").add_subparsers(
        dest="audit_cmd", required=True
    )
    verify = audit.add_parser("verify", help="verify the hash chain and signed checkpoints")
    verify.add_argument(
        "--checkpoint",
        action="append",
        metavar="FILE",
        help="a witness file or checkpoint JSON to check against (repeatable)",
    )
    verify.add_argument("--pubkey", metavar="FILE", help="verify with this PEM public key")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(func=cmd_verify)
    export = audit.add_parser("export", help="export events as JSONL or CSV (streamed)")
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    export.add_argument("--since", help="ISO 8601 time with zone, inclusive")
    export.add_argument("--until", help="ISO 8601 time with zone, exclusive")
    export.add_argument("--actor", help="only this actor (user or API key id)")
    export.add_argument("--action", help="only this event, or a family such as auth.*")
    export.add_argument("--output", metavar="FILE", help="write here instead of stdout")
    export.set_defaults(func=cmd_export)
    purge = audit.add_parser("purge", help="remove events older than the retention period")
    purge.add_argument("--older-than", type=int, metavar="DAYS")
    purge.set_defaults(func=cmd_purge)
    audit.add_parser("pubkey", help="print the checkpoint public key (PEM)").set_defaults(
        func=cmd_pubkey
    )
    audit.add_parser("checkpoint", help="sign a checkpoint of the head now").set_defaults(
        func=cmd_checkpoint
    )
