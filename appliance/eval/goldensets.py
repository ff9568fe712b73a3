"""Golden sets: parse and validate uploads, store them sealed and versioned, read them back.

A file is JSONL (one object a line) or CSV (a header row) with `input`, `expected` and optionally
`id` (and, for `ask`, `question`). Any bad row refuses the whole file with a 422 naming the row and
the field, so a set never holds half-understood data. Every upload or append makes a new version
holding all its items; runs pin a version, so later edits never change a finished run's meaning.

Each item is sealed (AES-GCM) and bound to its version and position: golden data is content like
any document, and the key file is what makes it readable.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from appliance.db.engine import session_scope
from appliance.db.models import utcnow
from appliance.documents.crypto import Sealer
from appliance.documents.store import aware
from appliance.errors import Conflict, InvalidInput, NotFound
from appliance.eval.models import TASKS, EvalItem, EvalSet, EvalSetVersion

Format = Literal["jsonl", "csv"]
MAX_ITEMS = 10_000
MAX_INPUT = 100_000
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_COLUMNS = frozenset({"id", "input", "expected", "question"})


@dataclass(frozen=True)
class GoldenItem:
    """One item as a run and the pages see it (opened)."""

    seq: int
    key: str
    input: str
    expected: Any
    question: str | None = None


def check_name(name: str) -> str:
    """A set name: letters, digits, `_`, `.`, `-`; 1 to 100 characters."""
    name = name.strip()
    if not NAME.match(name):
        raise InvalidInput(
            "a set name is 1 to 100 letters, digits, '_', '.' or '-', starting with a letter "
            "or digit",
            field="name",
        )
    return name


def check_task(task: str) -> str:
    """One of the tasks a golden set can measure."""
    if task not in TASKS:
        raise InvalidInput(f"task must be one of {', '.join(TASKS)}", field="task")
    return task


def normalise_expected(task: str, value: Any, where: str) -> Any:
    """The expected answer in the shape the metrics compare: a label (classify), an object
    (extract), a reference text (summarize, ask). Review outputs (`{"label": ...}`,
    `{"summary": ...}`, `{"answer": ...}`) are accepted too."""
    field = f"{where}.expected" if where else "expected"
    if task == "classify":
        if isinstance(value, dict) and "label" in value:
            value = value["label"]
        if not isinstance(value, str) or not value.strip() or len(value) > 200:
            raise InvalidInput(
                f"{where}: expected must be a label (1 to 200 characters)", field=field
            )
        return value.strip()
    if task == "extract":
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except (ValueError, RecursionError):
                raise InvalidInput(
                    f"{where}: expected must be a JSON object", field=field
                ) from None
        if not isinstance(value, dict) or not value:
            raise InvalidInput(f"{where}: expected must be a non-empty JSON object", field=field)
        return value
    key = "summary" if task == "summarize" else "answer"
    if isinstance(value, dict) and key in value:
        value = value[key]
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{where}: expected must be a non-empty reference text", field=field)
    return value.strip()


def parse(data: bytes, *, task: str, fmt: Format | None = None) -> list[dict[str, Any]]:
    """The validated rows of a golden-set file; `fmt` None decides by the first character."""
    check_task(task)
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"the file is not UTF-8 (byte {exc.start})", field="file") from None
    if fmt is None:
        fmt = "jsonl" if content.lstrip().startswith("{") else "csv"
    raw = _jsonl(content) if fmt == "jsonl" else _csv(content)
    rows = [_row(task, value, number) for number, value in raw]
    if not rows:
        raise InvalidInput("the file holds no items", field="file")
    if len(rows) > MAX_ITEMS:
        raise InvalidInput(f"the file holds more than {MAX_ITEMS} items", field="file")
    seen: dict[str, int] = {}
    for number, row in zip((n for n, _ in raw), rows, strict=True):
        if row.get("id") is None:
            continue
        if row["id"] in seen:
            raise InvalidInput(
                f"row {number}: id '{row['id']}' repeats row {seen[row['id']]}",
                field=f"row {number}.id",
            )
        seen[row["id"]] = number
    return rows


def _jsonl(content: str) -> list[tuple[int, dict[str, Any]]]:
    out: list[tuple[int, dict[str, Any]]] = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except (ValueError, RecursionError):
            raise InvalidInput(f"row {number}: not valid JSON", field=f"row {number}") from None
        if not isinstance(value, dict):
            raise InvalidInput(f"row {number}: expected a JSON object", field=f"row {number}")
        out.append((number, value))
    return out


def _csv(content: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(content, newline=""))
    header = reader.fieldnames or []
    unknown = set(header) - _COLUMNS
    if unknown:
        raise InvalidInput(
            f"row 1: unknown column(s) {', '.join(sorted(unknown))}; "
            "use input, expected, id (and question for ask)",
            field="row 1",
        )
    out: list[tuple[int, dict[str, Any]]] = []
    try:
        for row in reader:
            number = reader.line_num
            if None in row:
                raise InvalidInput(f"row {number}: more fields than columns", field=f"row {number}")
            out.append((number, {k: v for k, v in row.items() if v not in (None, "")}))
    except csv.Error as exc:
        raise InvalidInput(
            f"row {reader.line_num}: {exc}", field=f"row {reader.line_num}"
        ) from None
    return out


def _row(task: str, value: dict[str, Any], number: int) -> dict[str, Any]:
    where = f"row {number}"
    unknown = set(value) - _COLUMNS
    if unknown:
        raise InvalidInput(
            f"{where}: unknown field(s) {', '.join(sorted(unknown))}",
            field=f"{where}.{sorted(unknown)[0]}",
        )
    text = value.get("input")
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput(f"{where}: input must be a non-empty string", field=f"{where}.input")
    if len(text) > MAX_INPUT:
        raise InvalidInput(
            f"{where}: input longer than {MAX_INPUT} characters", field=f"{where}.input"
        )
    if "expected" not in value:
        raise InvalidInput(f"{where}: expected is missing", field=f"{where}.expected")
    row: dict[str, Any] = {
        "input": text,
        "expected": normalise_expected(task, value["expected"], where),
    }
    item_id = value.get("id")
    if item_id is not None:
        if not isinstance(item_id, str | int) or isinstance(item_id, bool) or str(item_id) == "":
            raise InvalidInput(f"{where}: id must be a string or number", field=f"{where}.id")
        row["id"] = str(item_id)[:200]
    question = value.get("question")
    if question is not None:
        if task != "ask":
            raise InvalidInput(f"{where}: question is only for ask sets", field=f"{where}.question")
        if not isinstance(question, str) or not question.strip():
            raise InvalidInput(
                f"{where}: question must be a non-empty string", field=f"{where}.question"
            )
        row["question"] = question.strip()[:2000]
    return row


# -- storage ---------------------------------------------------------------------------------------
def _bound(version_id: int, seq: int) -> str:
    return f"eval-item:{version_id}:{seq}"


def _digest(rows: list[dict[str, Any]]) -> str:
    blob = json.dumps(rows, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()


def _find(session: Session, set_name: str) -> EvalSet:
    found = None
    if NAME.match(set_name):  # anything else cannot name a set (and never reaches SQL)
        found = session.exec(select(EvalSet).where(EvalSet.name == set_name)).first()
    if found is None:
        raise NotFound(f"golden set '{set_name}' does not exist", field="set_name")
    return found


def _latest(session: Session, set_id: int) -> EvalSetVersion | None:
    return session.exec(
        select(EvalSetVersion)
        .where(EvalSetVersion.set_id == set_id)
        .order_by(col(EvalSetVersion.number).desc())
    ).first()


def _open_rows(sealer: Sealer, items: list[EvalItem]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for item in items:
        row = json.loads(
            sealer.open(item.content_sealed, bound_to=_bound(item.version_id, item.seq))
        )
        assert isinstance(row, dict)
        rows.append(row)
    return rows


def _items_of(session: Session, version_id: int) -> list[EvalItem]:
    return list(
        session.exec(
            select(EvalItem).where(EvalItem.version_id == version_id).order_by(col(EvalItem.seq))
        )
    )


def _write_version(
    session: Session,
    sealer: Sealer,
    found: EvalSet,
    rows: list[dict[str, Any]],
    *,
    author: str,
    comment: str,
) -> int:
    latest = _latest(session, found.id or 0)
    number = (latest.number if latest is not None else 0) + 1
    version = EvalSetVersion(
        set_id=found.id or 0,
        number=number,
        items=len(rows),
        sha256=_digest(rows),
        author=author[:200],
        comment=comment[:500],
        created_at=utcnow(),
    )
    session.add(version)
    session.flush()
    assert version.id is not None
    for seq, row in enumerate(rows):
        row = dict(row)
        row.setdefault("id", str(seq + 1))
        session.add(
            EvalItem(
                version_id=version.id,
                seq=seq,
                key=str(row["id"])[:200],
                content_sealed=sealer.seal(
                    json.dumps(row, ensure_ascii=False).encode(), bound_to=_bound(version.id, seq)
                ),
            )
        )
    return number


def create_set(
    engine: Engine,
    sealer: Sealer,
    *,
    name: str,
    task: str,
    rows: list[dict[str, Any]],
    author: str,
    policy: str | None = None,
    params: dict[str, Any] | None = None,
    description: str = "",
) -> int:
    """A new set with `rows` as version 1; 409 when the name is taken. Returns the version."""
    name, task = check_name(name), check_task(task)
    with session_scope(engine) as session:
        if session.exec(select(EvalSet).where(EvalSet.name == name)).first() is not None:
            raise Conflict(f"golden set '{name}' already exists", field="name")
        found = EvalSet(
            name=name,
            task=task,
            policy=policy,
            params=dict(params or {}),
            description=description[:1000],
            created_by=author[:200],
            created_at=utcnow(),
        )
        session.add(found)
        session.flush()
        return _write_version(session, sealer, found, rows, author=author, comment="created")


def replace_items(
    engine: Engine, sealer: Sealer, set_name: str, rows: list[dict[str, Any]], *, author: str
) -> int:
    """A new version of the set holding exactly `rows`; returns its number."""
    with session_scope(engine) as session:
        found = _find(session, set_name)
        return _write_version(session, sealer, found, rows, author=author, comment="uploaded")


def append_rows(
    engine: Engine, sealer: Sealer, set_name: str, rows: list[dict[str, Any]], *, author: str
) -> int:
    """A new version of the set: the latest version's items followed by `rows`."""
    with session_scope(engine) as session:
        found = _find(session, set_name)
        latest = _latest(session, found.id or 0)
        previous = _open_rows(sealer, _items_of(session, latest.id or 0)) if latest else []
        taken = {str(r.get("id")) for r in previous}
        added: list[dict[str, Any]] = []
        for offset, row in enumerate(rows):
            row = dict(row)
            if row.get("id") is None or str(row["id"]) in taken:
                # An appended item gets the next free number, so ids stay unique in the version.
                row["id"] = str(len(previous) + offset + 1)
                while row["id"] in taken:
                    row["id"] = f"{row['id']}-{offset}"
            taken.add(str(row["id"]))
            added.append(row)
        return _write_version(
            session, sealer, found, previous + added, author=author, comment=f"appended {len(rows)}"
        )


def append_items(
    engine: Engine,
    sealer: Sealer,
    set_name: str,
    items: list[tuple[str, Any]],
    *,
    author: str,
) -> int:
    """Append (input, expected) items to the named set as a new version; returns its number.

    `expected` is checked against the set's task (a label, an object or a reference text; a
    task's output object such as `{"label": ...}` is accepted). 404 when the set does not exist,
    422 naming the item when one is malformed.
    """
    with session_scope(engine) as session:
        task = _find(session, set_name).task
    if not items:
        raise InvalidInput("give at least one item", field="items")
    rows: list[dict[str, Any]] = []
    for number, (text, expected) in enumerate(items, start=1):
        where = f"item {number}"
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput(f"{where}: input must be a non-empty string", field=f"{where}.input")
        rows.append({"input": text, "expected": normalise_expected(task, expected, where)})
    return append_rows(engine, sealer, set_name, rows, author=author)


def get_set(engine: Engine, set_name: str) -> EvalSet:
    """The set named `set_name` (404 otherwise)."""
    with session_scope(engine) as session:
        return _find(session, set_name)


def versions(engine: Engine, set_name: str) -> list[EvalSetVersion]:
    """The set's versions, newest first."""
    with session_scope(engine) as session:
        found = _find(session, set_name)
        return list(
            session.exec(
                select(EvalSetVersion)
                .where(EvalSetVersion.set_id == found.id)
                .order_by(col(EvalSetVersion.number).desc())
            )
        )


def list_sets(engine: Engine) -> list[dict[str, Any]]:
    """Every set with its latest version number and item count, by name."""
    with session_scope(engine) as session:
        sets = list(session.exec(select(EvalSet).order_by(col(EvalSet.name))))
        latest: dict[int, int] = dict(
            session.exec(
                select(EvalSetVersion.set_id, func.max(EvalSetVersion.number)).group_by(
                    col(EvalSetVersion.set_id)
                )
            ).all()
        )
        out: list[dict[str, Any]] = []
        for found in sets:
            number = latest.get(found.id or 0)
            version = (
                session.exec(
                    select(EvalSetVersion).where(
                        EvalSetVersion.set_id == found.id, EvalSetVersion.number == number
                    )
                ).first()
                if number is not None
                else None
            )
            out.append(public_set(found, version))
        return out


def public_set(found: EvalSet, version: EvalSetVersion | None) -> dict[str, Any]:
    """A set as the API shows it (metadata only, never its content)."""
    return {
        "name": found.name,
        "task": found.task,
        "policy": found.policy,
        "params": found.params,
        "description": found.description,
        "created_by": found.created_by,
        "created_at": aware(found.created_at).isoformat(),
        "version": version.number if version is not None else None,
        "items": version.items if version is not None else 0,
        "sha256": version.sha256 if version is not None else None,
        "updated_at": aware(version.created_at).isoformat() if version is not None else None,
    }


def public_version(version: EvalSetVersion) -> dict[str, Any]:
    """A version as the API shows it."""
    return {
        "number": version.number,
        "items": version.items,
        "sha256": version.sha256,
        "author": version.author,
        "comment": version.comment,
        "created_at": aware(version.created_at).isoformat(),
    }


def load_items(
    engine: Engine, sealer: Sealer, set_name: str, version: int | None = None
) -> tuple[EvalSet, int, list[GoldenItem]]:
    """The opened items of a version (None: the latest): (set, version number, items)."""
    with session_scope(engine) as session:
        found = _find(session, set_name)
        if version is None:
            row = _latest(session, found.id or 0)
        else:
            row = session.exec(
                select(EvalSetVersion).where(
                    EvalSetVersion.set_id == found.id, EvalSetVersion.number == version
                )
            ).first()
        if row is None:
            raise NotFound(f"golden set '{set_name}' has no version {version}", field="version")
        items = _items_of(session, row.id or 0)
        opened = _open_rows(sealer, items)
        return (
            found,
            row.number,
            [
                GoldenItem(
                    seq=item.seq,
                    key=item.key,
                    input=str(content["input"]),
                    expected=content["expected"],
                    question=content.get("question"),
                )
                for item, content in zip(items, opened, strict=True)
            ],
        )


def params_for(found: EvalSet, items: list[GoldenItem]) -> dict[str, Any]:
    """The task parameters a run sends: the set's own, else derived from its expected answers
    (classify: the sorted labels; extract: an object schema of the expected fields)."""
    params = dict(found.params)
    if found.task == "classify" and "labels" not in params:
        params["labels"] = sorted({str(item.expected) for item in items})
    if found.task == "extract" and "schema" not in params:
        params["schema"] = schema_of([item.expected for item in items])
    return params


def schema_of(examples: list[Any]) -> dict[str, Any]:
    """An object schema whose properties are the fields seen in `examples`, typed by them."""
    kinds: dict[str, str] = {}
    names = {bool: "boolean", int: "number", float: "number", str: "string"}
    for example in examples:
        if not isinstance(example, dict):
            continue
        for key, value in example.items():
            kinds.setdefault(key, names.get(type(value), "string"))
    return {
        "type": "object",
        "properties": {key: {"type": kind} for key, kind in sorted(kinds.items())},
        "required": sorted(kinds),
    }
