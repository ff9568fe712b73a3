"""The caller's strings inside structured request fields: task params and JSON schemas.

A task's `params` (a question, a system prompt, labels, a schema) and a structured-output schema
reach a model as surely as the messages do: in the prompt, as scoring choices, or compiled into
the grammar that constrains the answer. The gateway runs every string found here through the
policy, keys included (a schema's property names are the caller's words), and puts the
transformed strings back in place.

JSON Schema keywords and type names are left alone: they are the vocabulary of the format, not
the caller's text, and cannot carry an identifier.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

SCHEMA_WORDS = frozenset(
    {
        # core and applicator keywords
        "$schema", "$id", "$ref", "$defs", "$anchor", "$comment", "$dynamicRef",
        "$dynamicAnchor", "$vocabulary", "definitions", "allOf", "anyOf", "oneOf", "not",
        "if", "then", "else", "dependentSchemas", "prefixItems", "items", "contains",
        "properties", "patternProperties", "additionalProperties", "propertyNames",
        "unevaluatedItems", "unevaluatedProperties",
        # validation keywords
        "type", "enum", "const", "multipleOf", "maximum", "exclusiveMaximum", "minimum",
        "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems", "minItems",
        "uniqueItems", "maxContains", "minContains", "maxProperties", "minProperties",
        "required", "dependentRequired", "format", "contentEncoding", "contentMediaType",
        "contentSchema", "title", "description", "default", "deprecated", "readOnly",
        "writeOnly", "examples", "additionalItems", "dependencies",
        # type names
        "object", "array", "string", "number", "integer", "boolean", "null",
        # formats
        "date-time", "date", "time", "duration", "email", "idn-email", "hostname",
        "idn-hostname", "ipv4", "ipv6", "uri", "uri-reference", "iri", "iri-reference",
        "uuid", "uri-template", "json-pointer", "relative-json-pointer", "regex",
        # task parameter names of the shipped templates
        "question", "system", "labels", "schema", "threshold", "max_words", "chunk_tokens",
    }
)  # fmt: skip


def strings_in(value: Any) -> Iterator[str]:
    """Every string in `value` (dict keys included) that could carry the caller's words."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if item not in SCHEMA_WORDS and item.strip():
                yield item
        elif isinstance(item, Mapping):
            for key, inner in item.items():
                stack.append(key)
                stack.append(inner)
        elif isinstance(item, list | tuple):
            stack.extend(item)


def replace_strings(value: Any, mapping: Mapping[str, str]) -> Any:
    """A copy of `value` with every string (and key) found in `mapping` replaced."""
    if isinstance(value, str):
        return mapping.get(value, value)
    if isinstance(value, Mapping):
        return {
            replace_strings(key, mapping): replace_strings(inner, mapping)
            for key, inner in value.items()
        }
    if isinstance(value, list | tuple):
        return [replace_strings(item, mapping) for item in value]
    return value
