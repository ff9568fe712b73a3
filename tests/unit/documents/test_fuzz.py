"""Fuzz every document parser: hostile bytes give a result or `ExtractionError`, never a crash
(any other exception) and never a hang (a per-example alarm turns one into a failure).

Inputs are random bytes, and mutations (byte overwrites, truncation, insertions) of real files of
each type, including a DOCX whose XML is mutated before zipping so the XML reader is reached.
`APPLIANCE_FUZZ_EXAMPLES` raises the count per parser (`make fuzz`); the suite's default keeps
the whole module near half a minute.
"""

from __future__ import annotations

import io
import os
import signal
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.documents.extract import KINDS, ExtractionError, Kind, Limits, extract, sniff
from tests.unit.documents.samples import docx_bytes, eml_bytes, pdf_bytes

EXAMPLES = int(os.environ.get("APPLIANCE_FUZZ_EXAMPLES", "150"))
HANG_S = 10
LIMITS = Limits(max_pages=50, max_chars=200_000, max_unpacked_bytes=5_000_000)

SAMPLES: dict[str, bytes] = {
    "pdf": pdf_bytes(["Patient: Jane Roe, DOB 01/02/1980", "Second page text"]),
    "docx": docx_bytes(["Employee review", "Rating: good"], table=[["a", "b"]]),
    "eml": eml_bytes("Please call me on 555-0100.", html="<p>Hi <b>there</b></p>"),
    "markdown": b"# Title\n\n* item one\n* item two\n\n```code```\n",
}
DOCX_XML = zipfile.ZipFile(io.BytesIO(SAMPLES["docx"])).read("word/document.xml")

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # the alarm below is the hang detector; timing varies on a shared machine
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Hang(Exception):
    """A parser ran past the per-example limit."""


@contextmanager
def alarm(seconds: int) -> Iterator[None]:
    def fire(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"a parser ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def survive(data: bytes, name: str | None = None, kind: Kind | None = None) -> None:
    """Parse `data`: a result or ExtractionError is fine; anything else fails the test."""
    with alarm(HANG_S):
        try:
            chosen = kind or sniff(data, name)
            result = extract(data, chosen, LIMITS)
        except ExtractionError:
            return
    assert isinstance(result.text, str)
    assert len(result.text) <= LIMITS.max_chars


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(0, 12))):
        if not data:
            break
        position = draw(st.integers(0, len(data) - 1))
        operation = draw(st.sampled_from(["set", "insert", "delete"]))
        if operation == "set":
            data[position] = draw(st.integers(0, 255))
        elif operation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[position : position + draw(st.integers(1, 64))]
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    return bytes(data if cut is None else data[:cut])


def rezip_docx(xml: bytes) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(SAMPLES["docx"]))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            data = xml if info.filename == "word/document.xml" else source.read(info)
            target.writestr(info.filename, data)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", sorted(SAMPLES))
@FUZZ
@given(data=st.data())
def test_mutated_files_of_each_type(kind: str, data: st.DataObject) -> None:
    survive(data.draw(mutated(SAMPLES[kind])), f"file.{'md' if kind == 'markdown' else kind}")


@FUZZ
@given(xml=mutated(DOCX_XML))
def test_docx_with_mutated_xml(xml: bytes) -> None:
    survive(rezip_docx(xml), "file.docx")


@pytest.mark.parametrize("kind", KINDS)
@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes_forced_through_each_parser(kind: Kind, data: bytes) -> None:
    survive(data, kind=kind)


@FUZZ
@given(
    prefix=st.sampled_from([b"%PDF-1.7\n", b"PK\x03\x04", b"From: a@b\nTo: c@d\n\n", b""]),
    rest=st.binary(max_size=2048),
    name=st.one_of(st.none(), st.sampled_from(["a.pdf", "a.docx", "a.eml", "a.md", "a.txt"])),
)
def test_random_bytes_behind_each_signature(prefix: bytes, rest: bytes, name: str | None) -> None:
    survive(prefix + rest, name)
