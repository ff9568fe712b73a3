"""Admin model pulls over REST: a job with progress, audited, against an Ollama backend.

The Ollama binary cannot run here: the backend is the FAKE Ollama of tests/support/fake_ollama.py
served over real HTTP on 127.0.0.1, replaying `/api/pull` progress lines as docs/api.md documents
them. The app reaches it through its own `ollama` client, as it would reach a real node.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from appliance.db.models import AuditEvent
from tests.conftest import RunningAppliance
from tests.integration.auth.conftest import new_key
from tests.support.fake_ollama import FakeOllamaServer

PULLED = "qwen2.5:0.5b"


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllamaServer]:
    """The FAKE Ollama on a loopback port; each progress line is sent 40 ms apart."""
    with FakeOllamaServer(line_delay_s=0.04) as server:
        yield server


@pytest.fixture
def app_with_ollama(
    start_appliance: Callable[..., RunningAppliance], fake_ollama: FakeOllamaServer, tmp_path: Path
) -> RunningAppliance:
    config = tmp_path / "inference.toml"
    config.write_text(
        f'[[backends]]\nname = "ollama"\nkind = "ollama"\n\n'
        f'[[backends.nodes]]\nurl = "{fake_ollama.url}"\n\n'
        '[[backends.models]]\nname = "llama3.2:3b"\n'
    )
    return start_appliance(inference_file=config)


def audit_rows(app: RunningAppliance, prefix: str) -> list[AuditEvent]:
    with Session(app.services.engine) as session:
        rows = session.exec(select(AuditEvent).order_by(AuditEvent.seq))  # type: ignore[arg-type]
        return [r for r in rows if r.action.startswith(prefix)]


def wait_for_end(app: RunningAppliance, pull_id: str) -> tuple[dict[str, Any], list[int]]:
    """Poll until the pull ends; returns its last state and every percent seen while running."""
    seen: list[int] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = app.client.get(f"/api/v1/models/pulls/{pull_id}").json()
        if state["status"] != "running":
            return state, seen
        seen.append(state["percent"])
        time.sleep(0.02)
    raise AssertionError("the pull did not end")


def test_admin_pulls_a_model_and_watches_its_progress(
    app_with_ollama: RunningAppliance, fake_ollama: FakeOllamaServer
) -> None:
    app = app_with_ollama
    assert PULLED not in {m["name"] for m in app.client.get("/api/v1/models").json()["models"]}
    listing = app.client.get("/api/v1/models/pulls").json()
    assert listing["backends"] == ["ollama", "ollama-0"]

    started = app.client.post("/api/v1/models/pulls", json={"backend": "ollama", "model": PULLED})

    assert started.status_code == 202, started.text
    job = started.json()
    assert job["status"] == "running" and job["nodes"] == ["ollama-0"]
    final, seen = wait_for_end(app, job["id"])
    # Progress moved through the download before it finished.
    assert any(0 < p < 100 for p in seen), seen
    assert seen == sorted(seen)
    assert final["status"] == "succeeded", final
    assert final["percent"] == 100 and final["phase"] == "success"
    assert final["total_bytes"] == sum(fake_ollama.fake.library[PULLED])
    assert final["completed_bytes"] == final["total_bytes"]
    # Ollama was asked for the model as docs/api.md describes, and the model is now routable.
    pulls = [body for path, body in fake_ollama.fake.requests if path == "/api/pull"]
    assert pulls == [{"model": PULLED, "insecure": False, "stream": True}]
    models = app.client.get("/api/v1/models").json()["models"]
    assert PULLED in {m["name"] for m in models}
    # Audited at the start and the end, naming backend and model; no other text.
    begun, ended = audit_rows(app, "model.pull_started"), audit_rows(app, "model.pulled")
    assert [(r.target, r.outcome) for r in begun] == [(f"ollama:{PULLED}", "ok")]
    assert [(r.target, r.outcome, r.model) for r in ended] == [(f"ollama:{PULLED}", "ok", PULLED)]
    assert ended[0].details["bytes"] == final["total_bytes"]


def test_a_pull_ollama_refuses_fails_with_its_reason(app_with_ollama: RunningAppliance) -> None:
    app = app_with_ollama
    job = app.client.post(
        "/api/v1/models/pulls", json={"backend": "ollama-0", "model": "no-such-model:1b"}
    ).json()

    final, _ = wait_for_end(app, job["id"])

    assert final["status"] == "failed"
    assert "file does not exist" in final["error"]
    [row] = audit_rows(app, "model.pulled")
    assert row.outcome != "ok" and row.target == "ollama-0:no-such-model:1b"


def test_pull_requests_are_checked_before_any_backend_is_asked(
    appliance: RunningAppliance,
) -> None:
    # The embedded engine serves only the bundled models: a clear 422 naming `backend`.
    embedded = appliance.client.post(
        "/api/v1/models/pulls", json={"backend": "llamacpp", "model": "llama3.2:3b"}
    )
    assert embedded.status_code == 422
    assert embedded.json()["error"]["field"] == "backend"
    assert "cannot pull" in embedded.json()["error"]["message"]
    unknown = appliance.client.post(
        "/api/v1/models/pulls", json={"backend": "nowhere", "model": "llama3.2:3b"}
    )
    assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "backend"
    bad_name = appliance.client.post(
        "/api/v1/models/pulls", json={"backend": "llamacpp", "model": "../etc/passwd"}
    )
    assert bad_name.status_code == 422 and bad_name.json()["error"]["field"] == "model"
    missing = appliance.client.get("/api/v1/models/pulls/nosuchpull")
    assert missing.status_code == 404
    assert appliance.client.get("/api/v1/models/pulls").json()["backends"] == []
    # Pulling is an admin action: a key without the admin scope is refused.
    staff_key = new_key(appliance, ["chat", "tasks"])
    refused = appliance.client.post(
        "/api/v1/models/pulls",
        json={"backend": "llamacpp", "model": "llama3.2:3b"},
        headers={"Authorization": f"Bearer {staff_key}"},
    )
    assert refused.status_code == 403
    assert audit_rows(appliance, "model.") == []
