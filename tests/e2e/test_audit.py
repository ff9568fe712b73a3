"""Auditor view in a real browser: filter, event detail, verify the chain, export."""

from __future__ import annotations

import json
from collections.abc import Callable

from playwright.sync_api import Page

from tests.conftest import RunningAppliance
from tests.e2e.conftest import expect, screenshot, user_page


def test_filter_inspect_verify_and_export_the_trail(
    app: RunningAppliance, new_page: Callable[[], Page]
) -> None:
    redact = {"text": "Write to jane@example.com"}
    assert app.client.post("/api/v1/pii/redact", json=redact).status_code == 200
    page = user_page(new_page, app, "auditor")
    page.get_by_role("link", name="Audit trail").first.click()
    page.wait_for_url("**/audit")
    rows = page.locator("#audit-rows tbody tr")
    # Newest first: the page the sign-in led to, then the sign-in itself.
    expect(rows.first).to_contain_text("request.served")
    expect(page.locator("#audit-rows tbody tr", has_text="auth.login").first).to_be_visible()
    redacted = page.locator("#audit-rows tbody tr", has_text="pii.redacted")
    expect(redacted).to_have_count(1)

    page.get_by_label("Event").select_option("auth.login")
    expect(redacted).to_have_count(0)
    expect(rows.first).to_contain_text("auth.login")
    for text in rows.all_inner_texts():
        assert "auth.login" in text
    rows.first.get_by_role("link").click()
    detail = page.locator("#event-detail")
    expect(detail).to_contain_text("hash")
    expect(detail.locator("dd").first).not_to_be_empty()

    page.get_by_role("button", name="Verify the chain").click()
    result = page.locator("[data-verify]")
    expect(result).to_have_attribute("data-verify", "ok")
    expect(result).to_contain_text("OK:")
    screenshot(page, "audit")

    with page.expect_download() as download:
        page.locator("[data-export=jsonl]").click()
    lines = download.value.path().read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert events and all(e["action"] == "auth.login" for e in events)
