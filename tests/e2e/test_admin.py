"""Admin pages in a real browser: create an API key (shown once) and use it, revoke it;
create an account; the dashboard charts and the models page are populated."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from playwright.sync_api import Page

from tests.conftest import RunningAppliance
from tests.e2e.conftest import expect, screenshot, user_page


def test_create_use_and_revoke_an_api_key_and_create_an_account(
    app: RunningAppliance, new_page: Callable[[], Page]
) -> None:
    # Some traffic first, so the dashboard has something to draw.
    chat = {"messages": [{"role": "user", "content": "Email bob@example.com a hello."}]}
    assert app.client.post("/api/v1/chat", json=chat).status_code == 200
    assert (
        app.client.post("/api/v1/pii/redact", json={"text": "Call 212-555-0199"}).status_code == 200
    )
    analyze = {"text": "Mail ann@example.com"}
    assert app.client.post("/api/v1/pii/analyze", json=analyze).status_code == 200
    page = user_page(new_page, app, "admin")

    page.goto(f"{app.url}/admin")
    # The chat and the redaction: a request without a model is a request too.
    expect(page.locator("[data-stat=requests]")).to_have_text("2")
    expect(page.locator("[data-stat=analyses]")).to_have_text("1")
    for chart in ("requests", "pii", "outcomes", "latency", "cost"):
        bars = page.locator(f"svg[data-chart=chart-{chart}] rect.bar")
        drawn = bars.evaluate_all("bars => bars.filter(b => +b.getAttribute('height') > 0)")
        assert len(drawn) >= 1, chart
    expect(page.locator("svg[data-chart=chart-pii] desc")).to_contain_text("EMAIL_ADDRESS: 1")
    screenshot(page, "dashboard")

    page.get_by_role("link", name="Models").click()
    page.wait_for_url("**/admin/models")
    expect(page.locator("main")).to_contain_text("healthy")
    for model in app.services.registry.names():
        expect(page.locator("main")).to_contain_text(model)
    screenshot(page, "models")

    page.get_by_role("link", name="Users & keys").click()
    page.wait_for_url("**/admin/users")
    page.get_by_label("Name", exact=True).fill("contracts-bot")
    page.get_by_label("pii").check()
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#keys [data-secret]")
    expect(secret).to_be_visible()
    key = secret.inner_text().strip()
    expect(page.locator("#keys tr[data-key=contracts-bot]")).to_contain_text("chat, pii")
    screenshot(page, "users-keys")
    # The key works at once with its scopes, and is never shown again.
    trust = app.server.trust  # type: ignore[attr-defined]
    with httpx.Client(base_url=app.url, verify=trust, timeout=60) as client:
        auth = {"Authorization": f"Bearer {key}"}
        ok = client.post("/api/v1/pii/analyze", json={"text": "hi"}, headers=auth)
        assert ok.status_code == 200, ok.text
        page.reload()
        assert key not in page.content()
        page.once("dialog", lambda dialog: dialog.accept())
        page.locator("#keys tr[data-key=contracts-bot]").get_by_role(
            "button", name="Revoke"
        ).click()
        expect(page.locator("#keys tr[data-key=contracts-bot]")).to_contain_text("revoked")
        refused = client.post("/api/v1/pii/analyze", json={"text": "hi"}, headers=auth)
        assert refused.status_code == 401

    page.get_by_label("New local account").fill("nurse-1")
    page.get_by_label("Role", exact=True).select_option("staff")
    page.get_by_role("button", name="Create account").click()
    expect(page.locator("#users [data-secret]")).to_be_visible()
    expect(page.locator("#users tr[data-user=nurse-1]")).to_contain_text("must change password")
