"""Review queue and budget fixtures: policies that keep content or not, reviewers and admins."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlmodel import select

from appliance.config import PROJECT_ROOT
from appliance.db.engine import session_scope
from appliance.db.models import AuditEvent
from tests.conftest import RunningAppliance
from tests.integration.auth.conftest import browser_for  # noqa: F401  (a fixture)
from tests.integration.inference.conftest import llama_server  # noqa: F401  (a fixture)

Start = Callable[..., RunningAppliance]

LABELS = ["billing", "meeting"]


@pytest.fixture
def policies_dir(tmp_path: Path) -> Path:
    """The shipped default (keeps no content) and variants that keep content, allow external
    tiers, and refuse past the escalation budget."""
    directory = tmp_path / "policies"
    directory.mkdir()
    default = yaml.safe_load((PROJECT_ROOT / "policies" / "default.yaml").read_text())
    variants: dict[str, dict[str, Any]] = {
        "default": default,
        "kept": default | {"name": "kept", "retention": {"content": "encrypted", "days": 7}},
        "external-ok": default | {"name": "external-ok", "routing": {"allow_external": True}},
        "external-refuse": default
        | {
            "name": "external-refuse",
            "routing": {"allow_external": True, "over_budget": "refuse"},
        },
    }
    for name, body in variants.items():
        (directory / f"{name}.yaml").write_text(yaml.safe_dump(body))
    return directory


def classify(
    app: RunningAppliance, text: str, *, policy: str | None = None, **params: Any
) -> dict[str, Any]:
    """A classification through the task API (the suite's key); returns status and body."""
    body: dict[str, Any] = {"text": text, "params": {"labels": LABELS, **params}}
    if policy is not None:
        body["policy"] = policy
    response = app.client.post("/api/v1/tasks/classify", json=body, timeout=300)
    return {"status": response.status_code, "body": response.json(), "headers": response.headers}


def audit_rows(app: RunningAppliance, prefix: str = "") -> list[AuditEvent]:
    """Audit rows whose action starts with `prefix`, oldest first."""
    with session_scope(app.services.engine) as session:
        rows = session.exec(select(AuditEvent).order_by(AuditEvent.seq)).all()  # type: ignore[arg-type]
        return [r for r in rows if r.action.startswith(prefix)]
