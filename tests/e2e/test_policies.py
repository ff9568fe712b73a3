"""Policy console in a real browser: edit YAML with inline errors, test the draft, save,
diff, activate; the workspace preview then explains the block."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import Page

from tests.conftest import RunningAppliance
from tests.e2e.conftest import expect, screenshot, user_page

SSN_LINE = "  - {entity: US_SSN, action: redact}"


def test_edit_test_save_diff_and_activate_a_policy(
    app: RunningAppliance, new_page: Callable[[], Page]
) -> None:
    page = user_page(new_page, app, "admin")
    page.get_by_role("link", name="Policies").first.click()
    page.wait_for_url("**/admin/policies")
    expect(page.locator("table").first).to_contain_text("default")
    screenshot(page, "policies")
    page.get_by_role("link", name="default", exact=True).click()
    page.wait_for_url("**/admin/policies/default")
    editor = page.get_by_label("Policy YAML")
    source = editor.input_value()
    assert SSN_LINE in source
    line = source.splitlines().index(SSN_LINE) + 1

    # A wrong action is reported inline with its line and field, before anything is saved.
    editor.fill(source.replace(SSN_LINE, "  - {entity: US_SSN, action: shred}"))
    error = page.locator("[data-yaml-error]")
    expect(error).to_contain_text(f"line {line}")
    expect(error).to_contain_text("entities.")
    expect(error).to_contain_text("action")
    screenshot(page, "policy-invalid")

    # The fixed draft blocks SSNs; the test pane shows it under the draft, nothing stored yet.
    editor.fill(source.replace(SSN_LINE, "  - {entity: US_SSN, action: block}"))
    expect(page.locator("[data-yaml-ok]")).to_be_visible()
    page.get_by_role("button", name="Test", exact=True).click()
    result = page.locator("#test-result")
    expect(result.locator("mark.act-block")).to_contain_text("536-22-8726")
    expect(result).to_contain_text("(draft)")
    expect(result.locator(".blocked")).to_contain_text("US_SSN")
    assert len(app.services.policies.history("default")) == 1

    page.get_by_label("Why it changed").fill("block social security numbers")
    page.get_by_role("button", name="Save as new version").click()
    versions = page.locator("#versions")
    expect(versions).to_contain_text("Saved as version 2")
    page.get_by_role("link", name="Diff with active").click()
    expect(page.locator("#diff .del")).to_contain_text("US_SSN, action: redact")
    expect(page.locator("#diff .add")).to_contain_text("US_SSN, action: block")
    screenshot(page, "policy-editor")

    page.get_by_role("button", name="Activate version 2").click()
    expect(versions).to_contain_text("is active")
    expect(versions.locator("tr.active-row")).to_contain_text("block social security numbers")
    active = app.services.policies.get("default")
    assert active.policy.rule_for("US_SSN").action == "block"  # type: ignore[union-attr]
    actions = [e["action"] for e in app.client.get("/api/v1/audit/events").json()["events"]]
    assert "policy.created" in actions and "policy.activated" in actions

    # Staff-side effect: the preview explains why such a text cannot be sent, and sending it
    # is refused with a toast and a receipt that says blocked.
    page.goto(f"{app.url}/workspace?task=redact")
    page.get_by_label("Text", exact=True).fill("My SSN is 536-22-8726, thanks.")
    expect(page.locator("#preview .blocked")).to_contain_text("cannot be sent")
    expect(page.locator("#preview mark.act-block")).to_be_visible()
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#toasts .toast")).to_contain_text("blocks requests containing US_SSN")
    expect(page.locator("#receipt .receipt")).to_contain_text("blocked")
    screenshot(page, "workspace-blocked")
