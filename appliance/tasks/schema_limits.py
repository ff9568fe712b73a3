"""Limits on caller-supplied JSON schemas, checked before any grammar is built from one.

A JSON schema becomes a grammar for constrained decoding, and the grammar's size follows the
schema's repetition bounds: `{"minItems": 100000000}` is 200 bytes of JSON and gigabytes of
grammar. Every entry point that accepts a schema (OpenAI `response_format`, Ollama `format`, the
`extract` task's `params.schema`) checks it here first, so a schema either fits these limits or
is refused with a 422 naming the offending field; nothing is built from it.

The limits are generous for extraction (a few dozen fields, short enums, bounded strings) and
small enough that the largest schema they admit builds its grammar in milliseconds.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from appliance.errors import InvalidInput

_REPEAT_KEYWORDS = (
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minProperties",
    "maxProperties",
    "minContains",
    "maxContains",
)
_QUANTIFIER = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")


@dataclass(frozen=True)
class SchemaLimits:
    """How large, deep and repetitive a caller's JSON schema may be."""

    max_bytes: int = 16_384
    """Size of the schema as compact JSON."""
    max_depth: int = 12
    """Nesting of objects and arrays in the schema document."""
    max_nodes: int = 1_000
    """Objects, arrays and values in the schema document."""
    max_repeat: int = 1_000
    """Any one of minItems/maxItems/minLength/maxLength/min-maxProperties/min-maxContains, and
    any `{n}` / `{n,m}` quantifier in a `pattern`. llama.cpp's grammar parser refuses (and the
    llama-cpp-python build in use crashes on) a `maxLength` of 2,000; 1,000 is measured safe."""
    max_repeat_total: int = 8_000
    """The sum of all those bounds over the schema (a grammar grows with each)."""
    max_properties: int = 64
    """Entries of one `properties` (or `patternProperties`, `$defs`) object."""
    max_enum: int = 100
    """Values of one `enum`."""
    max_string: int = 1_000
    """Length of any one string in the schema (names, enum values, descriptions, patterns)."""


LIMITS = SchemaLimits()


def check_schema(schema: Any, *, field: str, limits: SchemaLimits = LIMITS) -> None:
    """Refuse `schema` (InvalidInput, 422, naming the field) unless it fits `limits`.

    Iterative (no recursion), and stops at the first problem, so a hostile schema costs at most
    `max_nodes` steps after the size check.
    """
    if not isinstance(schema, dict):
        raise InvalidInput(f"{field} must be a JSON object", field=field)
    try:
        size = len(json.dumps(schema, separators=(",", ":"), ensure_ascii=False))
    except (ValueError, TypeError, RecursionError):
        raise InvalidInput(f"{field} is not a JSON document", field=field) from None
    if size > limits.max_bytes:
        raise InvalidInput(
            f"{field} is {size} bytes; a schema may be at most {limits.max_bytes}", field=field
        )
    nodes = 0
    total = 0
    stack: list[tuple[Any, str, int, str | None]] = [(schema, field, 1, None)]
    while stack:
        value, where, depth, key = stack.pop()
        nodes += 1
        if nodes > limits.max_nodes:
            raise InvalidInput(f"{field} has more than {limits.max_nodes} elements", field=field)
        if depth > limits.max_depth:
            raise InvalidInput(
                f"{where} is nested deeper than {limits.max_depth} levels", field=where
            )
        if isinstance(value, str):
            if len(value) > limits.max_string:
                raise InvalidInput(
                    f"{where} is longer than {limits.max_string} characters", field=where
                )
            if key == "pattern":
                total += _check_pattern(value, where, limits)
            continue
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | float):
            if key in _REPEAT_KEYWORDS:
                total += _check_bound(value, where, limits)
            continue
        if isinstance(value, list):
            if key == "enum" and len(value) > limits.max_enum:
                raise InvalidInput(
                    f"{where} has {len(value)} values; an enum may have at most {limits.max_enum}",
                    field=where,
                )
            for index, item in enumerate(value):
                stack.append((item, f"{where}.{index}", depth + 1, None))
            continue
        if isinstance(value, dict):
            if key in ("properties", "patternProperties", "$defs", "definitions") and (
                len(value) > limits.max_properties
            ):
                raise InvalidInput(
                    f"{where} has {len(value)} entries; at most {limits.max_properties}",
                    field=where,
                )
            ref = value.get("$ref")
            if isinstance(ref, str) and not ref.startswith("#"):
                # A remote reference would be fetched while the grammar is built.
                raise InvalidInput(
                    f"{where}.$ref must point inside the schema (start with '#')",
                    field=f"{where}.$ref",
                )
            for name, item in value.items():
                if len(str(name)) > limits.max_string:
                    raise InvalidInput(
                        f"{where} has a key longer than {limits.max_string} characters",
                        field=where,
                    )
                stack.append((item, f"{where}.{name}", depth + 1, str(name)))
            continue
        raise InvalidInput(f"{where} is not a JSON value", field=where)
    if total > limits.max_repeat_total:
        raise InvalidInput(
            f"{field}: the repetition bounds add up to {total}; at most "
            f"{limits.max_repeat_total} in one schema",
            field=field,
        )


def _check_bound(value: float, where: str, limits: SchemaLimits) -> int:
    if value < 0 or value > limits.max_repeat:
        raise InvalidInput(
            f"{where} is {value}; it must be between 0 and {limits.max_repeat}", field=where
        )
    return int(value)


def _check_pattern(pattern: str, where: str, limits: SchemaLimits) -> int:
    """The repetition a pattern asks for; refused when one quantifier is too large."""
    total = 0
    for low, high in _QUANTIFIER.findall(pattern):
        for number in (low, high):
            if number and (len(number) > 6 or int(number) > limits.max_repeat):
                raise InvalidInput(
                    f"{where} repeats {number} times; a quantifier may be at most "
                    f"{limits.max_repeat}",
                    field=where,
                )
            if number:
                total += int(number)
    return total
