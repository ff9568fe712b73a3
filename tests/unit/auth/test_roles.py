"""Access rules, principals, and SSO group-to-role mapping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from appliance.auth.oidc import OidcClient
from appliance.auth.roles import Access, Principal, access
from appliance.config import Settings
from appliance.errors import LoginFailed


def test_rules_reject_unknown_roles_and_scopes() -> None:
    with pytest.raises(ValueError, match="root"):
        access(roles=("root",))
    with pytest.raises(ValueError, match="everything"):
        access(scopes=("everything",))


def test_users_pass_by_role_and_keys_by_scope() -> None:
    rule = Access(roles=frozenset({"staff"}), scopes=frozenset({"chat"}))
    staff = Principal(kind="user", id="u", name="ada", role="staff")
    admin = Principal(kind="user", id="a", name="root", role="admin")
    chat_key = Principal(
        kind="apikey", id="k", name="k", role="service", scopes=frozenset({"chat"})
    )
    pii_key = Principal(kind="apikey", id="p", name="p", role="service", scopes=frozenset({"pii"}))
    # A key's name or role never stands in for a scope, nor a user's scopes for a role.
    staffish_key = Principal(kind="apikey", id="s", name="staff", role="staff")
    assert [p.allowed(rule) for p in (staff, admin, chat_key, pii_key, staffish_key)] == [
        True,
        False,
        True,
        False,
        False,
    ]
    assert chat_key.actor_id == "apikey:k" and staff.actor_id == "user:u"


def _client(tmp_path: Path, engine: Engine, **overrides: Any) -> OidcClient:
    settings = Settings(
        data_dir=tmp_path,
        oidc_issuer="https://idp.example",
        oidc_client_id="appliance",
        oidc_role_map={"slm-staff": "staff", "slm-audit": "auditor", "slm-admins": "admin"},
        **overrides,
    )
    return OidcClient(settings, engine)


@pytest.mark.parametrize(
    ("groups", "role"),
    [
        (["slm-staff"], "staff"),
        (["slm-staff", "slm-audit"], "auditor"),
        (["slm-audit", "slm-admins", "slm-staff"], "admin"),
        ("slm-audit", "auditor"),
    ],
)
def test_highest_mapped_group_wins(tmp_path: Path, engine: Engine, groups: Any, role: str) -> None:
    claims = {"sub": "1", "preferred_username": "ada", "groups": groups}
    sso = _client(tmp_path, engine).identity_from(claims)
    assert (sso.role, sso.username, sso.subject) == (role, "ada", "https://idp.example#1")


def test_unmapped_users_are_refused_unless_a_default_role_is_set(
    tmp_path: Path, engine: Engine
) -> None:
    claims = {"sub": "1", "email": "ada@example.org", "groups": ["visitors"]}
    with pytest.raises(LoginFailed) as refused:
        _client(tmp_path, engine).identity_from(claims)
    assert refused.value.reason == "no_role"
    sso = _client(tmp_path, engine, oidc_default_role="staff").identity_from(claims)
    assert (sso.role, sso.username) == ("staff", "ada@example.org")
