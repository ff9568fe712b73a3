"""Task templates load strictly; parameters validate with a message naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.errors import InvalidInput, PolicyError, TaskNotFound
from appliance.tasks.chunking import chunk_text
from appliance.tasks.templates import TaskCatalog


def test_the_six_shipped_templates() -> None:
    catalog = TaskCatalog.from_directory()
    assert catalog.names() == ["ask", "chat", "classify", "extract", "redact", "summarize"]
    assert not catalog.get("redact").model
    public = catalog.get("classify").public()
    assert public["parameters"]["required"] == ["labels"]
    assert "confidence" in public["output"]["properties"]


def test_unknown_task_lists_the_known_ones() -> None:
    with pytest.raises(TaskNotFound) as info:
        TaskCatalog.from_directory().get("translate")
    assert info.value.extra["available"][0] == "ask"


@pytest.mark.parametrize(
    ("task", "params", "field"),
    [
        ("classify", {}, "params"),
        ("classify", {"labels": ["only-one"]}, "params.labels"),
        ("ask", {"question": ""}, "params.question"),
        ("summarize", {"max_words": 2}, "params.max_words"),
        ("summarize", {"colour": "red"}, "params"),
        ("extract", {"schema": "not an object"}, "params.schema"),
    ],
)
def test_bad_parameters_name_the_field(task: str, params: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        TaskCatalog.from_directory().get(task).validate_params(params)
    assert info.value.field == field


def test_defaults_are_filled_in() -> None:
    params = TaskCatalog.from_directory().get("summarize").validate_params({})
    assert params == {"max_words": 60}


def test_a_bad_template_file_stops_loading_naming_it(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("name: broken\ndescription: x\nprompt: y\n")
    with pytest.raises(PolicyError) as info:
        TaskCatalog.from_directory(tmp_path)
    assert "broken.yaml" in info.value.message


def test_chunks_respect_the_budget_and_keep_every_word() -> None:
    paragraph = " ".join(f"Sentence number {i} is here." for i in range(40))
    text = "\n\n".join([paragraph] * 5)
    chunks = chunk_text(text, 200)
    assert len(chunks) > 1
    assert all(len(c) // 3 + 1 <= 200 for c in chunks)
    assert " ".join(" ".join(chunks).split()) == " ".join(text.split())


def test_short_text_is_one_chunk() -> None:
    assert chunk_text("short", 100) == ["short"]
