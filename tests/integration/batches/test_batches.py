"""`/api/v1/batches` on the real app and model: progress, results, restart, refusals.

The suite runs 60 classify items (and a restart mid-way); the 1,000-item run with the
interactive-latency measurement is `make bench-batch` (tests/bench/BATCH.md), since 1,000 items
on the shared CPU take minutes.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlmodel import Session, select

from appliance.auth import apikeys
from appliance.auth.roles import SCOPES
from appliance.batches.models import BatchItem, BatchJob
from appliance.batches.runner import sweep_batches
from appliance.db.models import AuditEvent, utcnow
from tests.conftest import RunningAppliance

LABELS = ["meeting", "invoice", "recipe"]
SENTENCES = [
    "Team sync moved to Thursday at ten in room four.",
    "Please pay the attached bill for March by Friday.",
    "Whisk two eggs with flour and bake for twenty minutes.",
]


def jsonl(count: int) -> bytes:
    return b"".join(
        json.dumps({"id": f"row-{i}", "text": f"{SENTENCES[i % 3]} (#{i})"}).encode() + b"\n"
        for i in range(count)
    )


def create(client: httpx.Client, data: bytes, name: str = "items.jsonl", **fields: str) -> Any:
    form = {"task": "classify", "params": json.dumps({"labels": LABELS})} | fields
    return client.post("/api/v1/batches", files={"file": (name, data)}, data=form)


def wait_for(
    client: httpx.Client, job_id: str, until: Callable[[dict[str, Any]], bool], timeout: float
) -> list[dict[str, Any]]:
    """Poll the job until `until(status)`; returns every status seen."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        status = client.get(f"/api/v1/batches/{job_id}").json()
        seen.append(status)
        if until(status):
            return seen
        assert time.monotonic() < deadline, f"batch stuck at {status}"
        time.sleep(0.25)


def audit_counts(app: RunningAppliance, job_id: str) -> Counter[str]:
    with Session(app.services.engine) as session:
        rows = session.exec(
            select(AuditEvent.request_id).where(
                AuditEvent.request_id.startswith(f"batch:{job_id}:")  # type: ignore[union-attr]
            )
        )
        return Counter(str(r) for r in rows)


def test_batch_completes_with_progress_and_results(appliance: RunningAppliance) -> None:
    response = create(appliance.client, jsonl(60))
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["counts"] == {"total": 60, "done": 0, "failed": 0, "pending": 60}
    seen = wait_for(appliance.client, job["id"], lambda s: s["status"] == "completed", timeout=900)
    final = seen[-1]
    assert final["counts"] == {"total": 60, "done": 60, "failed": 0, "pending": 0}
    assert final["finished_at"] and final["eta_s"] == 0.0
    # Progress was visible on the way: part-way counts with a rate and an ETA.
    partial = [s for s in seen if 0 < s["counts"]["done"] < 60 and s["rate_per_s"]]
    assert partial, "no progress was observed"
    assert all(s["eta_s"] is not None and s["eta_s"] > 0 for s in partial)

    lines = appliance.client.get(f"/api/v1/batches/{job['id']}/results").text.splitlines()
    results = [json.loads(line) for line in lines]
    assert [r["seq"] for r in results] == list(range(60))
    assert [r["id"] for r in results] == [f"row-{i}" for i in range(60)]
    assert {r["output"]["label"] for r in results} <= set(LABELS)
    # The batch path gives what the interactive task endpoint gives for the same input.
    for seq in (0, 1, 2):
        single = appliance.client.post(
            "/api/v1/tasks/classify",
            json={"text": f"{SENTENCES[seq]} (#{seq})", "params": {"labels": LABELS}},
            timeout=300,
        ).json()
        assert single["output"] == results[seq]["output"]

    rows = list(csv.DictReader(io.StringIO(
        appliance.client.get(f"/api/v1/batches/{job['id']}/results?format=csv").text
    )))  # fmt: skip
    assert [row["id"] for row in rows] == [f"row-{i}" for i in range(60)]
    assert json.loads(rows[0]["output"]) == results[0]["output"]
    assert rows[0]["audit_id"] == results[0]["audit_id"] if "audit_id" in results[0] else True
    # Every item went through the gateway once: one audit row each, no text in it.
    counts = audit_counts(appliance, job["id"])
    assert len(counts) == 60 and set(counts.values()) == {1}


def test_csv_input_and_per_item_failures(appliance: RunningAppliance) -> None:
    data = (
        b"id,text,params\r\na,Team sync on Thursday.,\r\n"
        b'b,Bake the bread.,"{""labels"": [""x""]}"\r\n'
    )
    job = create(appliance.client, data, name="items.csv").json()
    wait_for(appliance.client, job["id"], lambda s: s["status"] == "completed", timeout=300)
    results = [
        json.loads(line)
        for line in appliance.client.get(f"/api/v1/batches/{job['id']}/results").text.splitlines()
    ]
    assert results[0]["status"] == "done" and results[0]["output"]["label"] in LABELS
    # One label is not a classification: that item fails on its own, the job still completes.
    assert results[1]["status"] == "failed"
    assert results[1]["error"]["code"] == "invalid_input"


def test_batch_survives_a_restart_without_redoing_items(
    start_appliance: Callable[..., RunningAppliance],
) -> None:
    first = start_appliance()
    job = create(first.client, jsonl(60)).json()
    wait_for(first.client, job["id"], lambda s: s["counts"]["done"] >= 15, timeout=600)
    first.server.__exit__(None, None, None)  # stop the app mid-way
    with Session(first.services.engine) as session:
        items = list(session.exec(select(BatchItem).where(BatchItem.job_id == job["id"])))
    finished_before = {i.seq for i in items if i.status != "pending"}
    assert 15 <= len(finished_before) < 60

    second = start_appliance()  # a new app on the same database and data directory
    owner = httpx.Client(base_url=second.url, headers=first.client.headers, timeout=60)
    with owner:
        wait_for(owner, job["id"], lambda s: s["status"] == "completed", timeout=900)
        status = owner.get(f"/api/v1/batches/{job['id']}").json()
        results = [
            json.loads(line)
            for line in owner.get(f"/api/v1/batches/{job['id']}/results").text.splitlines()
        ]
    assert status["counts"]["done"] + status["counts"]["failed"] == 60
    assert all(r["status"] == "done" for r in results)
    counts = audit_counts(second, job["id"])
    # Items finished before the stop ran once; only the one in flight may have run twice.
    for seq in finished_before:
        assert counts[f"batch:{job['id']}:{seq}"] == 1, seq
    assert len(counts) == 60


def test_refusals_and_owners(appliance: RunningAppliance) -> None:
    bad = create(appliance.client, b'{"text": "ok"}\n{"nope": 1}\n')
    assert bad.status_code == 422
    assert bad.json()["error"] == {
        "code": "invalid_input",
        "message": "line 2: unknown field(s) nope",
        "field": "file",
    }
    assert create(appliance.client, jsonl(1), task="no-such-task").status_code == 404
    missing_labels = create(appliance.client, jsonl(1), params="{}")
    assert missing_labels.status_code == 422
    no_task = appliance.client.post(
        "/api/v1/batches", files={"file": ("a.jsonl", jsonl(1))}, data={}
    )
    assert no_task.status_code == 422 and no_task.json()["error"]["field"] == "task"

    job = create(appliance.client, jsonl(2)).json()
    _, key = apikeys.create(
        appliance.services.engine,
        appliance.server.app.state.identity.pepper,
        name="other",
        scopes=list(SCOPES),
    )
    with httpx.Client(
        base_url=appliance.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as other:
        assert other.get(f"/api/v1/batches/{job['id']}").status_code == 404
        assert other.get(f"/api/v1/batches/{job['id']}/results").status_code == 404
        assert other.delete(f"/api/v1/batches/{job['id']}").status_code == 404
    assert appliance.client.delete(f"/api/v1/batches/{job['id']}").status_code == 204
    assert appliance.client.get(f"/api/v1/batches/{job['id']}").status_code == 404


def sealed_probe(app: RunningAppliance, job_id: str) -> bytes:
    """A slice of the ciphertext of the job's first input."""
    with Session(app.services.engine) as session:
        item = session.exec(
            select(BatchItem).where(BatchItem.job_id == job_id, BatchItem.seq == 0)
        ).one()
        return item.input_sealed[12:44]


def database_files(app: RunningAppliance) -> bytes | None:
    """The SQLite database and its logs, as bytes; None on PostgreSQL."""
    if app.services.engine.dialect.name != "sqlite":
        return None
    path = Path(str(app.services.engine.url.database))
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_deleted_and_expired_jobs_leave_no_sealed_bytes(appliance: RunningAppliance) -> None:
    deleted, expired, kept = (create(appliance.client, jsonl(2)).json()["id"] for _ in range(3))
    probes = {job_id: sealed_probe(appliance, job_id) for job_id in (deleted, expired)}
    before = database_files(appliance)
    assert before is None or all(probe in before for probe in probes.values())

    assert appliance.client.delete(f"/api/v1/batches/{deleted}").status_code == 204
    with Session(appliance.services.engine) as session:
        job = session.get(BatchJob, expired)
        assert job is not None
        job.expires_at = utcnow() - timedelta(seconds=1)
        session.add(job)
        session.commit()
    # Driven here rather than waited for: the app's own sweeper runs every five minutes.
    assert asyncio.run(sweep_batches(appliance.services.batches)) == 1

    with Session(appliance.services.engine) as session:
        left = {j.id for j in session.exec(select(BatchJob))}
        items = {i.job_id for i in session.exec(select(BatchItem))}
    assert left == items == {kept}
    after = database_files(appliance)
    assert after is None or not any(probe in after for probe in probes.values())


def test_a_deleted_job_stops_sending_items_to_the_model(appliance: RunningAppliance) -> None:
    job_id = create(appliance.client, jsonl(30)).json()["id"]
    wait_for(appliance.client, job_id, lambda s: s["counts"]["done"] >= 2, timeout=120)

    before_delete = len(audit_counts(appliance, job_id))
    assert appliance.client.delete(f"/api/v1/batches/{job_id}").status_code == 204
    time.sleep(4.0)

    # At most the items in progress at the delete finish; the rest read before it never run.
    in_progress = appliance.services.settings.batch_concurrency
    assert len(audit_counts(appliance, job_id)) <= before_delete + in_progress
