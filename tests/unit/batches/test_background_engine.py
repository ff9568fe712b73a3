"""Background work on the real embedded engine: it gives way to interactive requests.

A batch item runs on its own instance of the model and pauses between its evaluation steps while
an interactive request is in flight; an interactive request on the same model is served in the
meantime instead of waiting for the item.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from appliance.inference.base import Delta, GenerationRequest, Message
from appliance.inference.bundled import BUNDLED
from appliance.inference.gate import InteractiveActivity, background
from appliance.inference.llamacpp import LlamaCppBackend, LocalModel

MODEL = "smollm2-135m"
LABELS = ["meeting", "invoice", "recipe"]


@pytest.fixture
def engine(models_dir: Path) -> tuple[LlamaCppBackend, InteractiveActivity]:
    # A long defer, so a paused step cannot run on its own during the test.
    activity = InteractiveActivity(max_defer_s=120)
    small = [LocalModel(m.name, models_dir / m.filename, m.chat_format) for m in BUNDLED]
    backend = LlamaCppBackend(
        [m for m in small if m.name == MODEL],
        threads=1,
        context=1024,
        queue_size=2,
        retry_after=1,
        timeout_s=120,
        background_threads=1,
        background_quiet_s=0.05,
        activity=activity,
    )
    backend.load(MODEL)
    return backend, activity


def ask(text: str, max_tokens: int = 8) -> GenerationRequest:
    return GenerationRequest(model=MODEL, messages=[Message("user", text)], max_tokens=max_tokens)


async def test_background_scoring_waits_while_interactive_traffic_is_in_flight(
    engine: tuple[LlamaCppBackend, InteractiveActivity],
) -> None:
    backend, activity = engine
    activity.begin()
    with background():
        item = asyncio.create_task(backend.score_choices(ask("Pay the bill by Friday."), LABELS))
    await asyncio.sleep(1.0)
    assert not item.done(), "the batch step ran while an interactive request was in flight"
    assert backend.gate(MODEL, background=True).busy
    assert not backend.gate(MODEL).busy  # the interactive instance stays free

    # The interactive request is served while the batch item is paused.
    answer = await backend.generate(ask("Say hello."))
    assert answer.usage.completion_tokens > 0
    assert not item.done()

    activity.end()
    scores = await asyncio.wait_for(item, timeout=120)
    assert set(scores) == set(LABELS)
    assert all(score < 0 for score in scores.values())  # log-probabilities


async def test_background_generation_pauses_between_tokens(
    engine: tuple[LlamaCppBackend, InteractiveActivity],
) -> None:
    backend, activity = engine
    received: list[Delta] = []
    started = asyncio.Event()

    async def consume() -> None:
        async for delta in backend.stream(
            ask("Count from one to one hundred, separated by commas.", max_tokens=64)
        ):
            received.append(delta)
            started.set()

    with background():
        consumer = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), timeout=120)
    activity.begin()
    await asyncio.sleep(0.5)  # the step in progress may still arrive
    paused_at = len(received)
    await asyncio.sleep(1.5)
    assert len(received) == paused_at, "the generation kept going while a request was in flight"
    assert not consumer.done()
    activity.end()
    await asyncio.wait_for(consumer, timeout=120)
    assert received[-1].finish_reason in {"stop", "length"}
    assert len(received) > paused_at
    assert not backend.gate(MODEL, background=True).busy
