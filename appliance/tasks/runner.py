"""Run one task template against one model. The gateway supplies the model and the text.

The runner never sees raw text: it gets the policy-transformed text from the gateway. When a task
cannot be done well on the current model it raises `Escalate` with the reason; the gateway asks
the router for the next tier and runs the task again there.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from appliance.errors import InvalidInput, OutputInvalid
from appliance.inference.base import Generation, GenerationRequest, Message
from appliance.inference.router import estimate_tokens
from appliance.tasks.chunking import chunk_text
from appliance.tasks.templates import TaskTemplate

# Tokens kept free for the template's own words around the text.
PROMPT_RESERVE = 96


Progress = Callable[[str, int, int], None]
"""Called as `(stage, done, total)` while long work advances: `chunks` then `combining`."""

progress_hook: ContextVar[Progress | None] = ContextVar("task_progress", default=None)
"""Set by a caller that shows progress (the workspace's event stream) around `run_task`; the
runner reports through it without knowing who listens. Unset, reporting costs nothing."""


def report(stage: str, done: int, total: int) -> None:
    """Tell the listener of this task (if any) how far it got."""
    hook = progress_hook.get()
    if hook is not None:
        hook(stage, done, total)


class Escalate(Exception):
    """The task needs a bigger model; `fallback` is the best output so far, if any."""

    def __init__(self, reason: str, *, fallback: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fallback = fallback


class Engine(Protocol):
    """The model the gateway routed the task to."""

    model: str
    context_length: int

    async def generate(self, request: GenerationRequest) -> Generation:
        """Generate with the routed model."""
        ...

    async def score(
        self, request: GenerationRequest, choices: list[str]
    ) -> dict[str, float] | None:
        """Score closed answers, or None when the backend cannot."""
        ...


@dataclass(frozen=True)
class TaskRules:
    """Escalation triggers and limits (from settings)."""

    schema_retries: int = 1
    escalate_on_schema_failure: bool = True
    confidence_threshold: float = 0.5
    escalate_on_low_confidence: bool = True
    escalate_on_context: bool = True
    max_chunks: int = 8


def _fill(template: str, **values: Any) -> str:
    # str.format would trip over braces in the user's text; replace named fields only.
    out = template
    for key, value in values.items():
        out = out.replace("{" + key + "}", str(value))
    return out


def _request(engine: Engine, prompt: str, max_tokens: int, **kwargs: Any) -> GenerationRequest:
    return GenerationRequest(
        model=engine.model,
        messages=[Message(role="user", content=prompt)],
        max_tokens=max_tokens,
        **kwargs,
    )


def _ensure_fits(engine: Engine, text: str, template: TaskTemplate, rules: TaskRules) -> None:
    needed = estimate_tokens(text) + template.max_tokens + PROMPT_RESERVE
    if needed <= engine.context_length:
        return
    reason = (
        f"input of about {estimate_tokens(text)} tokens does not fit the "
        f"{engine.context_length}-token context of {engine.model}"
    )
    if rules.escalate_on_context:
        raise Escalate(reason)
    raise InvalidInput(reason, field="text")


async def run(
    template: TaskTemplate,
    text: str,
    params: dict[str, Any],
    engine: Engine,
    rules: TaskRules,
) -> dict[str, Any]:
    """The task's output (valid against its output schema) on `engine`'s model."""
    name = template.name
    if name == "summarize":
        return await _summarize(template, text, params, engine, rules)
    if name == "extract":
        return await _extract(template, text, params, engine, rules)
    if name == "classify":
        return await _classify(template, text, params, engine, rules)
    if name == "ask":
        _ensure_fits(engine, text, template, rules)
        prompt = _fill(template.prompt, text=text, question=params["question"])
        generation = await engine.generate(_request(engine, prompt, template.max_tokens))
        return {"answer": generation.content.strip()}
    if name == "chat":
        _ensure_fits(engine, text, template, rules)
        messages = [Message(role="user", content=text)]
        if params.get("system"):
            messages.insert(0, Message(role="system", content=str(params["system"])))
        generation = await engine.generate(
            GenerationRequest(model=engine.model, messages=messages, max_tokens=template.max_tokens)
        )
        return {"reply": generation.content.strip()}
    raise InvalidInput(f"task '{name}' has no runner", field="name")


async def _summarize(
    template: TaskTemplate, text: str, params: dict[str, Any], engine: Engine, rules: TaskRules
) -> dict[str, Any]:
    budget = engine.context_length - template.max_tokens - PROMPT_RESERVE
    chunk_tokens = min(int(params.get("chunk_tokens") or budget), budget)
    chunks = chunk_text(text, chunk_tokens)
    if len(chunks) > rules.max_chunks:
        reason = (
            f"input needs {len(chunks)} chunks on {engine.model} "
            f"(more than max_chunks={rules.max_chunks})"
        )
        if rules.escalate_on_context:
            raise Escalate(reason)
        raise InvalidInput(reason, field="text")
    max_words = params.get("max_words", 60)
    partials: list[str] = []
    report("chunks", 0, len(chunks))
    for chunk in chunks:  # map
        prompt = _fill(template.prompt, text=chunk, max_words=max_words)
        generation = await engine.generate(_request(engine, prompt, template.max_tokens))
        partials.append(generation.content.strip())
        report("chunks", len(partials), len(chunks))
    if len(partials) > 1:
        report("combining", len(chunks), len(chunks))
    while len(partials) > 1:  # reduce, in groups that fit the context
        groups = chunk_text("\n\n".join(partials), chunk_tokens)
        if len(groups) >= len(partials):  # cannot shrink further: keep the first pieces
            groups = groups[:1]
        reduced: list[str] = []
        for group in groups:
            prompt = _fill(
                template.reduce_prompt or template.prompt, text=group, max_words=max_words
            )
            generation = await engine.generate(_request(engine, prompt, template.max_tokens))
            reduced.append(generation.content.strip())
        partials = reduced
    return {"summary": partials[0] if partials else "", "chunks": len(chunks)}


async def _extract(
    template: TaskTemplate, text: str, params: dict[str, Any], engine: Engine, rules: TaskRules
) -> dict[str, Any]:
    schema = params["schema"]
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise InvalidInput(
            f"params.schema is not a JSON schema: {exc.message}", field="params.schema"
        ) from exc
    if schema.get("type") != "object":
        raise InvalidInput(
            "params.schema must describe an object (type: object)", field="params.schema"
        )
    _ensure_fits(engine, text, template, rules)
    validator = Draft202012Validator(schema)
    prompt = _fill(template.prompt, text=text, schema=json.dumps(schema, sort_keys=True))
    attempts = 1 + max(rules.schema_retries, 0)
    problem = "no output"
    for _ in range(attempts):
        generation = await engine.generate(
            _request(engine, prompt, template.max_tokens, json_schema=schema)
        )
        try:
            value = json.loads(generation.content)
        except json.JSONDecodeError:
            problem = "output is not JSON"
            continue
        errors = list(validator.iter_errors(value))
        if not errors:
            assert isinstance(value, dict)
            return value
        problem = errors[0].message[:200]
    reason = f"output failed schema validation after {attempts} attempts on {engine.model}"
    if rules.escalate_on_schema_failure:
        raise Escalate(reason)
    raise OutputInvalid(f"{reason} ({problem})", field="params.schema")


async def _classify(
    template: TaskTemplate, text: str, params: dict[str, Any], engine: Engine, rules: TaskRules
) -> dict[str, Any]:
    labels: list[str] = list(params["labels"])
    threshold = float(params.get("threshold", rules.confidence_threshold))
    _ensure_fits(engine, text, template, rules)
    prompt = _fill(template.prompt, text=text, labels=", ".join(labels))
    request = _request(engine, prompt, template.max_tokens)
    scores = await engine.score(request, labels)
    if scores is not None:
        peak = max(scores.values())
        weights = {k: math.exp(v - peak) for k, v in scores.items()}
        total = sum(weights.values())
        probabilities = {k: w / total for k, w in weights.items()}
        method = "choice_scoring"
    else:
        schema = {
            "type": "object",
            "properties": {"label": {"enum": labels}},
            "required": ["label"],
        }
        generation = await engine.generate(
            _request(engine, prompt, template.max_tokens, json_schema=schema, logprobs=True)
        )
        try:
            chosen = str(json.loads(generation.content)["label"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise OutputInvalid("the model did not return a label") from exc
        confidence = math.exp(generation.logprob) if generation.logprob is not None else 0.0
        probabilities = {k: (confidence if k == chosen else 0.0) for k in labels}
        method = "constrained_generation"
    label = max(probabilities, key=lambda k: probabilities[k])
    result = {
        "label": label,
        "confidence": round(probabilities[label], 4),
        "scores": {k: round(v, 4) for k, v in probabilities.items()},
        "method": method,
    }
    if probabilities[label] < threshold and rules.escalate_on_low_confidence:
        raise Escalate(
            f"confidence {probabilities[label]:.2f} below threshold {threshold:.2f} "
            f"on {engine.model}",
            fallback=result,
        )
    return result
