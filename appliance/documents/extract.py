"""Text out of uploaded files: PDF (pypdf), DOCX (python-docx), e-mail (`email`), text, Markdown.

The type is decided by the content, never by the file name: PDF and DOCX by their signatures,
e-mail by a parsable RFC 5322 header block, text by being valid UTF-8 without control bytes. A
name whose extension claims a binary type the content is not is refused, so a renamed file cannot
slip past the checks meant for its real type.

Every parser failure becomes `ExtractionError` (a 422 for the caller). These functions are pure
and run inside the worker process of `appliance.documents.worker`, which adds the time and memory
limits that a hostile file could otherwise exhaust.
"""

from __future__ import annotations

import email
import email.policy
import io
import re
import zipfile
from dataclasses import dataclass
from email.message import EmailMessage
from html.parser import HTMLParser
from typing import Literal

Kind = Literal["pdf", "docx", "eml", "markdown", "text"]
KINDS: tuple[Kind, ...] = ("pdf", "docx", "eml", "markdown", "text")

# Extensions that claim a type; a claim the content contradicts is refused.
_CLAIMS: dict[str, Kind] = {
    "pdf": "pdf",
    "docx": "docx",
    "eml": "eml",
    "md": "markdown",
    "markdown": "markdown",
    "txt": "text",
    "text": "text",
}
_BINARY: frozenset[Kind] = frozenset({"pdf", "docx"})
# Control bytes other than tab, newline, carriage return and form feed mean "not a text file".
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_HEADER_LINE = re.compile(rb"^[!-9;-~]+:[ \t]?.*$")
_MAIL_HEADERS = frozenset({"from", "to", "subject", "date", "message-id", "received", "cc"})


class ExtractionError(Exception):
    """The file is not one of the accepted types, breaks a limit, or cannot be parsed."""


@dataclass(frozen=True)
class Limits:
    """What one extraction may consume."""

    max_pages: int = 500
    max_chars: int = 2_000_000
    max_unpacked_bytes: int = 100_000_000
    """Total uncompressed size of a DOCX's parts (a zip bomb stops here)."""


@dataclass(frozen=True)
class Extracted:
    """The text of a document and what the caller may know about it without reading it."""

    kind: Kind
    text: str
    pages: int | None = None


def sniff(data: bytes, filename: str | None = None) -> Kind:
    """The type of `data` from its content; the name only picks Markdown over plain text."""
    claim = _claim(filename)
    if data.startswith(b"%PDF-"):
        kind: Kind = "pdf"
    elif data.startswith(b"PK\x03\x04"):
        kind = "docx" if _is_docx(data) else _refuse("a ZIP archive that is not a DOCX document")
    elif _looks_like_mail(data):
        kind = "eml"
    else:
        _decode_text(data)
        kind = "markdown" if claim == "markdown" else "text"
    if claim is not None and claim != kind and (claim in _BINARY or kind in _BINARY):
        raise ExtractionError(f"the file is named as {claim} but its content is {kind}")
    return kind


def extract(data: bytes, kind: Kind, limits: Limits) -> Extracted:
    """Text of `data` as `kind`; raises `ExtractionError` for anything malformed or too big."""
    try:
        if kind == "pdf":
            result = _pdf(data, limits)
        elif kind == "docx":
            result = _docx(data, limits)
        elif kind == "eml":
            result = Extracted("eml", _mail(data))
        else:
            result = Extracted(kind, _decode_text(data))
    except ExtractionError:
        raise
    except RecursionError as exc:
        raise ExtractionError(f"the {kind} file is nested too deeply to read") from exc
    except MemoryError as exc:
        raise ExtractionError(f"the {kind} file needs more memory than allowed") from exc
    except Exception as exc:
        # Parsers raise anything on hostile input; the caller gets a 422 naming the type only.
        raise ExtractionError(f"the {kind} file could not be read ({type(exc).__name__})") from exc
    text = result.text.replace("\x00", "")
    if len(text) > limits.max_chars:
        raise ExtractionError(f"the document holds more than {limits.max_chars} characters of text")
    if not text.strip():
        raise ExtractionError("the document holds no text (scanned images are not read)")
    return Extracted(result.kind, text, result.pages)


def _refuse(reason: str) -> Kind:
    raise ExtractionError(f"unsupported file: {reason}; accepted are PDF, DOCX, .eml, TXT, MD")


def _claim(filename: str | None) -> Kind | None:
    if not filename or "." not in filename:
        return None
    return _CLAIMS.get(filename.rsplit(".", 1)[1].lower())


def _decode_text(data: bytes) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ExtractionError(
            f"unsupported file: not UTF-8 text at byte {exc.start}; "
            "accepted are PDF, DOCX, .eml, TXT, MD"
        ) from None
    if _CONTROL.search(text):
        _refuse("binary content")
    return text


# -- PDF -----------------------------------------------------------------------------------------
def _pdf(data: bytes, limits: Limits) -> Extracted:
    from pypdf import PdfReader  # deferred: loaded on the first PDF

    reader = PdfReader(io.BytesIO(data), strict=False)
    if reader.is_encrypted and not reader.decrypt(""):
        raise ExtractionError("the PDF is password-protected")
    count = len(reader.pages)
    if count > limits.max_pages:
        raise ExtractionError(f"the PDF has {count} pages; at most {limits.max_pages} are accepted")
    texts: list[str] = []
    total = 0
    for page in reader.pages:
        text = page.extract_text() or ""
        total += len(text)
        if total > limits.max_chars:
            raise ExtractionError(
                f"the document holds more than {limits.max_chars} characters of text"
            )
        texts.append(text)
    return Extracted("pdf", "\n\n".join(texts), pages=count)


# -- DOCX ----------------------------------------------------------------------------------------
def _is_docx(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        raise ExtractionError("the ZIP container is damaged") from None
    return "word/document.xml" in names and "[Content_Types].xml" in names


def _docx(data: bytes, limits: Limits) -> Extracted:
    import docx  # deferred: loaded on the first Word document

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
        # Declared sizes bound what zipfile will inflate (it stops at the declared size and then
        # fails the CRC), so their sum is a safe cap on what parsing can unpack.
        unpacked = sum(info.file_size for info in infos)
        if len(infos) > 10_000 or unpacked > limits.max_unpacked_bytes:
            raise ExtractionError(
                f"the DOCX unpacks to more than {limits.max_unpacked_bytes} bytes"
            )
    document = docx.Document(io.BytesIO(data))
    parts: list[str] = [p.text for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            parts.append("\t".join(cell.text for cell in row.cells))
    return Extracted("docx", "\n".join(parts))


# -- e-mail --------------------------------------------------------------------------------------
def _looks_like_mail(data: bytes) -> bool:
    """A header block of `Name: value` lines (with folding) naming at least two mail headers."""
    head = data[:16_384].split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    if not lines or not lines[0]:
        return False
    names: set[str] = set()
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            continue  # folded continuation of the previous header
        if not _HEADER_LINE.match(line):
            return False
        names.add(line.split(b":", 1)[0].decode("ascii").lower())
    return len(names & _MAIL_HEADERS) >= 2


def _mail(data: bytes) -> str:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    lines = [
        f"{name}: {message[name]}"
        for name in ("From", "To", "Cc", "Date", "Subject")
        if message[name] is not None
    ]
    body = message.get_body(preferencelist=("plain", "html"))
    content = ""
    if body is not None:
        payload = body.get_content()
        content = payload if isinstance(payload, str) else ""
        if body.get_content_subtype() == "html":
            content = _html_text(content)
    return "\n".join(lines) + "\n\n" + content


class _TextOnly(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def _html_text(html: str) -> str:
    parser = _TextOnly()
    parser.feed(html)
    parser.close()
    return " ".join(" ".join(parser.parts).split())
