"""Caller strings in structured fields: every one found (keys too), schema words skipped."""

from __future__ import annotations

from appliance.tasks.caller_text import replace_strings, strings_in


def test_every_caller_string_is_found_keys_and_values() -> None:
    schema = {
        "type": "object",
        "properties": {
            "mary@example.org": {"type": "string", "description": "SSN 645-12-9876"},
            "kind": {"enum": ["Jane Doe", 3, None]},
        },
        "required": ["mary@example.org"],
    }

    found = set(strings_in({"schema": schema, "labels": ["a b", "c"]}))

    assert found == {"mary@example.org", "SSN 645-12-9876", "kind", "Jane Doe", "a b", "c"}


def test_strings_are_replaced_everywhere_consistently() -> None:
    value = {"properties": {"x@y.org": {"const": "x@y.org"}}, "required": ["x@y.org"], "n": 1}

    replaced = replace_strings(value, {"x@y.org": "<EMAIL_ADDRESS_1>"})

    assert replaced == {
        "properties": {"<EMAIL_ADDRESS_1>": {"const": "<EMAIL_ADDRESS_1>"}},
        "required": ["<EMAIL_ADDRESS_1>"],
        "n": 1,
    }
    assert value["required"] == ["x@y.org"]  # the original is untouched
