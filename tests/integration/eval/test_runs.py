"""Evaluation runs on the real app with both bundled models, on SQLite and PostgreSQL.

A run over 12 shipped HR tickets compares smollm2-135m and gemma3-270m through the one gateway
path, yields per-model metrics that differ, a recommendation and a router calibration; applying
it changes the next task's receipt. A run survives a restart without redoing finished items.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
import pytest
from sqlmodel import Session, select

from appliance.audit.events import EvalRunFinished
from appliance.auth.actor import Actor
from appliance.db.models import AuditEvent
from appliance.eval.models import EvalResult
from appliance.eval.samples import HR_LABELS, SAMPLES_DIR
from tests.conftest import RunningAppliance

MODELS = ["smollm2-135m", "gemma3-270m"]


def sample_lines(name: str, count: int) -> bytes:
    """The first `count` rows of a shipped sample set."""
    lines = (SAMPLES_DIR / f"{name}.jsonl").read_bytes().splitlines(keepends=True)
    return b"".join(lines[:count])


def upload_hr(client: httpx.Client, count: int, name: str = "hr") -> dict[str, Any]:
    response = client.post(
        "/api/v1/eval/sets",
        files={"file": ("hr.jsonl", sample_lines("hr-tickets", count))},
        data={"name": name, "task": "classify", "params": json.dumps({"labels": HR_LABELS})},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_for_engine_threads(timeout: float = 60) -> None:
    """Wait until no worker thread is inside llama.cpp. Both apps of a restart test live in one
    process and share its loaded models; a real restart is a new process, where a scoring step
    left running by the old app cannot meet the new one."""
    deadline = time.monotonic() + timeout
    while any(
        "llama_cpp" in "".join(traceback.format_stack(frame))
        for ident, frame in sys._current_frames().items()
        if ident != threading.get_ident()
    ):
        assert time.monotonic() < deadline, "a model is still busy after the app stopped"
        time.sleep(0.1)


def wait_run(
    client: httpx.Client,
    run_id: str,
    until: Callable[[dict[str, Any]], bool],
    *,
    timeout: float = 600,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        report: dict[str, Any] = client.get(f"/api/v1/eval/runs/{run_id}").json()
        if until(report):
            return report
        assert time.monotonic() < deadline, f"run stuck at {report.get('progress')}"
        time.sleep(0.3)


def wait_event(app: RunningAppliance, action: str, target: str, *, timeout: float = 60) -> None:
    """Wait for the audit event itself (it commits with the run's final status)."""
    deadline = time.monotonic() + timeout
    while True:
        with Session(app.services.engine) as session:
            found = session.exec(
                select(AuditEvent.id).where(
                    AuditEvent.action == action, AuditEvent.target == target
                )
            ).first()
        if found is not None:
            return
        assert time.monotonic() < deadline, f"no {action} event for {target}"
        time.sleep(0.1)


def test_both_models_compared_recommended_calibrated_and_applied(
    appliance: RunningAppliance,
) -> None:
    client = appliance.client
    upload_hr(client, 12)
    started = client.post("/api/v1/eval/runs", json={"set": "hr", "models": MODELS})
    assert started.status_code == 202, started.text
    run = started.json()
    assert run["total"] == 24 and run["version"] == 1 and run["progress"]["done"] == 0

    report = wait_run(client, run["id"], lambda r: r["status"] == "completed")
    assert report["progress"] == report["progress"] | {"done": 24, "total": 24, "percent": 100.0}
    models = report["metrics"]["models"]
    small, large = models["smollm2-135m"], models["gemma3-270m"]
    for m in (small, large):
        assert m["items"] == 12
        assert 0.0 <= m["accuracy"] <= 1.0 and 0.0 <= m["macro_f1"] <= 1.0
        assert sum(map(sum, m["confusion"]["matrix"])) == 12
        assert m["latency_p95_ms"] >= m["latency_p50_ms"] > 0
        assert m["tokens_per_s"] > 0
        assert m["cost_per_1k_onprem"] > 0 and m["cost_per_1k_frontier"] > 0
    # The two models answer differently: their predictions (confusion matrices) differ.
    assert small["confusion"]["matrix"] != large["confusion"]["matrix"]
    # Every item went through the gateway as the pinned model, each with its own audit row.
    wait_event(appliance, "eval.run_finished", run["id"])
    with Session(appliance.services.engine) as session:
        results = list(session.exec(select(EvalResult).where(EvalResult.run_id == run["id"])))
        actions = [e.action for e in session.exec(select(AuditEvent))]
    assert {r.served_by for r in results if r.model == "smollm2-135m"} == {"smollm2-135m"}
    assert all(r.audit_id and r.output_sealed for r in results)
    assert b"payslip" not in b"".join(r.output_sealed or b"" for r in results)
    assert actions.count("eval.run_started") == 1 and actions.count("eval.run_finished") == 1

    # A bar the weaker model clears: the cheaper model is recommended, with its margin.
    low = min(small["quality"], large["quality"])
    cheap = min(models, key=lambda n: models[n]["cost_per_1k_onprem"])
    rec = client.get(f"/api/v1/eval/runs/{run['id']}", params={"bar": low}).json()
    assert rec["recommendation"]["model"] == cheap
    assert abs(rec["recommendation"]["margin"] - (models[cheap]["quality"] - low)) < 1e-9
    # A bar nobody clears: no model, the best one's shortfall.
    top = max(small["quality"], large["quality"])
    if top < 1.0:
        none = client.get(f"/api/v1/eval/runs/{run['id']}", params={"bar": 1.0}).json()
        assert none["recommendation"]["model"] is None
        assert none["recommendation"]["margin"] == top - 1.0

    # Calibration: a curve from no escalation to all, and the threshold for a reachable bar.
    bar = max(small["quality"], large["quality"]) if small["quality"] < large["quality"] else low
    report = client.get(f"/api/v1/eval/runs/{run['id']}", params={"bar": bar}).json()
    calibration = report["calibration"]
    assert calibration["small"] == cheap
    curve = calibration["curve"]
    assert curve[0]["threshold"] == 0.0 and curve[0]["escalation_rate"] == 0.0
    assert curve[-1]["escalation_rate"] == 1.0
    assert calibration["threshold"] is not None and calibration["quality"] >= bar
    assert all(
        p["escalation_rate"] >= calibration["escalation_rate"] for p in curve if p["quality"] >= bar
    )

    # Apply: the next classification's receipt shows the applied model and threshold.
    applied = client.post(f"/api/v1/eval/runs/{run['id']}/apply", json={"bar": bar})
    assert applied.status_code == 200, applied.text
    body = applied.json()
    assert body["model"] == cheap and body["threshold"] == calibration["threshold"]
    assert client.get("/api/v1/eval/routing").json() == [
        {"task": "classify", "model": cheap, "threshold": body["threshold"], "run_id": run["id"]}
    ]
    task = client.post(
        "/api/v1/tasks/classify",
        json={"text": "My payslip is missing overtime.", "params": {"labels": HR_LABELS}},
    )
    assert task.status_code == 200, task.text
    route = task.json()["receipt"]["route"]
    first_model = (
        route["escalations"][0]["from"]["model"] if route["escalations"] else route["model"]
    )
    assert first_model == cheap
    assert f"confidence threshold {body['threshold']:.2f}" in route["reason"]
    assert run["id"] in route["reason"]
    with Session(appliance.services.engine) as session:
        applied_rows = list(
            session.exec(select(AuditEvent).where(AuditEvent.action == "eval.applied"))
        )
    assert len(applied_rows) == 1 and applied_rows[0].target == "classify"
    assert applied_rows[0].details["model"] == cheap


def test_a_run_survives_a_restart_without_redoing_items(
    start_appliance: Callable[..., RunningAppliance],
) -> None:
    first = start_appliance()
    upload_hr(first.client, 8)
    run = first.client.post("/api/v1/eval/runs", json={"set": "hr", "models": MODELS}).json()
    wait_run(first.client, run["id"], lambda r: r["progress"]["done"] >= 4)
    first.server.__exit__(None, None, None)  # stop the app mid-way
    first.server._thread.join(timeout=120)  # type: ignore[attr-defined]
    assert not first.server._thread.is_alive(), "the first app did not stop"  # type: ignore[attr-defined]
    wait_for_engine_threads()
    with Session(first.services.engine) as session:
        rows = list(session.exec(select(EvalResult).where(EvalResult.run_id == run["id"])))
    finished = {(r.model, r.seq): r.audit_id for r in rows if r.status != "pending"}
    assert 4 <= len(finished) < 16

    second = start_appliance()  # a new app on the same database and data directory
    client = httpx.Client(base_url=second.url, headers=first.client.headers, timeout=60)
    with client:
        report = wait_run(client, run["id"], lambda r: r["status"] == "completed")
    assert report["progress"]["done"] == 16
    # Only the unfinished items ran again: one scored request each, none for finished ones.
    assert len(second.backend.requests) == 16 - len(finished)
    with Session(second.services.engine) as session:
        rows = list(session.exec(select(EvalResult).where(EvalResult.run_id == run["id"])))
    assert {(r.model, r.seq): r.audit_id for r in rows if (r.model, r.seq) in finished} == finished


def test_a_finished_run_and_its_audit_event_commit_together(
    appliance: RunningAppliance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's final status and `eval.run_finished` are one commit: when the event cannot be
    written, the run is not marked finished either (and the next attempt writes both). The run
    is the command line's (`runner="cli"`), so the server's runner leaves it to the test."""
    evaluation = appliance.services.evaluation
    assert evaluation is not None
    upload_hr(appliance.client, 2, name="atomic")
    actor = Actor(id="tester", role="admin", source="test")
    run = anyio.run(
        lambda: evaluation.start(
            actor, set_name="atomic", models=[MODELS[0]], wake=False, runner="cli"
        )
    )

    def finish() -> Awaitable[bool]:
        return evaluation.finish(run["id"], holder=None)  # a command-line run: no claim holds it

    def refuse(self: EvalRunFinished) -> Any:
        raise RuntimeError("the trail refused the event")

    with monkeypatch.context() as patch:
        patch.setattr(EvalRunFinished, "record", refuse)
        with pytest.raises(RuntimeError):
            anyio.run(finish)
    assert evaluation.runs.get(run["id"]).status == "queued"
    assert finished_events(appliance, run["id"]) == 0

    assert anyio.run(finish) is True
    # No item ran, so the run failed; status and event arrived in the same commit.
    assert evaluation.runs.get(run["id"]).status == "failed"
    assert finished_events(appliance, run["id"]) == 1


def finished_events(app: RunningAppliance, run_id: str) -> int:
    with Session(app.services.engine) as session:
        return len(
            list(
                session.exec(
                    select(AuditEvent.id).where(
                        AuditEvent.action == "eval.run_finished", AuditEvent.target == run_id
                    )
                )
            )
        )
