"""`appliance policy ...` as an operator runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from appliance.config import PROJECT_ROOT


def _run(
    args: list[str], env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        env=env,
        input=stdin,
        text=True,
        capture_output=True,
        timeout=300,
    )


def _env(tmp_path: Path, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(APPLIANCE_DATA_DIR=str(tmp_path / "data"), APPLIANCE_DATABASE_URL=database_url)
    return env


def test_check_names_file_line_and_field(tmp_path: Path, database_url: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nentities:\n  - {entity: PERSON, action: shred}\n")
    result = _run(
        ["policy", "check", str(PROJECT_ROOT / "policies" / "hr.yaml"), str(bad)],
        _env(tmp_path, database_url),
    )
    assert result.returncode == 1
    assert "ok   " in result.stdout and "hr@" in result.stdout
    assert f"{bad}:3: field 'entities.0.action'" in result.stdout


def test_test_shows_findings_and_what_a_model_would_get(tmp_path: Path, database_url: str) -> None:
    env = _env(tmp_path, database_url)
    assert _run(["db", "upgrade"], env).returncode == 0
    result = _run(
        ["policy", "test", "hr"], env, stdin="Employee ID: 48213, Mary Jones, phone 212-555-0199."
    )
    assert result.returncode == 0, result.stderr
    assert "EMPLOYEE_ID" in result.stdout and "pseudonymize" in result.stdout
    last = result.stdout.strip().splitlines()[-1]
    assert "48213" not in last and "Mary Jones" not in last and "***-***-0199" in last


def test_versions_activate_and_roll_back(tmp_path: Path, database_url: str) -> None:
    env = _env(tmp_path, database_url)
    assert _run(["db", "upgrade"], env).returncode == 0
    edited = tmp_path / "strict.yaml"
    edited.write_text(
        (PROJECT_ROOT / "policies" / "strict.yaml")
        .read_text()
        .replace("min_score: 0.6\n", "min_score: 0.65\n")
    )

    imported = _run(
        ["policy", "import", str(edited), "--comment", "raise the bar", "--by", "ana"], env
    )
    assert imported.returncode == 0, imported.stderr
    assert "strict v2" in imported.stdout and "not active" in imported.stdout
    assert _run(["policy", "activate", "strict", "2", "--by", "ana"], env).returncode == 0
    history = _run(["policy", "history", "strict"], env).stdout.splitlines()
    assert (
        history[0].startswith("* v2") and "cli:ana" in history[0] and "raise the bar" in history[0]
    )
    assert _run(["policy", "rollback", "strict", "--by", "ana"], env).returncode == 0
    history = _run(["policy", "history", "strict"], env).stdout.splitlines()
    assert history[1].startswith("* v1")
    again = _run(["policy", "rollback", "strict"], env)
    assert again.returncode == 0  # back to v2: the previous activation
    assert _run(["policy", "history", "strict"], env).stdout.startswith("* v2")
