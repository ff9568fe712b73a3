"""Three `appliance serve` replicas on one PostgreSQL behave as one appliance: a session made on
one works on the others, pseudonyms of one conversation are shared, and the audit trail stays one
chain that verifies with appends from every replica."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from appliance.auth.sessions import SESSION_COOKIE
from tests.integration.api.test_policies import PSEUDONYMS
from tests.integration.auth.conftest import csrf_from, password_login
from tests.support.browser import loopback_browser
from tests.support.process import appliance_cli
from tests.support.replicas import Replicas

pytestmark = pytest.mark.postgresql


def test_a_session_made_on_one_replica_works_on_the_others(
    start_replicas: Callable[..., Replicas],
) -> None:
    replicas = start_replicas(3)
    first, second, third = replicas.urls
    made = appliance_cli(replicas.env_of(0), "users", "create", "casey", "--role", "staff")
    password = made.stdout.strip().splitlines()[-1]

    browser, response = password_login(first, "casey", password)
    try:
        assert response.status_code == 303
        assert response.headers["location"] == "/account/password"
        before = browser.cookies[SESSION_COOKIE]
        # The forced password change, on another replica.
        form = browser.get(f"{second}/account/password")
        assert form.status_code == 200
        csrf = csrf_from(form.text)
        changed = browser.post(
            f"{second}/account/password",
            data={
                "current_password": password,
                "password": "a new and long password",
                "csrf_token": csrf,
            },
            headers={"X-CSRF-Token": csrf},
        )
        assert changed.status_code in (200, 303), changed.text
        assert browser.cookies[SESSION_COOKIE] != before
        # The fresh session from the change works on the third replica; the one the change
        # ended is refused by the first, where it was made.
        home = browser.get(f"{third}/")
        assert home.status_code == 200
        assert "casey" in home.text
    finally:
        browser.close()
    with loopback_browser(first, follow_redirects=False) as stale:
        stale.cookies.set(SESSION_COOKIE, before)
        assert stale.get("/").status_code == 401


def test_one_chain_and_one_vault_across_replicas(
    start_replicas: Callable[..., Replicas], tmp_path: Path
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "default.yaml").write_text(PSEUDONYMS)
    replicas = start_replicas(3, policies_dir=str(policies), max_tokens="8")
    key = replicas.key("chat")
    clients = replicas.clients(key)

    # One conversation, each turn on another replica: John Smith keeps his pseudonym.
    turns = [
        "Repeat exactly: Hello John Smith, welcome back.",
        "Write to Mary Jones about John Smith.",
        "Repeat exactly: Hello John Smith.",
    ]
    for client, content in zip(clients, turns, strict=True):
        answer = client.post(
            "/api/v1/chat",
            json={"messages": [{"role": "user", "content": content}], "conversation_id": "case-7"},
        )
        assert answer.status_code == 200, answer.text
    engine = create_engine(replicas.env["APPLIANCE_DATABASE_URL"])
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT scope, placeholder FROM pii_pseudonyms WHERE scope LIKE '%case-7%'")
        ).all()
    assert len({scope for scope, _ in rows}) == 1
    assert sorted(placeholder for _, placeholder in rows) == ["<PERSON_1>", "<PERSON_2>"]

    # Appends from every replica at once, then one chain that verifies.
    def chat(i: int) -> int:
        body = {"messages": [{"role": "user", "content": f"Mail ann{i}@example.com today."}]}
        return clients[i % 3].post("/api/v1/chat", json=body).status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(chat, range(24)))
    assert statuses == [200] * 24
    for client in clients:
        client.close()
    with engine.connect() as connection:
        chats = connection.execute(
            text("SELECT count(*) FROM audit_events WHERE action LIKE 'completion.%'")
        ).scalar_one()
    engine.dispose()
    assert chats == 27
    for i in range(3):
        verified = appliance_cli(replicas.env_of(i), "audit", "verify", "--json")
        report = json.loads(verified.stdout)
        assert report["ok"] is True
        assert report["events"] >= 27
