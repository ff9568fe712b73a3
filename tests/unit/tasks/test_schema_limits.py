"""Limits on caller JSON schemas: a table of schemas and the field each refusal names."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from appliance.errors import InvalidInput
from appliance.tasks.schema_limits import LIMITS, check_schema
from tests.conftest import PROJECT_ROOT


def _nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return schema


@pytest.mark.parametrize(
    ("schema", "field"),
    [
        ({"type": "array", "minItems": 100_000_000}, "f.minItems"),
        ({"type": "array", "maxItems": 1_001}, "f.maxItems"),
        ({"type": "string", "maxLength": 2_000}, "f.maxLength"),
        ({"type": "string", "minLength": -1}, "f.minLength"),
        ({"type": "object", "maxProperties": 10**9}, "f.maxProperties"),
        ({"type": "string", "pattern": "^a{100000000}$"}, "f.pattern"),
        ({"type": "string", "pattern": "^a{2,99999999999999}$"}, "f.pattern"),
        ({"enum": list(range(101))}, "f.enum"),
        ({"type": "object", "properties": {f"p{i}": {} for i in range(65)}}, "f.properties"),
        ({"$ref": "https://example.org/schema.json"}, "f.$ref"),
        ({"description": "x" * 1_001}, "f.description"),
        (_nested(20), "f" + ".items" * 12),
        ({"type": "object", "description": "x" * 17_000}, "f"),
        (
            {
                "type": "object",
                "properties": {f"p{i}": {"type": "string", "maxLength": 1_000} for i in range(9)},
            },
            "f",
        ),
    ],
)
def test_a_schema_past_a_limit_is_refused_naming_the_field(schema: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_schema(schema, field="f")

    assert refused.value.field == field
    assert refused.value.status_code == 422


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object"},
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 200},
                "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 20},
                "when": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"},
                "ref": {"$ref": "#/$defs/x"},
            },
            "$defs": {"x": {"type": "integer", "minimum": 0}},
            "required": ["name"],
        },
    ],
)
def test_ordinary_schemas_pass(schema: dict[str, Any]) -> None:
    check_schema(schema, field="f")


def test_a_huge_bound_is_refused_in_constant_time() -> None:
    """The issue's 200-byte bomb costs nothing to refuse (no grammar is ever built)."""
    import time

    bomb = {"type": "object", "properties": {"a": {"type": "array", "minItems": 10**8}}}
    started = time.perf_counter()
    for _ in range(1_000):
        with pytest.raises(InvalidInput):
            check_schema(bomb, field="format")
    assert time.perf_counter() - started < 1.0


LARGEST = {
    "type": "object",
    "properties": {
        **{f"s{i}": {"type": "string", "maxLength": LIMITS.max_repeat} for i in range(4)},
        **{
            f"a{i}": {
                "type": "array",
                "items": {"type": "string", "maxLength": LIMITS.max_repeat},
                "maxItems": LIMITS.max_repeat,
            }
            for i in range(2)
        },
    },
}

GRAMMAR_CHILD = """
import json, resource, sys, time
import llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=256, verbose=False)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
llm.create_chat_completion(
    messages=[{"role": "user", "content": "hi"}], max_tokens=1,
    response_format={"type": "json_object", "schema": json.loads(sys.argv[2])},
)
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024
print(json.dumps({"s": time.perf_counter() - started, "mb": grown}))
"""


def test_the_largest_admitted_schema_builds_its_grammar_cheaply(models_dir: Any) -> None:
    """The limits are below what llama.cpp's grammar parser refuses (a `maxLength` of 2,000
    crashes the process here): the largest schema they admit compiles and generates in a
    child process, quickly and in little memory."""
    check_schema(LARGEST, field="f")
    model = models_dir / "SmolLM2-135M-Instruct.Q4_1.gguf"
    done = subprocess.run(
        [sys.executable, "-c", GRAMMAR_CHILD, str(model), json.dumps(LARGEST)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT_ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["mb"] < 200, measured
    assert measured["s"] < 20, measured
