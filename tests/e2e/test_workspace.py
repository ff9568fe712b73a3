"""Staff workspace in a real browser: PII preview, a streamed answer with its receipt, history."""

from __future__ import annotations

import json
from collections.abc import Callable

from playwright.sync_api import Page

from tests.conftest import RunningAppliance
from tests.e2e.conftest import expect, screenshot, user_page

TEXT = "Please write a short reply to Jane Smith at jane.smith@example.com about the contract."


def test_chat_streams_the_answer_with_its_receipt(
    app: RunningAppliance, new_page: Callable[[], Page]
) -> None:
    page = user_page(new_page, app, "staff")
    screenshot(page, "home-staff")
    page.get_by_role("link", name="Workspace").first.click()
    page.wait_for_url("**/workspace")
    page.get_by_label("Task").select_option("chat")
    page.get_by_label("Text", exact=True).fill(TEXT)
    # The preview highlights what the default policy finds, coloured by action, with counts
    # (the default pack pseudonymizes contact details: the caller gets them back).
    preview = page.locator("#preview")
    expect(preview.locator("mark.act-pseudonymize").first).to_be_visible()
    expect(preview.locator("mark", has_text="jane.smith@example.com")).to_contain_text(
        "EMAIL_ADDRESS · pseudonymize"
    )
    expect(preview.locator(".legend")).to_contain_text("pseudonymize")
    # Record each state of the answer pane as the stream fills it.
    page.evaluate(
        """() => {
          window.answerStates = [];
          const answer = document.getElementById("answer");
          new MutationObserver(() => window.answerStates.push(answer.textContent))
            .observe(answer, {childList: true, characterData: true, subtree: true});
        }"""
    )
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("button", name="Download text")).to_be_enabled(timeout=90_000)
    states = [s for s in page.evaluate("window.answerStates") if s]
    final = page.locator("#answer").inner_text()
    # Streamed: the pane showed a proper prefix of the answer before the whole of it.
    assert final.strip(), "empty answer"
    assert len(states) >= 2 and final.startswith(states[0]) and len(states[0]) < len(final), states
    receipt = page.locator("#receipt .receipt")
    expect(receipt).to_contain_text("default@")
    expect(receipt).to_contain_text("EMAIL_ADDRESS")
    audit_id = receipt.locator("[data-audit-id]").inner_text()
    assert len(audit_id) == 32
    # What the model received had the identifiers replaced.
    sent = app.backend.requests[-1]
    assert "jane.smith@example.com" not in json.dumps([m.content for m in sent.messages])
    expect(page.get_by_role("button", name="Download text")).to_be_enabled()
    with page.expect_download() as download:
        page.get_by_role("button", name="Download text").click()
    assert download.value.suggested_filename == "result.txt"
    screenshot(page, "workspace")

    page.get_by_role("link", name="My history").click()
    row = page.locator("tbody tr").first
    expect(row).to_contain_text(audit_id[:12])
    expect(row).to_contain_text("redacted")
    expect(row).to_contain_text("not retained")
    screenshot(page, "history")


def test_redact_task_result_and_json_extract_download(
    app: RunningAppliance, new_page: Callable[[], Page]
) -> None:
    page = user_page(new_page, app, "staff")
    page.goto(f"{app.url}/workspace?task=redact")
    # An uploaded document goes through the documents API; its extracted text fills the box.
    page.get_by_label("upload a document").set_input_files(
        files=[{"name": "letter.txt", "mimeType": "text/plain", "buffer": TEXT.encode()}]
    )
    expect(page.locator("#file-status")).to_contain_text("Loaded letter.txt")
    expect(page.get_by_label("Text", exact=True)).to_have_value(TEXT)
    expect(page.locator("#preview mark.act-pseudonymize").first).to_be_visible()
    page.get_by_role("button", name="Send").click()
    answer = page.locator("#answer")
    expect(page.locator("#receipt .receipt")).to_contain_text("redacted")
    assert "jane.smith@example.com" not in answer.inner_text()
    assert "<EMAIL_ADDRESS" in answer.inner_text()
    # The document is listed under the user's own documents and can be deleted there.
    page.get_by_role("link", name="My history").click()
    row = page.locator("tr[data-document='letter.txt']")
    expect(row).to_be_visible()
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Delete letter.txt").click()
    expect(row).to_have_count(0)
    page.reload()
    expect(page.locator("main")).to_contain_text("No documents stored")

    # A bad schema for extract is refused with a toast naming the problem.
    page.goto(f"{app.url}/workspace")
    page.get_by_label("Text", exact=True).fill(TEXT)
    page.get_by_label("Task").select_option("extract")
    page.get_by_label("JSON schema of the result").fill("{not json")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#toasts .toast")).to_contain_text("schema is not valid JSON")
