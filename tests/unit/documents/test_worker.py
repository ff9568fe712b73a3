"""Extraction in a child process: results come back; a stuck or greedy reader is stopped."""

from __future__ import annotations

import pytest

from appliance.documents import worker
from appliance.documents.extract import ExtractionError, Limits
from tests.unit.documents.samples import docx_xml_bomb, pdf_bytes


def test_extracts_in_a_child_process() -> None:
    result = worker.extract_isolated(
        pdf_bytes(["Minutes of the board"]), "m.pdf", Limits(), timeout_s=30, memory_bytes=0
    )
    assert (result.kind, result.text, result.pages) == ("pdf", "Minutes of the board", 1)


def test_errors_cross_the_process_boundary() -> None:
    with pytest.raises(ExtractionError, match="named as pdf"):
        worker.extract_isolated(b"text", "x.pdf", Limits(), timeout_s=30, memory_bytes=0)


def test_a_reader_past_its_deadline_is_killed() -> None:
    # A zero deadline cannot be met by any real parse: the child is killed, the caller told.
    with pytest.raises(ExtractionError, match="took longer than"):
        worker.extract_isolated(
            pdf_bytes(["x"] * 50), "x.pdf", Limits(), timeout_s=0.0, memory_bytes=0
        )


def test_memory_cap_turns_a_parse_bomb_into_an_error() -> None:
    # 136 kB zipped, a million paragraphs parsed: without a cap this runs for minutes and takes
    # gigabytes. The unpack limit is lifted so that only the address-space cap stands in the way,
    # and the deadline is long, so the error must come from the cap.
    with pytest.raises(ExtractionError) as caught:
        worker.extract_isolated(
            docx_xml_bomb(1_000_000),
            "bomb.docx",
            Limits(max_unpacked_bytes=10**12, max_chars=10**9),
            timeout_s=120,
            memory_bytes=300_000_000,
        )
    assert "took longer" not in str(caught.value)
