"""Teams decide the policy: a key's own team, else its owner's; a signed-in user's team.

Teams are set through the admin API, the console and the CLI, and every change is audited.
Real app, real detector; the policy is read back from the receipt and from the audit row.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import select

from appliance.config import PROJECT_ROOT
from appliance.db.engine import make_engine, session_scope
from appliance.db.models import AuditEvent
from tests.conftest import RunningAppliance
from tests.integration.auth.conftest import (
    PASSWORD,
    Browser,
    csrf_from,
    make_user,
    new_key,
    password_login,
)

TEXT = "Please write to jane.doe@example.org about the contract."


def _assign(app: RunningAppliance, team: str, policy: str | None) -> None:
    answer = app.client.put(
        "/api/v1/policies/assignments", json={"kind": "team", "target": team, "policy": policy}
    )
    assert answer.is_success, answer.text


def _rows(app: RunningAppliance, action: str) -> list[AuditEvent]:
    with session_scope(app.services.engine) as session:
        return list(
            session.exec(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)  # type: ignore[arg-type]
            )
        )


def _policy_of(app: RunningAppliance, receipt: dict[str, Any]) -> str:
    """The policy name of a receipt, checked against the audit row the receipt points to."""
    with session_scope(app.services.engine) as session:
        row = session.exec(select(AuditEvent).where(AuditEvent.id == receipt["audit_id"])).one()
        policy = row.policy
    ref = app.services.policies.get(receipt["policy"]["name"]).ref
    assert policy == ref, (policy, ref)
    return str(receipt["policy"]["name"])


def _redact_under(
    app: RunningAppliance, headers: dict[str, str], client: httpx.Client | None = None
) -> str:
    """Redact through the request path as a key (or a signed-in browser); the policy used."""
    if client is None:
        answer = httpx.post(
            f"{app.url}/api/v1/pii/redact", json={"text": TEXT}, headers=headers, timeout=60
        )
    else:
        answer = client.post("/api/v1/pii/redact", json={"text": TEXT}, headers=headers)
    assert answer.status_code == 200, answer.text
    return _policy_of(app, answer.json()["receipt"])


def _key_id(app: RunningAppliance, key: str) -> str:
    keys = app.client.get("/api/v1/admin/keys").json()["keys"]
    return str(next(k["id"] for k in keys if key.startswith(k["prefix"])))


def test_a_key_without_a_policy_runs_under_its_owners_team_policy(
    appliance: RunningAppliance,
) -> None:
    app = appliance
    owner = make_user(app, "lena", "staff")
    patched = app.client.patch(f"/api/v1/admin/users/{owner}", json={"team": "legal"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["user"]["team"] == "legal"
    _assign(app, "legal", "legal")
    _assign(app, "hr", "hr")

    key = new_key(app, ["pii", "chat"], owner_id=owner)
    bearer = {"Authorization": f"Bearer {key}"}
    assert _redact_under(app, bearer) == "legal"
    chat = httpx.post(
        f"{app.url}/api/v1/chat",
        json={"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4},
        headers=bearer,
        timeout=120,
    )
    assert chat.status_code == 200, chat.text
    assert _policy_of(app, chat.json()["receipt"]) == "legal"

    # The key's own team wins over its owner's; clearing it gives the owner's back.
    key_id = _key_id(app, key)
    own = app.client.patch(f"/api/v1/admin/keys/{key_id}", json={"team": "hr"})
    assert own.status_code == 200, own.text
    assert own.json()["team"] == "hr"
    assert _redact_under(app, bearer) == "hr"
    assert (
        app.client.patch(f"/api/v1/admin/keys/{key_id}", json={"team": ""}).json()["team"] is None
    )
    assert _redact_under(app, bearer) == "legal"

    # A team without an assignment falls through to the default; the owner's team is not tried.
    app.client.patch(f"/api/v1/admin/keys/{key_id}", json={"team": "ops"})
    assert _redact_under(app, bearer) == "default"

    # Every change is audited, with the new and the previous team.
    [user_change] = _rows(app, "user.team_changed")
    assert user_change.target == f"user:{owner}" and user_change.actor.startswith("apikey:")
    assert user_change.details == {"team": "legal", "previous": None}
    key_changes = [(r.target, r.details) for r in _rows(app, "apikey.team_changed")]
    assert key_changes == [
        (f"apikey:{key_id}", {"team": "hr", "previous": None}),
        (f"apikey:{key_id}", {"team": None, "previous": "hr"}),
        (f"apikey:{key_id}", {"team": "ops", "previous": None}),
    ]
    too_long = app.client.patch(f"/api/v1/admin/users/{owner}", json={"team": "x" * 101})
    assert too_long.status_code in (400, 422)


def test_a_signed_in_user_runs_under_the_team_policy_set_in_the_console(
    appliance: RunningAppliance, browser_for: Callable[[RunningAppliance, str], Browser]
) -> None:
    app = appliance
    _assign(app, "legal", "legal")
    admin = browser_for(app, "admin")
    created = admin.post(
        "/admin/users/create",
        data={"username": "sam", "role": "staff", "team": "legal"},
        headers={"HX-Request": "true"},
    )
    assert created.status_code == 200, created.text
    users = {u["username"]: u for u in app.client.get("/api/v1/admin/users").json()["users"]}
    assert users["sam"]["team"] == "legal"
    [change] = _rows(app, "user.team_changed")
    assert change.actor == f"user:{admin.user_id}" and change.details["team"] == "legal"

    staff_id = make_user(app, "kim", "staff")
    updated = admin.post(
        f"/admin/users/{staff_id}/update",
        data={"role": "staff", "state": "active", "team": "legal"},
        headers={"HX-Request": "true"},
    )
    assert updated.status_code == 200, updated.text
    browser, signed_in = password_login(app.url, "kim", PASSWORD)
    try:
        assert signed_in.status_code == 303, signed_in.text
        csrf = csrf_from(browser.get("/account/password").text)
        assert _redact_under(app, {"X-CSRF-Token": csrf}, client=browser) == "legal"
    finally:
        browser.close()


@pytest.fixture
def cli(tmp_path: Path, database_url: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(APPLIANCE_DATA_DIR=str(tmp_path / "data"), APPLIANCE_DATABASE_URL=database_url)
    env["PYTHONPATH"] = str(PROJECT_ROOT)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "appliance", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert run("db", "upgrade").returncode == 0
    return run


def test_cli_sets_teams_of_users_and_keys_and_audits_them(
    cli: Callable[..., subprocess.CompletedProcess[str]], database_url: str
) -> None:
    created = cli("users", "create", "ada", "--team", "legal")
    assert created.returncode == 0, created.stderr
    assert "team legal" in created.stdout
    assert "legal" in cli("users", "list").stdout
    moved = cli("users", "set-team", "ada", "--team", "hr")
    assert moved.returncode == 0 and "team hr" in moved.stdout, moved.stderr
    assert cli("users", "set-team", "ada", "--clear").returncode == 0
    assert cli("users", "set-team", "ada").returncode != 0  # --team or --clear, explicitly
    bad = cli("users", "set-team", "ada", "--team", "x" * 101)
    assert bad.returncode != 0 and "team" in bad.stderr

    made = cli("keys", "create", "--name", "ci", "--scopes", "pii", "--team", "medical")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert "medical" in cli("keys", "list").stdout
    assert cli("keys", "set-team", key[:12], "--clear").returncode == 0
    assert "medical" not in cli("keys", "list").stdout

    engine = make_engine(database_url)
    try:
        with session_scope(engine) as session:
            rows = session.exec(select(AuditEvent).order_by(AuditEvent.seq)).all()  # type: ignore[arg-type]
            changes = [
                (r.action, r.actor.split(":")[0], r.details.get("team"), r.details.get("previous"))
                for r in rows
                if r.action.endswith("team_changed")
            ]
    finally:
        engine.dispose()
    assert changes == [
        ("user.team_changed", "cli", "legal", None),
        ("user.team_changed", "cli", "hr", "legal"),
        ("user.team_changed", "cli", None, "hr"),
        ("apikey.team_changed", "cli", "medical", None),
        ("apikey.team_changed", "cli", None, "medical"),
    ]
