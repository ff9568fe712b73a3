"""The evaluation workbench in a real browser: load the samples, upload a set (and see a bad
row refused), run it against both bundled models with a live progress bar, read the charts and
the recommendation, apply it, and see routing change."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page

from appliance.eval.samples import SAMPLES_DIR
from tests.conftest import RunningAppliance
from tests.e2e.conftest import expect, screenshot, user_page


def test_upload_run_compare_and_apply(
    app: RunningAppliance, new_page: Callable[[], Page], tmp_path: Path
) -> None:
    page = user_page(new_page, app, "admin")
    page.get_by_role("link", name="Evaluation").click()
    page.wait_for_url("**/admin/eval")

    page.get_by_role("button", name="Load the sample sets").click()
    expect(page.locator("#eval-sets tr[data-set=hr-tickets]")).to_contain_text("200")
    expect(page.locator("#eval-sets tr[data-set=invoices]")).to_contain_text("100")

    # A file with a bad row is refused, naming the row; nothing is stored.
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "Reset my badge", "expected": "facilities"}\n{"input": "x"}\n')
    form = page.locator("#eval-upload")
    form.get_by_label("Name").fill("tickets-mini")
    form.get_by_label("File").set_input_files(str(bad))
    form.get_by_role("button", name="Upload").click()
    expect(page.locator("#toasts")).to_contain_text("row 2")
    expect(page.locator("#eval-sets tr[data-set=tickets-mini]")).to_have_count(0)

    # Six shipped tickets, one of each class at least, as a new set.
    rows = (SAMPLES_DIR / "hr-tickets.jsonl").read_text().splitlines()[:6]
    good = tmp_path / "tickets.jsonl"
    good.write_text("\n".join(rows) + "\n")
    form.get_by_label("File").set_input_files(str(good))
    form.get_by_role("button", name="Upload").click()
    expect(page.locator("#eval-sets tr[data-set=tickets-mini]")).to_contain_text("v1")
    labels = sorted({json.loads(r)["expected"] for r in rows})

    # Start a run of both models; the page follows it with a live progress bar.
    page.reload()
    start = page.locator("#eval-start")
    start.get_by_label("Set").select_option("tickets-mini")
    start.get_by_role("button", name="Start run").click()
    page.wait_for_url(re.compile(r"/admin/eval/runs/[0-9a-f]{32}$"))
    expect(page.locator("#eval-progress")).to_be_visible()
    expect(page.locator("#eval-report")).to_have_attribute(
        "data-status", "completed", timeout=300_000
    )
    expect(page.locator("[data-progress=done]")).to_contain_text("12 of 12")

    # A bar low enough that a model clears it: a recommendation, a threshold, the charts.
    page.get_by_label("Quality bar (0 to 1)").fill("0.2")
    page.get_by_role("button", name="Recompute").click()
    page.wait_for_url(re.compile(r"bar=0.2"))
    recommended = page.locator("#eval-recommendation").get_attribute("data-model")
    assert recommended in ("smollm2-135m", "gemma3-270m")
    expect(page.locator("#eval-calibration")).to_contain_text("Router calibration")
    for model in ("smollm2-135m", "gemma3-270m"):
        expect(page.locator(f"#eval-metrics tr[data-model='{model}']")).to_contain_text("%")
        matrix = page.locator(f"table[data-confusion='{model}']")
        expect(matrix.locator("tbody tr")).to_have_count(len(labels))
    expect(page.locator("svg[data-chart=chart-quality-cost] circle")).to_have_count(2)
    latency = page.locator("svg[data-chart=chart-latency] rect.bar")
    drawn = latency.evaluate_all("bars => bars.filter(b => +b.getAttribute('height') > 0)")
    assert len(drawn) >= 2
    curve = page.locator("svg[data-chart=chart-calibration]")
    expect(curve.locator("polyline")).to_have_count(1)
    assert curve.locator("circle").count() >= 2
    screenshot(page, "eval-run")

    # Apply: one action, confirmed; routing for classify changes.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Apply to routing").click()
    expect(page.locator("#eval-applied")).to_contain_text("Applied to classify")
    page.get_by_role("link", name="← Evaluation").click()
    page.wait_for_url("**/admin/eval")
    expect(page.locator("#eval-overrides")).to_contain_text("classify")
    expect(page.locator("#eval-runs")).to_contain_text("completed")
    screenshot(page, "eval-sets")
