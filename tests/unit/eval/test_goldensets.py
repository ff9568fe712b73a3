"""Golden-set files: JSONL and CSV, each bad row refused with its row number and field."""

from __future__ import annotations

import pytest

from appliance.errors import InvalidInput
from appliance.eval import samples
from appliance.eval.goldensets import parse, schema_of


def test_jsonl_and_csv_give_the_same_rows() -> None:
    jsonl = (
        b'{"id": "1", "input": "Pay me", "expected": "payroll"}\n\n'
        b'{"input": "Chair", "expected": "facilities"}\n'
    )
    csv = b"id,input,expected\n1,Pay me,payroll\n,Chair,facilities\n"
    assert (
        parse(jsonl, task="classify")
        == parse(csv, task="classify")
        == [
            {"id": "1", "input": "Pay me", "expected": "payroll"},
            {"input": "Chair", "expected": "facilities"},
        ]
    )


def test_csv_expected_objects_are_json() -> None:
    rows = parse(b'input,expected\nInvoice 7,"{""total"": 7}"\n', task="extract")
    assert rows == [{"input": "Invoice 7", "expected": {"total": 7}}]


@pytest.mark.parametrize(
    ("data", "task", "field", "words"),
    [
        (b'{"input": "a", "expected": "x"}\nnot json\n', "classify", "row 2", "not valid JSON"),
        (b'{"input": ' + b"[" * 100_000 + b"\n", "classify", "row 1", "not valid JSON"),
        (
            b'input,expected\na,"' + b"[" * 100_000 + b'"\n',
            "extract",
            "row 2.expected",
            "JSON object",
        ),
        (b'{"expected": "x"}\n', "classify", "row 1.input", "input"),
        (b'{"input": "a"}\n', "classify", "row 1.expected", "missing"),
        (b'{"input": "a", "expected": ""}\n', "classify", "row 1.expected", "label"),
        (b'{"input": "a", "expected": "x", "label": 1}\n', "classify", "row 1.label", "unknown"),
        (b'{"input": "a", "expected": [1]}\n', "extract", "row 1.expected", "object"),
        (
            b'{"input": "a", "expected": "x", "question": "q"}\n',
            "summarize",
            "row 1.question",
            "ask",
        ),
        (b"input,expected,colour\na,b,c\n", "classify", "row 1", "unknown column"),
        (b"input,expected\na,b,c\n", "classify", "row 2", "more fields"),
        (
            b'{"id": 1, "input": "a", "expected": "x"}\n'
            b'{"id": "1", "input": "b", "expected": "y"}\n',
            "classify",
            "row 2.id",
            "repeats row 1",
        ),
        (b"", "classify", "file", "no items"),
        (b"\xff\xfe", "classify", "file", "UTF-8"),
    ],
)
def test_a_bad_row_is_refused_naming_row_and_field(
    data: bytes, task: str, field: str, words: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse(data, task=task)
    assert caught.value.field == field
    assert words in caught.value.message
    assert caught.value.status_code == 422


def test_unknown_task_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse(b'{"input": "a", "expected": "b"}', task="translate")
    assert caught.value.field == "task"


def test_schema_is_derived_from_expected_objects() -> None:
    schema = schema_of([{"total": 1.5, "vendor": "A"}, {"paid": True}])
    assert schema["properties"] == {
        "paid": {"type": "boolean"},
        "total": {"type": "number"},
        "vendor": {"type": "string"},
    }


def test_shipped_samples_are_what_the_generator_makes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    written = samples.write_all(tmp_path)
    for path in written:
        assert path.read_bytes() == (samples.SAMPLES_DIR / path.name).read_bytes()
    tickets = parse((samples.SAMPLES_DIR / "hr-tickets.jsonl").read_bytes(), task="classify")
    invoices = parse((samples.SAMPLES_DIR / "invoices.jsonl").read_bytes(), task="extract")
    assert len(tickets) == 200 and len(invoices) == 100
    assert {r["expected"] for r in tickets} == set(samples.HR_LABELS)
    assert all(set(r["expected"]) == set(samples.INVOICE_SCHEMA["properties"]) for r in invoices)
