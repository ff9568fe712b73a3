"""`/metrics` on the running app: real requests move the right series, labels hold no text and
no identifiers, only the `metrics` scope (or an admin) may scrape, and every metric the shipped
alert rules and Grafana dashboard name exists in a real scrape.

Each scrape is parsed with `prometheus_client`'s own parser of the text format. The counters and
histograms belong to the test process (one app per process in production), so assertions compare
a scrape after the requests with one before them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlmodel import Session, col, select

from appliance.auth.models import ApiKey
from appliance.db.models import AuditEvent
from tests.conftest import RunningAppliance
from tests.integration.auth.conftest import Browser, new_key
from tests.integration.auth.conftest import browser_for as browser_for

MONITORING = Path(__file__).resolve().parents[2] / "ansible" / "roles" / "monitoring" / "files"
ALERTS = MONITORING / "appliance-alerts.yml"
DASHBOARD = MONITORING / "appliance-dashboard.json"

NAME = "Wilhelmina Zarkovski"
SSN = "078-05-1120"
CANARY_ID = "canaryid4242"
"""Planted in request text, a path parameter and the request id: none may become a label."""


class Scrape:
    """One parsed scrape: its families by name and every sample."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: list[Sample] = [s for f in self.families.values() for s in f.samples]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels` (0 if none)."""
        return sum(
            s.value for s in self.samples if s.name == name and labels.items() <= s.labels.items()
        )

    def label_values(self) -> set[str]:
        return {v for s in self.samples for v in s.labels.values()}


def scrape(client: httpx.Client) -> Scrape:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape(response.text)


def head_seq(app: RunningAppliance) -> int:
    return app.services.audit.head().seq


def test_requests_move_their_series_and_labels_hold_no_text_or_ids(
    appliance: RunningAppliance,
) -> None:
    client = appliance.client
    before = scrape(client)

    chat = client.post(
        "/api/v1/chat",
        json={"messages": [{"role": "user", "content": f"Say hello to {NAME}."}], "max_tokens": 4},
        headers={"X-Request-Id": f"req-{CANARY_ID}"},
    )
    assert chat.status_code == 200, chat.text
    redact = client.post("/api/v1/pii/redact", json={"text": f"{NAME}'s SSN is {SSN}."})
    assert redact.status_code == 200, redact.text
    bad = client.post("/api/v1/chat", json={"messages": [{"role": "wizard", "content": SSN}]})
    assert bad.status_code == 422, bad.text
    missing = client.get(f"/api/v1/batches/{CANARY_ID}")
    assert missing.status_code == 404
    batch = client.post(
        "/api/v1/batches",
        data={"task": "redact"},
        files={"file": ("items.jsonl", f'{{"text": "{NAME}"}}\n{{"text": "{SSN}"}}\n')},
    )
    assert batch.status_code == 202, batch.text

    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    # Requests by route template, method, status, the audit row's outcome and the policy name.
    receipt = chat.json()["receipt"]
    policy = receipt["policy"]["name"]
    chat_route = {"route": "/api/v1/chat", "method": "POST"}
    requests = "appliance_http_requests_total"
    assert (
        moved(requests, **chat_route, status="200", outcome=receipt["outcome"], policy=policy) == 1
    )
    assert moved(requests, **chat_route, status="422", outcome="invalid_input") == 1
    redacted = redact.json()["receipt"]
    assert redacted["outcome"] == "redacted"
    assert (
        moved(
            requests,
            route="/api/v1/pii/redact",
            status="200",
            outcome="redacted",
            policy=redacted["policy"]["name"],
        )
        == 1
    )
    batch_route = "/api/v1/batches/{job_id}"
    assert moved(requests, route=batch_route, method="GET", status="404") == 1
    assert moved("appliance_http_request_duration_seconds_count", **chat_route) == 2
    assert moved("appliance_http_request_duration_seconds_sum", **chat_route) > 0

    # The model's tokens and times, as the answer's usage reports them.
    model, usage = receipt["model"], chat.json()["usage"]
    assert moved("appliance_tokens_total", model=model, direction="input") >= usage["prompt_tokens"]
    assert (
        moved("appliance_tokens_total", model=model, direction="output")
        >= usage["completion_tokens"]
    )
    assert moved("appliance_time_to_first_token_seconds_count", model=model) >= 1
    assert moved("appliance_generation_duration_seconds_count", model=model) >= 1
    assert moved("appliance_queue_wait_seconds_count", model=model, priority="interactive") >= 1
    # The chat's messages and the redaction were each analysed (the bad request never was).
    assert moved("appliance_pii_analysis_duration_seconds_count") >= 2
    assert moved("appliance_audit_append_duration_seconds_count") >= 4

    # State read at scrape time.
    assert after.value("appliance_audit_chain_head_seq") == head_seq(appliance)
    assert after.value("appliance_audit_integrity_ok") == 1
    assert after.value("appliance_database_up") == 1
    assert after.value("appliance_detector_ready") == 1
    assert after.value("appliance_detector_load_seconds") > 0
    assert after.value("appliance_model_worker_state", model=model, state="ready") == 1
    assert "appliance_queue_depth" in after.families
    assert sum(s.value for s in after.samples if s.name == "appliance_batch_jobs") == 1

    # No label holds request text, a path parameter, a request id, or a key's or user's id.
    with Session(appliance.services.engine) as session:
        keys = session.exec(select(ApiKey)).all()
    secrets = {NAME, "Wilhelmina", "Zarkovski", SSN, CANARY_ID, "hello"}
    secrets |= {key.id for key in keys} | {key.prefix for key in keys}
    secrets |= {chat.headers["x-request-id"], receipt["audit_id"]}
    values = after.label_values()
    leaked = {(secret, v) for secret in secrets for v in values if secret.lower() in v.lower()}
    assert not leaked, leaked
    routes = {s.labels["route"] for s in after.samples if "route" in s.labels}
    assert all(r.startswith("/") for r in routes), routes
    assert not any("apikey:" in v or "user:" in v for v in values)


def test_only_the_metrics_scope_or_an_admin_may_scrape_and_refusals_are_audited(
    appliance: RunningAppliance, browser_for: Callable[..., Browser]
) -> None:
    url = f"{appliance.url}/metrics"
    metrics_key = new_key(appliance, ["metrics"])
    chat_key = new_key(appliance, ["chat", "admin", "audit"])

    seq = head_seq(appliance)
    anonymous = httpx.get(url, timeout=120)
    assert anonymous.status_code == 401
    assert "appliance_" not in anonymous.text
    wrong = httpx.get(url, headers={"Authorization": f"Bearer {chat_key}"}, timeout=120)
    assert wrong.status_code == 403
    assert "metrics" in wrong.json()["error"]["message"]
    with Session(appliance.services.engine) as session:
        rows = session.exec(select(AuditEvent).where(col(AuditEvent.seq) > seq)).all()
    assert [(r.action, r.target, r.status_code) for r in rows] == [
        ("request.refused", "/metrics", 401),
        ("apikey.denied", "/metrics", 403),
    ]

    # A served scrape writes no row: Prometheus scrapes every few seconds.
    seq = head_seq(appliance)
    served = httpx.get(url, headers={"Authorization": f"Bearer {metrics_key}"}, timeout=120)
    assert served.status_code == 200
    assert "appliance_http_requests_total" in served.text
    assert head_seq(appliance) == seq

    # The scope reaches nothing else.
    chat = httpx.post(
        f"{appliance.url}/api/v1/chat",
        json={"messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {metrics_key}"},
        timeout=120,
    )
    assert chat.status_code == 403
    staff = browser_for(appliance, "staff")
    assert staff.client.get("/metrics").status_code == 403
    admin = browser_for(appliance, "admin")
    assert admin.client.get("/metrics").status_code == 200


def test_metrics_can_be_turned_off(start_appliance: Callable[..., RunningAppliance]) -> None:
    app = start_appliance(wait_ready=False, metrics_enabled=False)
    response = app.client.get("/metrics")
    assert response.status_code == 404
    assert "metrics_enabled" in response.json()["error"]["message"]


_SUFFIXES = {
    "_total": "counter",
    "_bucket": "histogram",
    "_count": "histogram",
    "_sum": "histogram",
}
_FUNCTIONS = {"rate", "sum", "by", "histogram_quantile", "max", "min", "deriv", "le", "vector"}


def referenced_metrics(expression: str) -> set[str]:
    """Metric names in a PromQL expression (label names and functions left out)."""
    without_labels = re.sub(r"\{[^}]*\}", "", expression)
    without_groupings = re.sub(r"\b(by|without)\s*\([^)]*\)", "", without_labels)
    names = set(re.findall(r"\b([a-z_][a-z0-9_]*)\b(?!\s*\()", without_groupings))
    return {n for n in names if "_" in n and n not in _FUNCTIONS and not n.startswith("__")}


def shipped_expressions() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    expressions += [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    return expressions


def test_every_metric_in_the_alert_rules_and_dashboard_exists(appliance: RunningAppliance) -> None:
    found = scrape(appliance.client)
    families = {name: family.type for name, family in found.families.items()}
    samples = {s.name for s in found.samples}
    expressions = shipped_expressions()
    assert len(expressions) > 30
    names = set().union(*(referenced_metrics(e) for e in expressions))
    assert {"appliance_audit_integrity_ok", "appliance_backend_node_breaker_state"} <= names
    missing = []
    for name in sorted(names - {"up"}):  # `up` is Prometheus's own, per target
        if name in samples or families.get(name) not in (None, "counter", "histogram"):
            continue
        suffix = next((s for s in _SUFFIXES if name.endswith(s)), None)
        base = name.removesuffix(suffix) if suffix else name
        if suffix is None or families.get(base) != _SUFFIXES[suffix]:
            missing.append(name)
    assert not missing, f"named in the shipped rules or dashboard, absent from a scrape: {missing}"


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        ('sum by (le, model) (rate(x_seconds_bucket{priority="a"}[5m]))', {"x_seconds_bucket"}),
        (
            "appliance_a == 0 and on (instance) appliance_b_total",
            {"appliance_a", "appliance_b_total"},
        ),
    ],
)
def test_metric_names_are_read_from_expressions(expression: str, names: set[str]) -> None:
    assert referenced_metrics(expression) >= names
