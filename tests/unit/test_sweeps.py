"""Expiry sweeps run each on its own: one that fails never keeps the others' content."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from appliance import app as app_module


class Sweep:
    def __init__(self, removed: int | None) -> None:
        self.removed = removed
        self.calls = 0

    async def sweep(self) -> int:
        self.calls += 1
        if self.removed is None:
            raise RuntimeError("database went away")
        return self.removed


async def test_a_failing_sweep_does_not_stop_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    batches = Sweep(None)

    async def sweep_batches(_: Any) -> int:
        return await batches.sweep()

    monkeypatch.setattr(app_module, "sweep_batches", sweep_batches)
    history, review = Sweep(None), Sweep(2)
    services = SimpleNamespace(batches=object(), history=history, review=review)

    removed = await app_module._sweep_batches_and_reviews(services)  # type: ignore[arg-type]

    assert removed == 2
    assert (batches.calls, history.calls, review.calls) == (1, 1, 1)
