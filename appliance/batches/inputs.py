"""Batch files: JSONL (one object a line) or CSV (a header row), each item a task input.

An item has exactly one of `text` or `document_id`, and optionally `id` (echoed in the results)
and `params` (merged over the job's). Any bad line refuses the whole file with its line number,
so a job never starts half-understood.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Literal

from appliance.errors import InvalidInput

Format = Literal["jsonl", "csv"]
MAX_TEXT = 500_000
_KEYS = frozenset({"id", "text", "document_id", "params"})


def parse_items(data: bytes, *, fmt: Format | None, max_items: int) -> list[dict[str, Any]]:
    """The items of a batch file; `fmt` None decides by the first character (`{` is JSONL)."""
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"the batch file is not UTF-8 (byte {exc.start})", field="file"
        ) from None
    if fmt is None:
        fmt = "jsonl" if content.lstrip().startswith("{") else "csv"
    items = _jsonl(content, max_items) if fmt == "jsonl" else _csv(content, max_items)
    if not items:
        raise InvalidInput("the batch file holds no items", field="file")
    return items


def _too_many(max_items: int) -> InvalidInput:
    return InvalidInput(f"the batch file holds more than {max_items} items", field="file")


def _jsonl(content: str, max_items: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except (ValueError, RecursionError):
            raise InvalidInput(f"line {number}: not valid JSON", field="file") from None
        if not isinstance(value, dict):
            raise InvalidInput(f"line {number}: expected a JSON object", field="file")
        items.append(_item(value, number))
        if len(items) > max_items:
            raise _too_many(max_items)
    return items


def _csv(content: str, max_items: int) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(content, newline=""))
    header = reader.fieldnames or []
    unknown = set(header) - _KEYS
    if unknown:
        raise InvalidInput(
            f"line 1: unknown column(s) {', '.join(sorted(unknown))}; "
            "use id, text, document_id, params",
            field="file",
        )
    items: list[dict[str, Any]] = []
    try:
        for row in reader:
            number = reader.line_num
            if None in row:
                raise InvalidInput(f"line {number}: more fields than columns", field="file")
            value: dict[str, Any] = {k: v for k, v in row.items() if v not in (None, "")}
            if "params" in value:
                try:
                    value["params"] = json.loads(value["params"])
                except (ValueError, RecursionError):
                    raise InvalidInput(
                        f"line {number}: params is not valid JSON", field="file"
                    ) from None
            items.append(_item(value, number))
            if len(items) > max_items:
                raise _too_many(max_items)
    except csv.Error as exc:
        raise InvalidInput(f"line {reader.line_num}: {exc}", field="file") from None
    return items


def _item(value: dict[str, Any], number: int) -> dict[str, Any]:
    unknown = set(value) - _KEYS
    if unknown:
        raise InvalidInput(
            f"line {number}: unknown field(s) {', '.join(sorted(unknown))}", field="file"
        )
    text, document_id = value.get("text"), value.get("document_id")
    if (text is None) == (document_id is None):
        raise InvalidInput(f"line {number}: give exactly one of text or document_id", field="file")
    source = text if text is not None else document_id
    if not isinstance(source, str) or not source.strip():
        raise InvalidInput(f"line {number}: text or document_id must be a string", field="file")
    if text is not None and len(text) > MAX_TEXT:
        raise InvalidInput(f"line {number}: text longer than {MAX_TEXT} characters", field="file")
    params = value.get("params", {})
    if not isinstance(params, dict):
        raise InvalidInput(f"line {number}: params must be an object", field="file")
    item_id = value.get("id")
    if item_id is not None and not isinstance(item_id, str | int):
        raise InvalidInput(f"line {number}: id must be a string or number", field="file")
    item: dict[str, Any] = {"params": params}
    if item_id is not None:
        item["id"] = item_id
    if text is not None:
        item["text"] = text
    else:
        item["document_id"] = document_id
    return item
