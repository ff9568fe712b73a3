"""`appliance users ...` and `appliance keys ...`: identity administration from the shell.

Every command is audited with actor `cli:<os user>`. `keys create` prints the key alone on the last
line of stdout, so scripts can take it with `tail -n 1`.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from appliance.audit.store import AuditLog
from appliance.auth import accounts, apikeys
from appliance.auth.identity import Caller, Identity
from appliance.auth.roles import ROLES, SCOPES
from appliance.config import Settings
from appliance.db.engine import ensure_migrated, make_engine
from appliance.policies.store import PolicyStore


def _identity(settings: Settings) -> Identity:
    engine = make_engine(settings.resolved_database_url)
    ensure_migrated(engine)
    return Identity(settings, engine, AuditLog.from_settings(settings, engine))


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"[:200]
    except Exception:
        return "cli"


_CALLER = Caller(source="cli")


def cmd_users_create(settings: Settings, args: argparse.Namespace) -> int:
    """Create a local account; prints its initial password once."""
    identity = _identity(settings)
    user, password = identity.create_user_sync(
        username=args.username,
        role=args.role,
        password=None,
        team=args.team,
        actor=_actor(),
        caller=_CALLER,
    )
    team = f", team {user.team}" if user.team else ""
    print(f"created {user.username} ({user.role}{team}); change the password at first sign-in")
    print(password)
    return 0


def cmd_users_list(settings: Settings, _: argparse.Namespace) -> int:
    """Every account with role and state."""
    identity = _identity(settings)
    print(f"{'USERNAME':<24} {'ROLE':<8} {'TEAM':<16} {'STATE':<9} {'SSO':<4} LAST SIGN-IN")
    for user in accounts.list_users(identity.engine):
        state = "disabled" if user.disabled else "active"
        last = user.last_login_at.isoformat(timespec="minutes") if user.last_login_at else "-"
        sso = "yes" if user.oidc_subject else "no"
        team = user.team or "-"
        print(f"{user.username:<24} {user.role:<8} {team:<16} {state:<9} {sso:<4} {last}")
    return 0


def cmd_users_disable(settings: Settings, args: argparse.Namespace) -> int:
    """Disable an account; its sessions end and its keys are revoked at once."""
    identity = _identity(settings)
    user = identity.disable_sync(args.username, actor=_actor(), caller=_CALLER)
    print(f"disabled {user.username}; sessions ended and keys revoked")
    return 0


def cmd_users_set_role(settings: Settings, args: argparse.Namespace) -> int:
    """Change an account's role; its sessions end so the new rights apply at once."""
    identity = _identity(settings)
    user = identity.set_role_sync(args.username, args.role, actor=_actor(), caller=_CALLER)
    print(f"{user.username} is now {user.role}")
    return 0


def cmd_users_set_reviewer(settings: Settings, args: argparse.Namespace) -> int:
    """Grant or withdraw the reviewer permission of a staff account; its sessions end."""
    identity = _identity(settings)
    grant = args.state == "on"
    user = identity.set_reviewer_sync(args.username, grant, actor=_actor(), caller=_CALLER)
    print(f"{user.username} is {'now' if user.reviewer else 'no longer'} a reviewer")
    return 0


def cmd_users_set_team(settings: Settings, args: argparse.Namespace) -> int:
    """Put an account in a team (`--clear`: no team); its policy assignment applies."""
    identity = _identity(settings)
    team = None if args.clear else args.team
    user = identity.set_team_sync(args.username, team, actor=_actor(), caller=_CALLER)
    print(
        f"{user.username} is in team {user.team}" if user.team else f"{user.username} has no team"
    )
    return 0


def cmd_keys_create(settings: Settings, args: argparse.Namespace) -> int:
    """Create an API key; the key is the last line of stdout and is never shown again."""
    identity = _identity(settings)
    if args.policy is not None:
        PolicyStore(identity.engine, default=settings.default_policy).get(args.policy)
    row, key = identity.create_key_sync(
        name=args.name,
        scopes=apikeys.parse_scopes(args.scopes),
        policy=args.policy,
        expires_days=args.expires,
        owner_id=None,
        actor=_actor(),
        caller=_CALLER,
        team=args.team,
    )
    expiry = row.expires_at.date().isoformat() if row.expires_at else "never"
    print(
        f"created key {row.name} (id {row.id}, scopes {','.join(row.scopes)}, expires {expiry}); "
        "store it now, it is not shown again:",
        file=sys.stderr,
    )
    print(key)
    return 0


def cmd_keys_list(settings: Settings, _: argparse.Namespace) -> int:
    """Every key: prefix, name, scopes, state, last use (never the key)."""
    identity = _identity(settings)
    print(
        f"{'ID':<32} {'PREFIX':<12} {'NAME':<20} {'SCOPES':<24} {'TEAM':<16} {'STATE':<8} LAST USED"
    )
    for row in apikeys.list_keys(identity.engine):
        view = apikeys.public_view(row)
        state = "revoked" if row.revoked_at else "active"
        print(
            f"{row.id:<32} {view['prefix']!s:<12} {row.name:<20} {','.join(row.scopes):<24} "
            f"{row.team or '-':<16} {state:<8} {view['last_used_at'] or '-'}"
        )
    return 0


def cmd_keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    """Revoke a key (by id or prefix) at once."""
    identity = _identity(settings)
    ref = args.key.removeprefix(apikeys.KEY_PREFIX)
    row = identity.revoke_key_sync(ref, actor=_actor(), caller=_CALLER)
    print(f"revoked key {row.name} ({row.id})")
    return 0


def cmd_keys_set_team(settings: Settings, args: argparse.Namespace) -> int:
    """Put a key (by id or prefix) in a team (`--clear`: its owner's team applies)."""
    identity = _identity(settings)
    ref = args.key.removeprefix(apikeys.KEY_PREFIX)
    team = None if args.clear else args.team
    row = identity.set_key_team_sync(ref, team, actor=_actor(), caller=_CALLER)
    print(
        f"key {row.name} ({row.id}) is in team {row.team}"
        if row.team
        else f"key {row.name} ({row.id}) has no team of its own"
    )
    return 0


def _team_choice(parser: argparse.ArgumentParser) -> None:
    choice = parser.add_mutually_exclusive_group(required=True)
    choice.add_argument("--team", help="the team (its policy assignment applies)")
    choice.add_argument("--clear", action="store_true", help="remove the team")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `users` and `keys` on the CLI's subparsers."""
    users = sub.add_parser("users", help="local accounts").add_subparsers(
        dest="users_cmd", required=True
    )
    create = users.add_parser("create", help="create a local account (prints its password)")
    create.add_argument("username")
    create.add_argument("--role", choices=ROLES, default="staff")
    create.add_argument("--team", help="the account's team (its policy assignment applies)")
    create.set_defaults(func=cmd_users_create)
    users.add_parser("list", help="list accounts").set_defaults(func=cmd_users_list)
    disable = users.add_parser("disable", help="disable an account, ending its sessions and keys")
    disable.add_argument("username")
    disable.set_defaults(func=cmd_users_disable)
    set_role = users.add_parser("set-role", help="change an account's role")
    set_role.add_argument("username")
    set_role.add_argument("role", choices=ROLES)
    set_role.set_defaults(func=cmd_users_set_role)
    set_reviewer = users.add_parser(
        "set-reviewer", help="grant (on) or withdraw (off) a staff account's reviewer permission"
    )
    set_reviewer.add_argument("username")
    set_reviewer.add_argument("state", choices=("on", "off"))
    set_reviewer.set_defaults(func=cmd_users_set_reviewer)
    set_team = users.add_parser("set-team", help="put an account in a team (or --clear)")
    set_team.add_argument("username")
    _team_choice(set_team)
    set_team.set_defaults(func=cmd_users_set_team)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_cmd", required=True)
    kc = keys.add_parser("create", help="create an API key (printed alone on the last line)")
    kc.add_argument("--name", required=True)
    kc.add_argument("--scopes", required=True, help=f"comma-separated: {','.join(SCOPES)}")
    kc.add_argument("--policy", help="policy the key's requests always run under")
    kc.add_argument("--team", help="the key's own team (default: its owner's)")
    kc.add_argument("--expires", type=int, metavar="DAYS", help="lifetime in days")
    kc.set_defaults(func=cmd_keys_create)
    keys.add_parser("list", help="list API keys").set_defaults(func=cmd_keys_list)
    kr = keys.add_parser("revoke", help="revoke an API key by id or prefix")
    kr.add_argument("key")
    kr.set_defaults(func=cmd_keys_revoke)
    kt = keys.add_parser("set-team", help="put an API key in a team (or --clear)")
    kt.add_argument("key")
    _team_choice(kt)
    kt.set_defaults(func=cmd_keys_set_team)
