"""A policy with no rule for a direction asks nothing of the detector there: its requests need
no detector at all, and a broken one does not stop them (it still stops every other policy's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import RunningAppliance
from tests.integration.api.test_fail_closed import BrokenDetector

PASSTHROUGH = """\
name: default
description: Answers are redacted for e-mail addresses; questions are not looked at.
entities:
  - {entity: EMAIL_ADDRESS, action: redact, applies_to: output}
output: {scan: false}
"""


def test_no_input_rule_needs_no_detector(start_appliance: Any, tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "default.yaml").write_text(PASSTHROUGH)
    app: RunningAppliance = start_appliance(policies_dir=policies)
    app.services.detector.set_ready(BrokenDetector())  # type: ignore[arg-type]

    text = "Write to jane.doe@example.com about the invoice."
    response = app.client.post(
        "/api/v1/chat",
        json={"messages": [{"role": "user", "content": text}], "max_tokens": 4},
        timeout=120,
    )

    assert response.status_code == 200, response.text
    assert response.json()["receipt"]["entities"] == {}
    assert [m.content for m in app.backend.requests[0].messages] == [text]
