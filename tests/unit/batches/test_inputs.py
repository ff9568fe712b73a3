"""Batch files: JSONL and CSV items, and refusals that name the line."""

from __future__ import annotations

import pytest

from appliance.batches.inputs import parse_items
from appliance.errors import InvalidInput


def test_jsonl_items() -> None:
    data = (
        b'{"id": "a", "text": "first"}\n\n'
        b'{"document_id": "d1", "params": {"labels": ["x", "y"]}}\n'
        b'{"id": 7, "text": "third"}\n'
    )
    assert parse_items(data, fmt=None, max_items=10) == [
        {"id": "a", "text": "first", "params": {}},
        {"document_id": "d1", "params": {"labels": ["x", "y"]}},
        {"id": 7, "text": "third", "params": {}},
    ]


def test_csv_items_with_quoted_commas_and_params() -> None:
    data = b'id,text,params\r\n1,"Hello, world",\r\n2,second,"{""labels"": [""a"", ""b""]}"\r\n'
    assert parse_items(data, fmt=None, max_items=10) == [
        {"id": "1", "text": "Hello, world", "params": {}},
        {"id": "2", "text": "second", "params": {"labels": ["a", "b"]}},
    ]


def test_format_can_be_forced() -> None:
    assert parse_items(b"text\n{not json}\n", fmt="csv", max_items=5) == [
        {"text": "{not json}", "params": {}}
    ]


@pytest.mark.parametrize(
    ("data", "fmt", "message"),
    [
        (b'{"text": "ok"}\n{broken\n', None, "line 2: not valid JSON"),
        (b'{"text": "ok"}\n[1, 2]\n', None, "line 2: expected a JSON object"),
        (b'{"text": "a", "document_id": "b"}\n', None, "line 1: give exactly one"),
        (b'{"prompt": "a"}\n', None, "line 1: unknown field(s) prompt"),
        (b'{"text": ""}\n', None, "line 1: text or document_id must be a string"),
        (b'{"text": "a", "params": [1]}\n', None, "line 1: params must be an object"),
        (b"name,text\nx,y\n", None, "line 1: unknown column(s) name"),
        (b'text\nok\n"a",b\n', "csv", "line 3: more fields than columns"),
        (b"id,text,params\n1,a,{bad\n", None, "line 2: params is not valid JSON"),
        (b"\n\n", None, "holds no items"),
        (b"\xff\xfe", None, "not UTF-8"),
    ],
)
def test_refusals_name_the_line(data: bytes, fmt: str | None, message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        parse_items(data, fmt=fmt, max_items=10)  # type: ignore[arg-type]
    assert e.value.field == "file"


def test_item_limit() -> None:
    data = b"".join(b'{"text": "x"}\n' for _ in range(4))
    with pytest.raises(InvalidInput, match="more than 3 items"):
        parse_items(data, fmt=None, max_items=3)
