"""Real document files made in the test: a PDF written with pypdf, a DOCX with python-docx, an
e-mail with the standard `email` package, and hostile variants of them."""

from __future__ import annotations

import io
import zipfile
from email.message import EmailMessage

import docx
from pypdf import PdfWriter
from pypdf.generic import (
    ArrayObject,
    DecodedStreamObject,
    DictionaryObject,
    NameObject,
)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def pdf_bytes(pages: list[str], *, password: str | None = None) -> bytes:
    """A PDF with one line of Helvetica text per page."""
    writer = PdfWriter()
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
            NameObject("/Encoding"): NameObject("/WinAnsiEncoding"),
        }
    )
    font_ref = writer._add_object(font)
    for line in pages:
        page = writer.add_blank_page(width=612, height=792)
        stream = DecodedStreamObject()
        stream.set_data(f"BT /F1 12 Tf 72 720 Td ({_escape(line)}) Tj ET".encode("latin-1"))
        page[NameObject("/Contents")] = writer._add_object(stream)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font_ref})}
        )
        page[NameObject("/MediaBox")] = ArrayObject(page.mediabox)
    if password is not None:
        writer.encrypt(user_password=password, owner_password=password + "-owner")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def docx_bytes(paragraphs: list[str], *, table: list[list[str]] | None = None) -> bytes:
    """A DOCX with these paragraphs (and a table, if given)."""
    document = docx.Document()
    for text in paragraphs:
        document.add_paragraph(text)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                grid.cell(r, c).text = value
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def eml_bytes(body: str, *, subject: str = "Contract review", html: str | None = None) -> bytes:
    """An RFC 5322 message with a plain body (and an HTML alternative, if given)."""
    message = EmailMessage()
    message["From"] = "Alice Example <alice@example.com>"
    message["To"] = "bob@example.com"
    message["Subject"] = subject
    message["Date"] = "Fri, 27 Nov 2026 10:00:00 +0000"
    message.set_content(body)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message.as_bytes()


def docx_bomb(unpacked_bytes: int) -> bytes:
    """A valid-looking DOCX container with one part that inflates to `unpacked_bytes`."""
    base = docx_bytes(["bomb"])
    source = zipfile.ZipFile(io.BytesIO(base))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info, source.read(info))
        target.writestr("word/media/padding.bin", b"\0" * unpacked_bytes)
    return buffer.getvalue()


def docx_xml_bomb(paragraphs: int) -> bytes:
    """A DOCX whose main part holds `paragraphs` tiny paragraphs: small zipped, huge parsed."""
    base = docx_bytes(["x"])
    source = zipfile.ZipFile(io.BytesIO(base))
    original = source.read("word/document.xml").decode()
    start = original.index("<w:body>") + len("<w:body>")
    body = "<w:p><w:r><w:t>a</w:t></w:r></w:p>" * paragraphs
    bomb = (original[:start] + body + original[start:]).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            data = bomb if info.filename == "word/document.xml" else source.read(info)
            target.writestr(info.filename, data, zipfile.ZIP_DEFLATED)
    return buffer.getvalue()
