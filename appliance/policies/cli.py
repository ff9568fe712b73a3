"""`appliance policy ...`: check and test policy files, manage stored versions.

appliance policy check FILE...          validate files (exit 1 naming file, line, field)
appliance policy test NAME < text       findings and the transformed text under NAME
appliance policy list | history NAME
appliance policy import FILE [--comment C]   store a new version (not activated)
appliance policy activate NAME VERSION | rollback NAME
appliance policy assign key|team|task TARGET NAME|--remove
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from appliance.audit.store import AuditLog
from appliance.config import Settings
from appliance.db.engine import ensure_migrated, make_engine
from appliance.errors import ApplianceError
from appliance.pii.actions import ActionContext, PlaceholderBook, transform
from appliance.pii.detector import DetectionSpec, load_detector
from appliance.pii.keys import load_or_create_key
from appliance.policies.loader import load_directory, load_policy_file, parse_policy
from appliance.policies.schema import LoadedPolicy
from appliance.policies.service import ChangedBy, PolicyService
from appliance.policies.store import PolicyStore


def _actor(args: argparse.Namespace) -> str:
    return f"cli:{getattr(args, 'by', None) or getpass.getuser()}"


def _by(args: argparse.Namespace) -> ChangedBy:
    # Whoever can run the CLI on the box administers it; there is no address to record.
    return ChangedBy(_actor(args), "admin")


def _store(settings: Settings) -> tuple[PolicyStore, AuditLog]:
    engine = make_engine(settings.resolved_database_url)
    ensure_migrated(engine)
    store = PolicyStore(engine, default=settings.default_policy)
    store.import_directory(settings.policies_dir)
    return store, AuditLog(engine)


def cmd_check(_: Settings, args: argparse.Namespace) -> int:
    """Validate policy files; print each one's version or its first error."""
    failed = 0
    for name in args.files:
        try:
            loaded = load_policy_file(Path(name))
        except ApplianceError as exc:
            failed += 1
            print(f"FAIL {exc.message}")
        except OSError as exc:
            failed += 1
            print(f"FAIL {name}: {exc.strerror}")
        else:
            print(f"ok   {name}: {loaded.ref}")
    return 1 if failed else 0


def _policy_for_test(settings: Settings, name: str) -> LoadedPolicy:
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return parse_policy(candidate.read_text(encoding="utf-8"), source=str(candidate))
    try:
        return _store(settings)[0].get(name)
    except ApplianceError:
        files = load_directory(settings.policies_dir)
        if name not in files:
            raise
        return files[name]


def cmd_test(settings: Settings, args: argparse.Namespace) -> int:
    """Run a policy over stdin: findings, then the text as a model would receive it."""
    loaded = _policy_for_test(settings, args.name)
    text = sys.stdin.read()
    detector = load_detector(settings.spacy_model, settings.phone_regions)
    findings = detector.analyze(text, DetectionSpec.for_policy(loaded.policy))
    context = ActionContext(
        PlaceholderBook(), load_or_create_key(settings.data_dir / "keys" / "pii-hash.key")
    )
    # Pseudonyms need the vault of a running request; a dry run shows them as redactions.
    policy = loaded.policy.model_copy(
        update={
            "entities": [
                r.model_copy(update={"action": "redact"}) if r.action == "pseudonymize" else r
                for r in loaded.policy.entities
            ]
        }
    )
    transformed = transform(text, findings, policy, context)
    print(f"policy {loaded.ref}")
    for item in transformed.applied:
        f = item.finding
        rule = loaded.policy.rule_for(f.entity)
        action = rule.action if rule else item.action
        print(f"  {f.entity:<22} {f.start:>6}-{f.end:<6} score {f.score:.2f}  {action}")
    verdict = "BLOCKED" if transformed.blocked else "allowed"
    print(f"request would be {verdict}; text sent to a model:")
    print(transformed.text)
    return 0


def cmd_list(settings: Settings, _: argparse.Namespace) -> int:
    """Policies with their active version."""
    store, _audit = _store(settings)
    for name in store.names():
        active = next(v for v in store.history(name) if v.active)
        print(f"{name:<16} v{active.number:<4} {active.version}  {active.author}")
    return 0


def cmd_history(settings: Settings, args: argparse.Namespace) -> int:
    """Every version of one policy, newest first."""
    store, _audit = _store(settings)
    for v in store.history(args.name):
        mark = "*" if v.active else " "
        print(
            f"{mark} v{v.number:<4} {v.version}  {v.created_at:%Y-%m-%d %H:%M}  "
            f"{v.author}  {v.comment}"
        )
    return 0


def _changes(settings: Settings) -> PolicyService:
    store, audit = _store(settings)
    return PolicyService(store, audit)


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    """Store a file as a new version of the policy it names (activation is separate)."""
    changes = _changes(settings)
    text = Path(args.file).read_text(encoding="utf-8")
    name = parse_policy(text, source=args.file).policy.name
    version = changes.create_version_sync(name, text, by=_by(args), comment=args.comment or "")
    print(f"{name} v{version.number} {version.version} stored (not active)")
    return 0


def cmd_activate(settings: Settings, args: argparse.Namespace) -> int:
    """Make a version the one requests run under."""
    loaded = _changes(settings).activate_sync(args.name, args.version, by=_by(args))
    print(f"{loaded.ref} is active")
    return 0


def cmd_rollback(settings: Settings, args: argparse.Namespace) -> int:
    """Return to the previously active version."""
    loaded = _changes(settings).rollback_sync(args.name, by=_by(args))
    print(f"{loaded.ref} is active again")
    return 0


def cmd_assign(settings: Settings, args: argparse.Namespace) -> int:
    """Assign a policy to an API key, team or task (or remove the assignment)."""
    policy = None if args.remove else args.policy
    if policy is None and not args.remove:
        print("error: name a policy or pass --remove", file=sys.stderr)
        return 1
    allowed = [n for n in (args.allow or "").split(",") if n] if args.allow is not None else None
    _changes(settings).assign_sync(args.kind, args.target, policy, by=_by(args), allowed=allowed)
    print(f"{args.kind} {args.target}: {policy or 'assignment removed'}")
    return 0


def add_commands(sub: Any) -> None:
    """Register `policy ...` on the main parser."""
    policy = sub.add_parser("policy", help="policy files and versions").add_subparsers(
        dest="policy_cmd", required=True
    )
    check = policy.add_parser("check", help="validate policy files")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.set_defaults(func=cmd_check)
    test = policy.add_parser("test", help="run a policy (name or file) over stdin")
    test.add_argument("name")
    test.set_defaults(func=cmd_test)
    policy.add_parser("list", help="policies and their active versions").set_defaults(func=cmd_list)
    history = policy.add_parser("history", help="versions of one policy")
    history.add_argument("name")
    history.set_defaults(func=cmd_history)
    imp = policy.add_parser("import", help="store a file as a new version (not activated)")
    imp.add_argument("file")
    imp.add_argument("--comment", default="")
    imp.add_argument("--by", help="author (default: the OS user)")
    imp.set_defaults(func=cmd_import)
    activate = policy.add_parser("activate", help="activate a version (number or hash)")
    activate.add_argument("name")
    activate.add_argument("version")
    activate.add_argument("--by", help="who activates (default: the OS user)")
    activate.set_defaults(func=cmd_activate)
    rollback = policy.add_parser("rollback", help="re-activate the previous version")
    rollback.add_argument("name")
    rollback.add_argument("--by", help="who rolls back (default: the OS user)")
    rollback.set_defaults(func=cmd_rollback)
    assign = policy.add_parser("assign", help="assign a policy to a key, team or task")
    assign.add_argument("kind", choices=["key", "team", "task"])
    assign.add_argument("target")
    assign.add_argument("policy", nargs="?")
    assign.add_argument("--remove", action="store_true")
    assign.add_argument(
        "--allow",
        metavar="NAMES",
        help="comma-separated policies a request under this assignment may also name "
        "(the assigned one is a floor; '' clears the list)",
    )
    assign.add_argument("--by", help="who assigns (default: the OS user)")
    assign.set_defaults(func=cmd_assign)
