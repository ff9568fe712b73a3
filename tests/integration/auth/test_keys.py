"""API keys through the admin API, the CLI and the official `openai` client's Bearer header."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from appliance.config import PROJECT_ROOT
from tests.conftest import RunningAppliance
from tests.integration.auth.conftest import Browser, audit_actions, new_key
from tests.support.windows import room_in_window


def test_openai_client_bearer_key_is_accepted_and_revocation_is_immediate(
    appliance: RunningAppliance,
) -> None:
    key = new_key(appliance, ["chat"])
    client = openai.OpenAI(base_url=f"{appliance.url}/v1", api_key=key, max_retries=0)
    assert "smollm2-135m" in [m.id for m in client.models.list()]
    answer = client.chat.completions.create(
        model="smollm2-135m", messages=[{"role": "user", "content": "Say hi."}], max_tokens=4
    )
    assert answer.choices[0].message.role == "assistant"

    key_id = next(
        k["id"]
        for k in appliance.client.get("/api/v1/admin/keys").json()["keys"]
        if key.startswith(k["prefix"])
    )
    assert appliance.client.delete(f"/api/v1/admin/keys/{key_id}").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
    wrong = openai.OpenAI(base_url=f"{appliance.url}/v1", api_key="sk-not-ours", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    actions = audit_actions(appliance)
    assert any(a == "apikey.revoked" for a, _, _ in actions)
    denied = [(actor, outcome) for a, actor, outcome in actions if a == "apikey.denied"]
    assert (f"apikey:{key_id}", "revoked") in denied
    assert ("anonymous", "malformed") in denied


def test_admin_api_creates_lists_and_revokes_keys(
    appliance: RunningAppliance, browser_for: Callable[[RunningAppliance, str], Browser]
) -> None:
    admin = browser_for(appliance, "admin")
    created = admin.post(
        "/api/v1/admin/keys", json={"name": "tool", "scopes": ["pii"], "expires_days": 30}
    )
    assert created.status_code == 201, created.text
    body = created.json()
    key = body["key"]
    assert key.startswith(body["prefix"]) and body["scopes"] == ["pii"]
    assert body["owner_id"] == admin.user_id and body["expires_at"]
    listed = admin.client.get("/api/v1/admin/keys").json()["keys"]
    assert key not in str(listed)
    assert any(k["id"] == body["id"] and k["revoked_at"] is None for k in listed)
    bearer = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{appliance.url}/api/v1/models", headers=bearer).status_code == 403
    unknown_scope = admin.post("/api/v1/admin/keys", json={"name": "x", "scopes": ["root"]})
    assert unknown_scope.status_code == 422
    assert unknown_scope.json()["error"]["field"] == "scopes"
    revoked = admin.client.delete(
        f"/api/v1/admin/keys/{body['id']}", headers={"X-CSRF-Token": admin.csrf}
    )
    assert revoked.json()["revoked_at"] is not None
    pii = httpx.post(f"{appliance.url}/api/v1/pii/analyze", json={"text": "x"}, headers=bearer)
    assert pii.status_code == 401
    names = [a for a, _, _ in audit_actions(appliance)]
    assert {"apikey.created", "apikey.revoked", "apikey.denied"} <= set(names)


def test_inference_rate_limit_per_key_gives_429_with_retry_after(
    start_appliance: Callable[..., RunningAppliance],
) -> None:
    app = start_appliance(wait_ready=False, inference_rate_per_minute=3)
    key = new_key(app, ["chat"])
    bearer = {"Authorization": f"Bearer {key}"}
    room_in_window(20)  # the four requests in one window
    # Invalid bodies: the guard counts the request before validation, no model runs.
    statuses = [
        httpx.post(f"{app.url}/api/v1/chat", json={}, headers=bearer, timeout=30) for _ in range(4)
    ]
    assert [r.status_code for r in statuses] == [422, 422, 422, 429]
    assert int(statuses[-1].headers["Retry-After"]) > 0
    assert statuses[-1].json()["error"]["code"] == "rate_limited"


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


def test_cli_users_and_keys(cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    created = cli("users", "create", "ada", "--role", "auditor")
    assert created.returncode == 0, created.stderr
    assert len(created.stdout.strip().splitlines()[-1]) >= 16  # the initial password
    listed = cli("users", "list")
    assert "ada" in listed.stdout and "auditor" in listed.stdout
    assert cli("users", "set-role", "ada", "staff").returncode == 0
    assert "staff" in cli("users", "list").stdout
    bad_role = cli("users", "set-role", "ada", "root")
    assert bad_role.returncode != 0
    assert cli("users", "disable", "ada").returncode == 0
    assert "disabled" in cli("users", "list").stdout

    made = cli("keys", "create", "--name", "ci", "--scopes", "chat,pii", "--expires", "7")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("slm_") and " " not in key
    keys = cli("keys", "list")
    assert key not in keys.stdout and key[:12] in keys.stdout and "active" in keys.stdout
    assert cli("keys", "revoke", key[:12]).returncode == 0
    assert "revoked" in cli("keys", "list").stdout
    unknown = cli("keys", "create", "--name", "x", "--scopes", "root")
    assert unknown.returncode == 1 and "scopes" in unknown.stderr


def test_binding_beyond_loopback_needs_a_tls_proxy(
    cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    refused = cli("serve", "--host", "192.0.2.10", "--port", "1")
    assert refused.returncode == 1
    assert "TLS" in refused.stderr and "APPLIANCE_TLS_TERMINATED_BY_PROXY" in refused.stderr
