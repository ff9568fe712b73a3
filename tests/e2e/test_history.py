"""Long work and history in a real browser: a summary made chunk by chunk shows a progress bar;
the history keeps the text where the policy retains it, re-runs it and deletes it; the batch
jobs page starts a job and shows its progress until it completes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page

from tests.conftest import RunningAppliance
from tests.e2e.conftest import expect, screenshot, user_page
from tests.support.retention import retaining_policies

# About 1,500 characters: two chunks of the 512-token context this test gives the model.
CONTRACT = " ".join(
    f"Clause {i}: the supplier delivers the goods within {i + 2} days and the buyer pays "
    "within thirty days of delivery."
    for i in range(1, 15)
)


def test_chunked_summary_progress_then_history_rerun_and_delete(
    start_app: Callable[..., RunningAppliance], new_page: Callable[[], Page], tmp_path: Path
) -> None:
    app = start_app(policies_dir=retaining_policies(tmp_path), llama_context=512)
    page = user_page(new_page, app, "staff")
    page.goto(f"{app.url}/workspace?task=summarize")
    page.get_by_label("Text", exact=True).fill(CONTRACT)
    page.evaluate(
        """() => {
          window.progressStates = [];
          const text = document.getElementById("progress-text");
          // Each report replaces the text node: keep every node added, even when several
          // reports arrive in one network read and the observer runs once for all of them.
          new MutationObserver((records) => records.forEach((r) =>
            r.addedNodes.forEach((n) => window.progressStates.push(n.textContent))))
            .observe(text, {childList: true});
        }"""
    )
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#progress-text")).to_contain_text(
        "Summarised chunk 1 of 2", timeout=90_000
    )
    expect(page.locator("#progress")).to_have_attribute("max", "2")
    screenshot(page, "workspace-progress")
    expect(page.get_by_role("button", name="Download text")).to_be_enabled(timeout=120_000)
    states = [s for s in page.evaluate("window.progressStates") if s]
    # Each chunk was reported as it finished, then the combining step.
    assert states == [
        "Summarising in 2 chunks…",
        "Summarised chunk 1 of 2 (50%)",
        "Summarised chunk 2 of 2 (100%)",
        "Combining the summaries of 2 chunks…",
    ], states
    expect(page.locator("#progress")).to_be_hidden()
    audit_id = page.locator("#receipt [data-audit-id]").inner_text()
    summary = page.locator("#answer").inner_text()
    assert summary.strip()

    # The policy retains content: the history offers the request's text again.
    page.get_by_role("link", name="My history").click()
    row = page.locator(f"tr[data-entry='{audit_id}']")
    expect(row).to_contain_text("retained (encrypted)")
    expect(row).to_contain_text("summarize")
    row.get_by_role("link", name=f"Open request {audit_id[:12]}").click()
    expect(page.locator("#kept-text")).to_have_text(CONTRACT)
    expect(page.locator("#kept-answer")).to_have_text(summary)
    page.get_by_role("button", name="Re-run").click()
    rerun = page.locator("#rerun")
    expect(rerun.locator("#rerun-answer")).not_to_be_empty(timeout=120_000)
    new_id = rerun.locator("[data-audit-id]").inner_text()
    assert len(new_id) == 32 and new_id != audit_id
    expect(rerun.locator(".receipt")).to_contain_text("default@")
    screenshot(page, "history-entry")

    page.get_by_role("link", name="My history", exact=True).click()
    expect(page.locator("tr[data-entry]")).to_have_count(2)
    expect(page.locator(f"tr[data-entry='{new_id}']")).to_contain_text("retained (encrypted)")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name=f"Delete content of {audit_id[:12]}").click()
    first = page.locator(f"tr[data-entry='{audit_id}']")
    expect(first.locator(".history-content")).to_have_text("deleted")
    expect(first).to_contain_text("the receipt stays")
    screenshot(page, "history-retained")
    page.reload()
    expect(first).to_contain_text("not retained")
    expect(first).to_contain_text(audit_id[:12])


def test_batch_jobs_page_shows_progress_until_the_job_completes(
    start_app: Callable[..., RunningAppliance], new_page: Callable[[], Page]
) -> None:
    app = start_app(batch_item_pause_s=0.6, batch_quiet_s=0)
    page = user_page(new_page, app, "staff")
    page.get_by_role("link", name="Batch jobs").click()
    page.wait_for_url("**/batches")
    expect(page.locator("#batches")).to_contain_text("No batch jobs yet")
    page.evaluate(
        """() => {
          window.batchStates = [];
          const section = document.getElementById("batches").parentElement;
          new MutationObserver(() => {
            const counts = section.querySelector("[data-batch-counts]");
            if (counts) window.batchStates.push(counts.textContent);
          }).observe(section, {childList: true, subtree: true, characterData: true});
        }"""
    )
    lines = [
        json.dumps({"id": f"m{i}", "text": f"Call Jane Doe on 212-555-01{i:02d} about item {i}."})
        for i in range(6)
    ]
    page.get_by_label("Inputs (JSONL or CSV with a text column)").set_input_files(
        files=[
            {
                "name": "memos.jsonl",
                "mimeType": "application/json",
                "buffer": "\n".join(lines).encode(),
            }
        ]
    )
    page.get_by_label("Task").select_option("redact")
    page.get_by_role("button", name="Start").click()
    job = page.locator("#batches tr[data-batch]")
    expect(job).to_have_count(1)
    expect(page.locator("#batches .note")).to_contain_text("started with 6 items")
    expect(job.locator("[data-batch-status]")).to_have_text("completed", timeout=60_000)
    expect(job.locator("[data-batch-counts]")).to_contain_text("6 done of 6 (100%)")
    expect(job.locator("progress")).to_have_attribute("value", "100")
    expect(job.get_by_role("link", name="Results (JSONL)")).to_be_visible()
    states = page.evaluate("window.batchStates")
    # The list refreshed itself while the job ran: it showed the job before it was done.
    assert any("(100%)" not in s for s in states), states
    assert page.locator("#batches").get_attribute("hx-trigger") is None  # polling stopped
    screenshot(page, "batches")
    href = job.get_by_role("link", name="Results (JSONL)").get_attribute("href")
    body = page.evaluate("url => fetch(url).then(r => r.text())", href)
    rows = [json.loads(line) for line in body.splitlines()]
    assert [r["id"] for r in rows] == [f"m{i}" for i in range(6)]
    assert all("Jane Doe" not in json.dumps(r) for r in rows)
