"""`appliance eval ...` as a real process: samples, sets, upload errors, a run with a progress
bar on stderr and both models, show, and resume of a finished run (nothing runs again)."""

from __future__ import annotations

import json

from tests.integration.test_cli import Cli, cli  # noqa: F401  (the fixture)


def test_eval_commands(cli: Cli, tmp_path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    assert cli("db", "upgrade").returncode == 0
    loaded = cli("eval", "samples")
    assert loaded.returncode == 0, loaded.stderr
    assert "hr-tickets" in loaded.stdout and "invoices" in loaded.stdout
    assert "already loaded" in cli("eval", "samples").stdout
    sets = cli("eval", "sets").stdout
    assert "hr-tickets\tclassify\tv1\t200 items" in sets

    bad = tmp_path / "bad.csv"
    bad.write_text("input,expected\nhello,\n")
    refused = cli("eval", "upload", str(bad), "--task", "classify")
    assert refused.returncode == 1 and "row 2" in refused.stderr

    run = cli(
        "eval",
        "run",
        "hr-tickets",
        "--models",
        "smollm2-135m,gemma3-270m",
        "--limit",
        "2",
        "--json",
        timeout=900,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["status"] == "completed" and report["total"] == 4
    assert set(report["metrics"]["models"]) == {"smollm2-135m", "gemma3-270m"}
    # The progress bar: one line per finished item, ending at 4/4.
    bars = [line for line in run.stderr.splitlines() if line.startswith("[")]
    assert len(bars) == 4 and "4/4" in bars[-1] and "100.0%" in bars[-1]

    shown = cli("eval", "show", report["id"], "--bar", "0")
    assert shown.returncode == 0, shown.stderr
    assert "recommendation (bar 0.00):" in shown.stdout
    assert "smollm2-135m" in shown.stdout and "gemma3-270m" in shown.stdout
    again = cli("eval", "run", "--resume", report["id"], "--json", timeout=300)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["progress"]["done"] == 4
    assert not [line for line in again.stderr.splitlines() if line.startswith("[")]
