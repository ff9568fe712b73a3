"""Property-based fuzzing of every documented operation from the app's own OpenAPI document:
no generated request, valid or not, may produce a 5xx. At least 1,000 cases per run
(`make fuzz` runs more)."""

from __future__ import annotations

import contextlib
import math
import os
from collections import Counter
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.conftest import RunningAppliance

CASES = int(os.environ.get("APPLIANCE_FUZZ_CASES", "1000"))
# Run last: they may revoke the credentials the fuzzer itself uses.
DESTRUCTIVE = ("DELETE", "disable", "revoke", "role", "purge", "logout", "sessions")


def _order(label: str) -> tuple[int, str]:
    return (1 if any(word in label for word in DESTRUCTIVE) else 0, label)


def test_no_generated_request_causes_a_server_error(start_appliance: Any) -> None:
    app: RunningAppliance = start_appliance(max_tokens=4, max_tokens_limit=4)
    document = app.client.get("/schema/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    operations = sorted(
        (result.ok() for result in schema.get_all_operations()), key=lambda op: _order(op.label)
    )
    assert len(operations) >= 10, "the OpenAPI document lists the API"
    per_mode = math.ceil(CASES / (2 * len(operations))) + 2
    auth = {"Authorization": app.client.headers["Authorization"]}
    statuses: Counter[int] = Counter()
    errors: list[str] = []

    def fuzz(operation: Any, mode: GenerationMode) -> None:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=per_mode,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            # schemathesis serialises each case itself (JSON, form, multipart uploads).
            response = case.call(base_url=app.url, headers=auth, timeout=60)
            statuses[response.status_code] += 1
            if response.status_code >= 500:
                errors.append(f"{case.method} {case.formatted_path}: {response.status_code}")

        # Unsatisfiable: nothing to negate (an operation without parameters or body).
        with contextlib.suppress(Unsatisfiable):
            run()

    safe = [op for op in operations if _order(op.label)[0] == 0]
    for _round in range(8):
        for operation in safe:
            for mode in GenerationMode:
                fuzz(operation, mode)
        if sum(statuses.values()) >= CASES:
            break
    for operation in operations[len(safe) :]:
        for mode in GenerationMode:
            fuzz(operation, mode)

    total = sum(statuses.values())
    assert total >= CASES, f"only {total} cases generated"
    assert errors == [], f"{len(errors)} server errors, e.g. {errors[:5]}"
    assert any(400 <= code < 500 for code in statuses), "negative cases were refused"
    assert statuses[200] + statuses[201] > 0, "positive cases were served"
