"""The `appliance` command line, run as a real process: db upgrade, models list, check, serve."""

from __future__ import annotations

import fcntl
import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from appliance.db.engine import alembic_config
from appliance.inference.bundled import BUNDLED
from tests.support.process import start_server

ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - what the CLI must refuse

BROKEN_POLICY = """\
name: default
entities:
  - entity: PERSON
    action: redact
  - entity: EMAIL_ADDRESS
    action: obliterate
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cli:
    data_dir: Path
    env: dict[str, str]
    cwd: Path

    def __call__(
        self, *args: str, timeout: float = 180, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "appliance", *args],
            env={**self.env, **env},
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture
def cli(tmp_path: Path, models_dir: Path) -> Cli:
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(
        APPLIANCE_DATA_DIR=str(data_dir),
        APPLIANCE_MODELS_DIR=str(models_dir),
        APPLIANCE_PORT=str(_free_port()),
    )
    work = tmp_path / "cwd"
    work.mkdir()
    return Cli(data_dir, env, work)


def head_revision(data_dir: Path) -> str:
    head = ScriptDirectory.from_config(
        alembic_config(f"sqlite:///{data_dir / 'appliance.db'}")
    ).get_current_head()
    assert head
    return head


def test_db_upgrade_creates_the_database(cli: Cli) -> None:
    assert not (cli.data_dir / "appliance.db").exists()
    result = cli("db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"database at revision {head_revision(cli.data_dir)}"
    assert (cli.data_dir / "appliance.db").is_file()
    again = cli("db", "upgrade")  # idempotent
    assert again.returncode == 0, again.stderr
    assert again.stdout == result.stdout


def test_models_list_shows_both_models_ok(cli: Cli) -> None:
    result = cli("models", "list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["NAME", "BACKEND", "SIZE", "STATUS"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {m.name for m in BUNDLED}
    for model in BUNDLED:
        backend, size, status = rows[model.name][1:4]
        assert backend == "llamacpp"
        assert re.fullmatch(r"\d+MB", size)
        assert status == "ok"
    assert "(default)" in next(line for line in lines if line.startswith("smollm2-135m"))


def test_models_list_reports_missing_and_corrupt_files(cli: Cli, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / BUNDLED[0].filename).write_bytes(b"GGUF but not the right one")
    result = cli("models", "list", APPLIANCE_MODELS_DIR=str(models))
    assert result.returncode == 0, result.stderr
    status = {line.split()[0]: line.split()[3] for line in result.stdout.splitlines()[1:]}
    assert status == {BUNDLED[0].name: "corrupt", BUNDLED[1].name: "missing"}


def test_check_passes_after_db_upgrade(cli: Cli) -> None:
    assert cli("db", "upgrade").returncode == 0
    result = cli("check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[FAIL]" not in result.stdout
    assert result.stdout.rstrip().endswith("all checks passed")
    for what in ("settings", "policy default", "database", "pii detector", "backend llamacpp"):
        assert f"[ok] {what}:" in result.stdout
    for model in BUNDLED:
        assert f"[ok] model {model.name}:" in result.stdout


def test_check_fails_on_a_broken_policy(cli: Cli, tmp_path: Path) -> None:
    assert cli("db", "upgrade").returncode == 0
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "default.yaml").write_text(BROKEN_POLICY)
    line = BROKEN_POLICY.splitlines().index("    action: obliterate") + 1
    result = cli("check", APPLIANCE_POLICIES_DIR=str(policies))
    assert result.returncode == 1
    fail = [row for row in result.stdout.splitlines() if row.startswith("[FAIL]")]
    assert len(fail) == 1, result.stdout
    assert fail[0].startswith("[FAIL] policies:")
    assert f"{policies / 'default.yaml'}:{line}:" in fail[0]
    assert "entities.1.action" in fail[0]
    assert "1 problem(s)" in result.stdout


def test_check_fails_before_db_upgrade(cli: Cli) -> None:
    result = cli("check")
    assert result.returncode == 1
    fail = [row for row in result.stdout.splitlines() if row.startswith("[FAIL]")]
    assert len(fail) == 1, result.stdout
    assert fail[0].startswith("[FAIL] database:")
    assert "appliance db upgrade" in fail[0]


def test_check_fails_on_missing_models(cli: Cli, tmp_path: Path) -> None:
    assert cli("db", "upgrade").returncode == 0
    empty = tmp_path / "no-models"
    empty.mkdir()
    result = cli("check", APPLIANCE_MODELS_DIR=str(empty))
    assert result.returncode == 1
    assert "[FAIL] backend llamacpp: missing model files" in result.stdout
    for model in BUNDLED:
        assert f"[FAIL] model {model.name}: missing or corrupt" in result.stdout


def test_serve_refuses_an_unmigrated_database(cli: Cli) -> None:
    result = cli("serve", timeout=120)
    assert result.returncode == 1
    assert "appliance db upgrade" in result.stderr
    assert "Serving on" not in result.stdout


@pytest.mark.parametrize("host", [ALL_INTERFACES, "::", "192.168.1.20", "example.com"])
def test_serve_refuses_a_non_loopback_address(cli: Cli, host: str) -> None:
    assert cli("db", "upgrade").returncode == 0
    result = cli("serve", "--host", host, timeout=120)
    assert result.returncode == 1
    assert f"refusing to bind to {host}" in result.stderr
    assert "Serving on" not in result.stdout


def test_serve_refuses_a_non_loopback_host_setting(cli: Cli) -> None:
    assert cli("db", "upgrade").returncode == 0
    result = cli("serve", timeout=120, APPLIANCE_HOST=ALL_INTERFACES)
    assert result.returncode == 1
    assert f"refusing to bind to {ALL_INTERFACES}" in result.stderr


def test_bad_setting_value_names_the_setting(cli: Cli) -> None:
    result = cli("check", APPLIANCE_PORT="notanumber")
    assert result.returncode == 1
    assert "setting 'port' (APPLIANCE_PORT)" in result.stderr
    assert result.stdout == ""


def test_bad_setting_in_config_file_names_the_setting(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "appliance.toml"
    config.write_text('log_level = "LOUD"\n')
    result = cli("models", "list", APPLIANCE_CONFIG_FILE=str(config))
    assert result.returncode == 1
    assert "setting 'log_level' (APPLIANCE_LOG_LEVEL)" in result.stderr


def test_unknown_command_is_a_usage_error(cli: Cli) -> None:
    result = cli("frobnicate")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_a_second_server_on_one_sqlite_database_is_refused(cli: Cli, tmp_path: Path) -> None:
    assert cli("db", "upgrade").returncode == 0
    server = start_server(cli.env, _free_port(), tmp_path / "server.log")
    database = (cli.data_dir / "appliance.db").resolve()
    try:
        second = cli("serve", "--port", str(_free_port()), timeout=120)
        assert second.returncode == 1
        assert (
            f"another `appliance serve` is already running on the SQLite database {database}"
            in second.stderr
        )
        assert "SQLite means one server process" in second.stderr
        assert "run several app processes on PostgreSQL" in second.stderr
        assert "Serving on" not in second.stdout
        # Every other command works beside the running server.
        for args in (
            ("db", "upgrade"),
            ("keys", "create", "--name", "beside", "--scopes", "chat"),
            ("audit", "verify"),
        ):
            result = cli(*args)
            assert result.returncode == 0, f"{args}: {result.stderr}"
        assert server.poll() is None
    finally:
        server.terminate()
        server.wait(timeout=60)
    # The lock went with the server: nothing holds it now.
    with open(f"{database}.lock", "rb+") as lock:
        fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.lockf(lock, fcntl.LOCK_UN)
