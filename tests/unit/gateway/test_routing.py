"""The routing step reads a task's applied override once per request, off the event loop: the
route it decides carries the override's confidence threshold to the task runner."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from appliance.eval.overrides import Override, RoutingOverrides
from appliance.gateway.routing import RoutingSteps
from appliance.gateway.types import ChatInput, Trace
from appliance.inference.base import GenerationRequest, Message, ModelInfo
from appliance.inference.openai_compat import OpenAICompatBackend
from appliance.inference.registry import Registry
from appliance.tasks import runner
from appliance.tasks.runner import TaskRules
from tests.support.windows import SilentServer, assert_waits_off_the_loop, silent_engine


class CountingOverrides:
    """A fake `RouteOverrides` (the real one reads a database counter): one override for
    `classify`, and how often it was asked."""

    def __init__(self, override: Override) -> None:
        self.override = override
        self.reads = 0

    def for_task(self, task: str | None) -> Override | None:
        self.reads += 1
        return self.override if task == self.override.task else None


@pytest.fixture
def steps() -> RoutingSteps:
    # A declared model is routed to without being asked anything; this test calls no model.
    node = OpenAICompatBackend(base_url="http://127.0.0.1:9/v1", name="node")
    model = ModelInfo(name="small-1", backend="node", context_length=4096, tier="small")
    return RoutingSteps.plain(Registry([], declared=[(node, model)]), default_model="small-1")


@pytest.mark.parametrize("named", [None, "small-1"])
async def test_a_task_request_reads_its_override_once(
    steps: RoutingSteps, named: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides = CountingOverrides(Override("classify", None, 0.9, "r1"))
    steps.overrides = overrides
    seen: list[TaskRules] = []

    async def run(*args: Any) -> dict[str, Any]:
        seen.append(args[-1])  # the rules the runner was given
        return {"label": "x"}

    monkeypatch.setattr(runner, "run", run)
    message = Message(role="user", content="a text")
    trace = Trace(actor=None, request_id="r", task="classify")  # type: ignore[arg-type]
    chat = ChatInput(messages=[message], task="classify", model=named)
    trace.route = await steps.decide_async(None, chat)
    assert trace.route.threshold == 0.9  # a named model leaves the threshold in force
    template = steps.tasks.get("classify")
    request = GenerationRequest(model=trace.route.model, messages=[message], max_tokens=8)
    await steps.run_template(trace, template, {}, request)

    assert [rules.confidence_threshold for rules in seen] == [0.9]
    assert overrides.reads == 1


async def test_the_override_read_leaves_the_event_loop_free(steps: RoutingSteps) -> None:
    with SilentServer() as silent:
        # The `routing` counter on a host that takes the connection and never answers.
        gone = silent_engine(silent)
        steps.overrides = RoutingOverrides(gone)
        chat = ChatInput(messages=[Message(role="user", content="a text")], task="classify")
        deciding = asyncio.create_task(steps.decide_async(None, chat))
        await assert_waits_off_the_loop(silent, deciding)
        with pytest.raises(OperationalError):
            await asyncio.wait_for(deciding, 60)
    gone.dispose()


async def test_a_request_without_a_task_reads_no_override(steps: RoutingSteps) -> None:
    overrides = CountingOverrides(Override("classify", None, 0.9, "r1"))
    steps.overrides = overrides
    route = await steps.decide_async(None, ChatInput(messages=[Message(role="user", content="hi")]))
    assert route.threshold is None
    assert overrides.reads == 0
