"""Extraction of each type, type sniffing from content, and the limits hostile files meet."""

from __future__ import annotations

import io
import zipfile

import pytest

from appliance.documents.extract import ExtractionError, Limits, extract, sniff
from tests.unit.documents.samples import docx_bomb, docx_bytes, eml_bytes, pdf_bytes


def read(data: bytes, name: str | None, limits: Limits | None = None) -> tuple[str, str]:
    kind = sniff(data, name)
    return kind, extract(data, kind, limits or Limits()).text


def test_pdf_text_and_pages() -> None:
    data = pdf_bytes(["Tenancy agreement for flat 4", "Signed by both parties"])
    kind = sniff(data, "lease.pdf")
    result = extract(data, kind, Limits())
    assert kind == "pdf"
    assert result.pages == 2
    assert "Tenancy agreement for flat 4" in result.text
    assert "Signed by both parties" in result.text


def test_docx_paragraphs_and_tables() -> None:
    data = docx_bytes(["Offer letter", "Salary review in March"], table=[["Name", "Grade"]])
    assert read(data, "offer.docx") == ("docx", "Offer letter\nSalary review in March\nName\tGrade")


def test_eml_headers_and_plain_body() -> None:
    kind, text = read(eml_bytes("Please review clause 7.", html="<p>ignored</p>"), "mail.eml")
    assert kind == "eml"
    assert "Subject: Contract review" in text
    assert "Please review clause 7." in text
    assert "ignored" not in text


def test_eml_with_only_html_body_is_stripped_of_tags() -> None:
    from email.message import EmailMessage

    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.com", "b@example.com", "Hi"
    message.set_content("<p>Hello <b>there</b></p><script>x()</script>", subtype="html")
    kind, text = read(message.as_bytes(), None)
    assert kind == "eml"
    assert text.endswith("Hello there")


@pytest.mark.parametrize(
    ("data", "name", "kind"),
    [
        (b"# Heading\n\nSome *markdown*.", "notes.md", "markdown"),
        (b"# Heading\n\nSome *markdown*.", "notes.txt", "text"),
        ("Caf\u00e9 na\u00efve text".encode(), None, "text"),
    ],
)
def test_text_kinds(data: bytes, name: str | None, kind: str) -> None:
    assert read(data, name) == (kind, data.decode())


def test_type_comes_from_content_not_the_name() -> None:
    assert sniff(pdf_bytes(["x"]), "scan-without-extension") == "pdf"
    assert sniff(docx_bytes(["x"]), None) == "docx"
    assert sniff(eml_bytes("hello"), "message.txt") == "eml"


def test_binary_file_under_a_text_name_is_refused() -> None:
    with pytest.raises(ExtractionError, match="named as text but its content is pdf"):
        sniff(pdf_bytes(["x"]), "looks-harmless.txt")


@pytest.mark.parametrize(
    ("data", "name", "message"),
    [
        (b"just text", "report.pdf", "named as pdf but its content is text"),
        (b"\x7fELF\x02\x01\x01\x00binary", "tool.txt", "binary content"),
        (b"\xff\xfe\x00\x00broken", None, "not UTF-8"),
        (b"PK\x03\x04not really a zip", "a.docx", "ZIP container is damaged"),
    ],
)
def test_unsupported_or_renamed_files_are_refused(data: bytes, name: str, message: str) -> None:
    with pytest.raises(ExtractionError, match=message):
        sniff(data, name)


def test_zip_that_is_not_a_docx_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("hello.txt", "hi")
    with pytest.raises(ExtractionError, match="not a DOCX"):
        sniff(buffer.getvalue(), "a.docx")


def test_zip_bomb_docx_stops_at_the_unpacked_limit() -> None:
    data = docx_bomb(50_000_000)
    assert len(data) < 200_000  # tiny on the wire, huge unpacked
    with pytest.raises(ExtractionError, match="unpacks to more than"):
        extract(data, sniff(data, "bomb.docx"), Limits(max_unpacked_bytes=10_000_000))


def test_page_limit() -> None:
    data = pdf_bytes(["one", "two", "three"])
    with pytest.raises(ExtractionError, match="3 pages; at most 2"):
        extract(data, "pdf", Limits(max_pages=2))


def test_character_limit() -> None:
    with pytest.raises(ExtractionError, match="more than 10 characters"):
        extract(b"x" * 11, "text", Limits(max_chars=10))


def test_password_protected_pdf_is_refused() -> None:
    with pytest.raises(ExtractionError, match="password-protected"):
        extract(pdf_bytes(["secret"], password="pw"), "pdf", Limits())


def test_truncated_pdf_is_an_extraction_error() -> None:
    data = pdf_bytes(["some text"])
    with pytest.raises(ExtractionError):
        extract(data[: len(data) // 3], "pdf", Limits())


def test_empty_text_is_refused() -> None:
    with pytest.raises(ExtractionError, match="no text"):
        extract(pdf_bytes([""]), "pdf", Limits())
