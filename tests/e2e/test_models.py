"""Admin models page in a real browser: pull a model onto an Ollama backend with a live progress
bar; the embedded-only appliance says pulling is not supported; a bad name comes back as a toast.

The Ollama binary cannot run here: the backend is the FAKE Ollama (tests/support/fake_ollama.py)
on a loopback port, replaying `/api/pull` progress lines as docs/api.md documents them, slowly
enough that the page polls several times during the download.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page

from tests.conftest import RunningAppliance
from tests.e2e.conftest import expect, screenshot, user_page
from tests.support.fake_ollama import FakeOllamaServer

PULLED = "qwen2.5:0.5b"


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllamaServer]:
    """The FAKE Ollama; 0.4 s between progress lines, so a pull takes about four seconds."""
    with FakeOllamaServer(line_delay_s=0.4) as server:
        yield server


def test_admin_pulls_a_model_with_a_live_progress_bar(
    start_app: Callable[..., RunningAppliance],
    new_page: Callable[[], Page],
    fake_ollama: FakeOllamaServer,
    tmp_path: Path,
) -> None:
    config = tmp_path / "inference.toml"
    config.write_text(
        f'[[backends]]\nname = "ollama"\nkind = "ollama"\n\n'
        f'[[backends.nodes]]\nurl = "{fake_ollama.url}"\n\n'
        '[[backends.models]]\nname = "llama3.2:3b"\n'
    )
    app = start_app(inference_file=config)
    page = user_page(new_page, app, "admin")
    page.goto(f"{app.url}/admin/models")
    expect(page.locator("main")).not_to_contain_text(PULLED)
    # Record every value the progress bar takes while htmx swaps the polled partial in.
    page.evaluate(
        """() => {
          window.pullValues = [];
          const box = document.getElementById("pulls");
          new MutationObserver(() => {
            const bar = box.querySelector("progress");
            if (bar) window.pullValues.push(Number(bar.value));
          }).observe(box, {childList: true, subtree: true});
        }"""
    )

    page.get_by_label("Backend or node").select_option("ollama")
    page.get_by_label("Model name").fill(PULLED)
    page.get_by_role("button", name="Pull").click()

    job = page.locator(f"#pulls [data-pull='{PULLED}']")
    expect(job).to_be_visible()
    expect(job.locator("[data-pull-phase]")).to_contain_text("downloading sha256:")
    screenshot(page, "models-pulling")
    expect(job.locator("[data-pull-status]")).to_have_text("succeeded", timeout=30_000)
    expect(job.locator("[data-pull-percent]")).to_have_text("100%")
    expect(job.locator("progress")).to_have_attribute("value", "100")
    values = page.evaluate("window.pullValues")
    # The bar moved through the download: partial values, rising, before the end.
    assert any(0 < v < 100 for v in values), values
    assert values == sorted(values), values
    # Polling stopped with the pull, and the model is listed once the page reloads.
    assert job.get_attribute("hx-trigger") is None
    page.reload()
    expect(page.locator("main table").nth(1)).to_contain_text(PULLED)
    expect(page.locator(f"#pulls [data-pull='{PULLED}'] [data-pull-status]")).to_have_text(
        "succeeded"
    )
    screenshot(page, "models-pulled")

    # A name Ollama could never hold is refused before any backend is asked: a toast says why.
    page.get_by_label("Model name").fill("no spaces allowed")
    page.get_by_role("button", name="Pull").click()
    expect(page.locator("#toasts .toast")).to_contain_text("give a model name")
    assert [b["model"] for p, b in fake_ollama.fake.requests if p == "/api/pull"] == [PULLED]


def test_embedded_engine_says_pulling_is_not_supported(
    app: RunningAppliance, new_page: Callable[[], Page]
) -> None:
    page = user_page(new_page, app, "admin")
    page.goto(f"{app.url}/admin/models")
    expect(page.locator("[data-no-pull]")).to_contain_text("Pulling is not supported here")
    expect(page.get_by_role("button", name="Pull")).to_have_count(0)
