"""A golden set uploaded as a multipart form, as the REST API and the evaluation page take it.

The form's fields (`file`, `name`, `task`, `policy`, `params`, `description`, `format`, `mode`)
are checked here once; `Evaluation.upload` validates, seals, stores and audits the set.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from appliance.errors import InvalidInput, PayloadTooLarge

if TYPE_CHECKING:
    from appliance.auth.actor import Actor
    from appliance.eval.service import Evaluation

MAX_SET_BYTES = 20_000_000
"""Largest golden-set file accepted."""
UPLOAD_CEILING_BYTES = MAX_SET_BYTES + 1_000_000
"""Largest request body of an upload (the file and the other form fields)."""


@runtime_checkable
class UploadedFile(Protocol):
    """A file part of a multipart form (Litestar's `UploadFile` is one)."""

    filename: str

    async def read(self, size: int = -1) -> bytes:
        """The file's bytes."""
        ...


def _text(data: Mapping[str, Any], name: str, *, max_length: int) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > max_length:
        raise InvalidInput(f"`{name}` must be text of at most {max_length} characters", field=name)
    return value


def _object(raw: str | None, name: str) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidInput(f"`{name}` must be a JSON object", field=name) from None
    if not isinstance(value, dict):
        raise InvalidInput(f"`{name}` must be a JSON object", field=name)
    return value


async def upload_set(
    evaluation: Evaluation, actor: Actor, data: Mapping[str, Any], *, mode: str
) -> dict[str, Any]:
    """Store the set a multipart form carries (`mode` unless the form names one), as `actor`."""
    upload = data.get("file")
    if not isinstance(upload, UploadedFile):
        raise InvalidInput("send the set as the multipart field `file`", field="file")
    content = await upload.read()
    if len(content) > MAX_SET_BYTES:
        raise PayloadTooLarge(
            f"the file has {len(content)} bytes; at most {MAX_SET_BYTES} are accepted", field="file"
        )
    fmt = _text(data, "format", max_length=10)
    if fmt is None and upload.filename:
        lowered = upload.filename.lower()
        fmt = "csv" if lowered.endswith(".csv") else "jsonl" if lowered.endswith(".jsonl") else None
    if fmt not in (None, "jsonl", "csv"):
        raise InvalidInput("`format` must be jsonl or csv", field="format")
    name = _text(data, "name", max_length=100)
    if name is None:
        raise InvalidInput("name the set in the field `name`", field="name")
    return await evaluation.upload(
        actor,
        name=name,
        data=content,
        task=_text(data, "task", max_length=20),
        fmt=fmt,  # type: ignore[arg-type]
        mode=_text(data, "mode", max_length=10) or mode,
        policy=_text(data, "policy", max_length=100),
        params=_object(_text(data, "params", max_length=100_000), "params"),
        description=_text(data, "description", max_length=1000) or "",
    )
