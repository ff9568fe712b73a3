"""The body checks that run before any JSON parser: UTF-8 and nesting depth."""

from __future__ import annotations

import pytest

from appliance.errors import MalformedBody
from appliance.http.middleware import check_depth, check_utf8, json_depth


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b"{}", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b'{"a": "[[[[{{{{"}', 1),
        (b'{"a": "\\"[[[["}', 1),
        (b"[" * 5000 + b"]" * 5000, 5000),
    ],
)
def test_depth_is_measured_without_parsing(body: bytes, depth: int) -> None:
    assert json_depth(body) == depth


def test_too_deep_and_invalid_utf8_are_malformed() -> None:
    with pytest.raises(MalformedBody):
        check_depth(b"[" * 65 + b"]" * 65, max_depth=64)
    check_depth(b"[" * 64 + b"]" * 64, max_depth=64)
    with pytest.raises(MalformedBody) as refused:
        check_utf8(b'{"a": "caf\xe9"}')
    assert refused.value.status_code == 400 and refused.value.code == "malformed_body"
