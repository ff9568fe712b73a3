"""`/api/v1/eval` refusals and versions on the real app (SQLite and PostgreSQL), and an
extraction run with both models (SQLite: the run path is the same on both databases)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from sqlmodel import Session, select

from appliance.db.models import AuditEvent
from appliance.eval.samples import INVOICE_SCHEMA
from tests.conftest import RunningAppliance
from tests.integration.eval.test_runs import sample_lines, upload_hr, wait_run


def test_refusals_name_the_field_and_versions_grow(
    start_appliance: Callable[..., RunningAppliance],
) -> None:
    # gemma declared external: the default policy does not allow external tiers.
    app = start_appliance(model_tiers={"smollm2-135m": "small", "gemma3-270m": "external"})
    client = app.client

    def error(response: object, status: int) -> dict[str, str]:
        assert response.status_code == status, response.text  # type: ignore[attr-defined]
        body: dict[str, str] = response.json()["error"]  # type: ignore[attr-defined]
        assert set(body) >= {"code", "message"}
        return body

    bad = b'{"input": "a", "expected": "payroll"}\n{"input": "b", "expected": ""}\n'
    refused = client.post(
        "/api/v1/eval/sets",
        files={"file": ("bad.jsonl", bad)},
        data={"name": "hr", "task": "classify"},
    )
    assert error(refused, 422)["field"] == "row 2.expected"
    no_task = client.post(
        "/api/v1/eval/sets", files={"file": ("s.jsonl", bad[:38])}, data={"name": "hr"}
    )
    assert error(no_task, 422)["field"] == "task"
    bad_csv = client.post(
        "/api/v1/eval/sets",
        files={"file": ("s.csv", b"input,answer\na,b\n")},
        data={"name": "hr", "task": "classify"},
    )
    assert error(bad_csv, 422)["field"] == "row 1"
    bad_params = client.post(
        "/api/v1/eval/sets",
        files={"file": ("s.jsonl", bad[:38])},
        data={"name": "hr", "task": "classify", "params": json.dumps({"labels": "x"})},
    )
    assert error(bad_params, 422)["field"] == "params.labels"

    created = upload_hr(client, 4)
    assert (created["version"], created["items"]) == (1, 4)
    again = client.post(
        "/api/v1/eval/sets",
        files={"file": ("hr.jsonl", sample_lines("hr-tickets", 2))},
        data={"name": "hr", "task": "classify"},
    )
    assert error(again, 409)["field"] == "name"
    appended = client.post(
        "/api/v1/eval/sets/hr/items", json={"items": [{"input": "Chair broke", "expected": "x"}]}
    )
    assert appended.status_code == 201, appended.text
    assert (appended.json()["version"], appended.json()["items"]) == (2, 5)
    detail = client.get("/api/v1/eval/sets/hr").json()
    assert [v["number"] for v in detail["versions"]] == [2, 1]
    assert [v["items"] for v in detail["versions"]] == [5, 4]
    assert "Chair" not in json.dumps(detail)
    missing = client.post(
        "/api/v1/eval/sets/nope/items", json={"items": [{"input": "a", "expected": "b"}]}
    )
    assert error(missing, 404)["field"] == "set_name"

    unknown = client.post("/api/v1/eval/runs", json={"set": "hr", "models": ["gpt-9"]})
    assert error(unknown, 404)["code"] == "model_not_found"
    external = client.post(
        "/api/v1/eval/runs", json={"set": "hr", "models": ["smollm2-135m", "gemma3-270m"]}
    )
    body = error(external, 403)
    assert body["code"] == "external_refused" and body["field"] == "models"
    no_set = client.post("/api/v1/eval/runs", json={"set": "nope", "models": ["smollm2-135m"]})
    assert error(no_set, 404)["field"] == "set_name"
    no_version = client.post(
        "/api/v1/eval/runs", json={"set": "hr", "models": ["smollm2-135m"], "version": 9}
    )
    assert error(no_version, 404)["field"] == "version"
    judge = client.post(
        "/api/v1/eval/runs", json={"set": "hr", "models": ["smollm2-135m"], "judge": True}
    )
    assert error(judge, 422)["field"] == "judge"
    assert error(client.get("/api/v1/eval/runs/norun"), 404)["field"] == "run_id"

    # A run pins version 1 while the set is at version 2.
    run = client.post(
        "/api/v1/eval/runs", json={"set": "hr", "models": ["smollm2-135m"], "version": 1}
    ).json()
    assert (run["version"], run["total"]) == (1, 4)
    early = client.post(f"/api/v1/eval/runs/{run['id']}/apply", json={"bar": 0.5})
    if early.status_code != 200:  # finished already on a fast machine: then it applies
        assert error(early, 422)["field"] == "run_id"
    bar = client.get(f"/api/v1/eval/runs/{run['id']}", params={"bar": 2})
    assert error(bar, 422)["field"] == "bar"
    report = wait_run(client, run["id"], lambda r: r["status"] == "completed")
    assert report["metrics"]["models"]["smollm2-135m"]["items"] == 4
    listed = client.get("/api/v1/eval/runs").json()
    assert [(r["id"], r["status"], r["version"]) for r in listed] == [(run["id"], "completed", 1)]
    assert [
        (s["name"], s["version"], s["items"]) for s in client.get("/api/v1/eval/sets").json()
    ] == [("hr", 2, 5)]
    with Session(app.services.engine) as session:
        uploads = list(
            session.exec(select(AuditEvent).where(AuditEvent.action == "eval.set_uploaded"))
        )
    assert [(e.outcome, e.details["version"]) for e in uploads] == [("create", 1), ("append", 2)]
    assert all("input" not in json.dumps(e.details) for e in uploads)


def test_extraction_run_with_both_models(
    start_appliance: Callable[..., RunningAppliance], database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("the run path is the same on PostgreSQL; the classify runs cover it there")
    app = start_appliance()
    client = app.client
    created = client.post(
        "/api/v1/eval/sets",
        files={"file": ("inv.jsonl", sample_lines("invoices", 3))},
        data={"name": "inv", "task": "extract", "params": json.dumps({"schema": INVOICE_SCHEMA})},
    )
    assert created.status_code == 201, created.text
    run = client.post(
        "/api/v1/eval/runs", json={"set": "inv", "models": ["smollm2-135m", "gemma3-270m"]}
    ).json()
    report = wait_run(client, run["id"], lambda r: r["status"] == "completed", timeout=900)
    models = report["metrics"]["models"]
    for m in models.values():
        assert m["items"] == 3
        for key in ("json_validity", "field_exact_match", "field_f1", "exact_match"):
            assert 0.0 <= m[key] <= 1.0
        assert m["quality"] == m["field_f1"]
    # Constrained decoding: whatever a model answered itself is a JSON object.
    assert any(m["json_validity"] > 0 for m in models.values())
    assert report["metrics"]["quality_name"] == "field F1"


def test_ask_run_with_a_judge(
    start_appliance: Callable[..., RunningAppliance], database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("the run path is the same on PostgreSQL; the classify runs cover it there")
    app = start_appliance()
    client = app.client
    rows = [
        {
            "input": "The office opens at nine and closes at five.",
            "expected": "At nine.",
            "question": "When does the office open?",
        },
    ]
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    no_question = client.post(
        "/api/v1/eval/sets",
        files={"file": ("ask.jsonl", b'{"input": "a", "expected": "b"}\n')},
        data={"name": "faq", "task": "ask"},
    )
    assert no_question.status_code == 422
    assert no_question.json()["error"]["field"] == "item 1.question"
    created = client.post(
        "/api/v1/eval/sets",
        files={"file": ("ask.jsonl", data)},
        data={"name": "faq", "task": "ask"},
    )
    assert created.status_code == 201, created.text
    run = client.post(
        "/api/v1/eval/runs", json={"set": "faq", "models": ["smollm2-135m"], "judge": True}
    ).json()
    report = wait_run(client, run["id"], lambda r: r["status"] == "completed")
    m = report["metrics"]["models"]["smollm2-135m"]
    assert report["metrics"]["quality_name"] == "ROUGE-L F1"
    assert 0.0 <= m["rouge_l"] <= 1.0 and m["quality"] == m["rouge_l"]
    # The judge (the strongest model the default policy allows) rated the answer.
    assert m["judged"] == 1 and m["judge_acceptable"] in (0.0, 1.0)
    judged = [r for r in app.backend.requests if "Candidate answer" in r.messages[-1].content]
    assert [r.model for r in judged] == ["gemma3-270m"]
