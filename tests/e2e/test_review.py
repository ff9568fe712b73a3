"""The review queue and the cost dashboard in a real browser.

An admin grants a staff account the reviewer permission and reads the monthly costs (filled by
the real tasks run first) and sets the escalation budget; the reviewer opens the queue, corrects
a low-confidence classification and adds it to a golden set. Admins never see queued content.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import yaml
from playwright.sync_api import Page

from appliance.config import PROJECT_ROOT
from appliance.eval.goldensets import create_set, load_items, parse
from tests.conftest import RunningAppliance
from tests.e2e.conftest import expect, screenshot, sign_in, user_page
from tests.integration.auth.conftest import make_user

EMAIL = "ada.lovelace@example.com"
LABELS = ["billing", "meeting"]


def _policies(directory: Path) -> Path:
    directory.mkdir()
    default = yaml.safe_load((PROJECT_ROOT / "policies" / "default.yaml").read_text())
    kept = default | {"name": "kept", "retention": {"content": "encrypted", "days": 7}}
    (directory / "default.yaml").write_text(yaml.safe_dump(default))
    (directory / "kept.yaml").write_text(yaml.safe_dump(kept))
    return directory


def test_reviewer_corrects_into_a_golden_set_and_admin_reads_costs(
    start_app: Callable[..., RunningAppliance], new_page: Callable[[], Page], tmp_path: Path
) -> None:
    app = start_app(
        policies_dir=_policies(tmp_path / "policies"),
        review_confidence_threshold=1.0,
        escalate_on_low_confidence=False,
    )
    texts = [f"Ask {EMAIL} to pay the March invoice.", "Lunch with the team moved to room 4."]
    for text in texts:
        body = {"text": text, "params": {"labels": LABELS}, "policy": "kept"}
        response = app.client.post("/api/v1/tasks/classify", json=body)
        assert response.status_code == 200, response.text
    queue = app.services.review
    assert queue is not None
    seed = parse(b'{"input": "Pay by Friday.", "expected": "billing"}\n', task="classify")
    create_set(
        app.services.engine, queue.sealer, name="tickets", task="classify", rows=seed, author="t"
    )
    make_user(app, "reviewer-1", "staff")

    # The admin: grants the permission, reads the costs, sets the budget; no review queue.
    admin = user_page(new_page, app, "admin")
    expect(admin.get_by_role("link", name="Review queue")).to_have_count(0)
    admin.get_by_role("navigation", name="Main").get_by_role("link", name="Users & keys").click()
    admin.wait_for_url("**/admin/users")
    row = admin.locator("#users tr[data-user=reviewer-1]")
    row.locator("input[name=reviewer]").check()
    row.get_by_role("button", name="Save").click()
    expect(admin.locator("#users .note")).to_contain_text("reviewer-1 updated")
    expect(admin.locator("#users tr[data-user=reviewer-1] input[name=reviewer]")).to_be_checked()
    assert admin.request.get(f"{app.url}/review", ignore_https_errors=True).status == 403

    admin.get_by_role("navigation", name="Main").get_by_role("link", name="Costs").click()
    admin.wait_for_url("**/admin/costs")
    expect(admin.locator("[data-stat=requests]")).to_have_text("2")
    for chart in ("monthly", "models"):
        bars = admin.locator(f"svg[data-chart=chart-{chart}] rect.bar")
        drawn = bars.evaluate_all("bars => bars.filter(b => +b.getAttribute('height') > 0)")
        assert len(drawn) >= 1, chart
    expect(admin.locator("#cost-models tr[data-model=smollm2-135m]")).to_be_visible()
    expect(admin.locator("[data-budget=cap]")).to_contain_text("no cap")
    admin.get_by_label("Monthly cap (US dollars, empty for no cap)").fill("5")
    admin.get_by_role("button", name="Set budget").click()
    expect(admin.locator("#budget .note")).to_contain_text("$5.00 a month")
    expect(admin.locator("[data-budget=cap]")).to_contain_text("$5.00")
    expect(admin.locator("#budget progress")).to_be_visible()
    screenshot(admin, "costs")

    # The reviewer: the queue, one item, a correction, the golden set.
    page = new_page()
    sign_in(page, app, "reviewer-1")
    expect(page).to_have_url(re.compile(r"/$"))
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Review queue").click()
    page.wait_for_url("**/review")
    expect(page.locator("[data-count=pending]")).to_have_text("2")
    expect(page.locator("#review-items tbody tr")).to_have_count(2)
    expect(page.locator("#review-items")).to_contain_text("low confidence")
    screenshot(page, "review-queue")
    # The oldest item is the one about the invoice.
    page.locator("#review-items tbody tr").last.get_by_role("link").click()
    page.wait_for_url(re.compile(r"/review/[0-9a-f]{32}$"))
    shown = page.locator("[data-review-input]")
    expect(shown).to_contain_text("<EMAIL_ADDRESS_1>")
    expect(shown).not_to_contain_text(EMAIL)
    guessed = page.locator("#correct-label").input_value()
    right = next(label for label in LABELS if label != guessed)
    page.locator("#correct-label").fill(right)
    page.get_by_role("button", name="Save correction").click()
    expect(page.locator("[data-review-status]")).to_contain_text("corrected")
    expect(page.locator("[data-review-expected]")).to_contain_text(right)
    page.get_by_label("Golden set").fill("tickets")
    page.get_by_role("button", name="Add to golden set").click()
    expect(page.locator("#decision .note")).to_contain_text("tickets (now version 2)")
    expect(page.locator("[data-review-golden]")).to_contain_text("tickets")
    screenshot(page, "review-item")

    _, version, items = load_items(app.services.engine, queue.sealer, "tickets")
    assert version == 2 and items[-1].expected == right
    assert "<EMAIL_ADDRESS_1>" in items[-1].input
    page.get_by_role("link", name="← Review queue").click()
    expect(page.locator("[data-count=corrected]")).to_have_text("1")
    expect(page.locator("#review-items tbody tr")).to_have_count(1)
