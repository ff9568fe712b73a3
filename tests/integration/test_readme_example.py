"""The README's first example works as written: the commands of its "Try it" block, run by a
shell against a served appliance (only the port differs), get an answer with a privacy receipt."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from appliance.config import PROJECT_ROOT
from tests.support.process import appliance_cli, free_port, start_server


def try_it_block() -> str:
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Try it", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert match, "the Try it section has no sh block"
    return match.group(1)


def test_the_readme_example_answers_with_a_receipt(models_dir: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(
        APPLIANCE_DATA_DIR=str(tmp_path / "data"),
        APPLIANCE_MODELS_DIR=str(models_dir),
        APPLIANCE_MAX_TOKENS="16",
    )
    appliance_cli(env, "db", "upgrade")
    port = free_port()
    server = start_server(env, port, tmp_path / "server.log")
    try:
        script = try_it_block()
        assert "127.0.0.1:8000" in script
        result = subprocess.run(
            [
                "bash",
                "-euo",
                "pipefail",
                "-c",
                script.replace("127.0.0.1:8000", f"127.0.0.1:{port}"),
            ],
            env=env,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["message"]["role"] == "assistant"
    receipt = answer["receipt"]
    assert receipt["outcome"] in {"redacted", "pseudonymized", "allowed"}
    assert {"EMAIL_ADDRESS", "PERSON", "PHONE_NUMBER"} <= set(receipt["entities"])
    assert receipt["audit_id"]
