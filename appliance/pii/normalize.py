"""Views of a text for detection, each with a map back to offsets in the original.

People hide identifiers from detectors, on purpose or by copy-paste accident: full-width digits,
zero-width characters inside an e-mail address, a Cyrillic "о" in a name, a card number typed
with spaces between every digit, a phone number broken over two lines. Detection runs on
normalised views; findings are mapped back to the original text, which is what gets transformed.

- `clean` view: NFKC, invisible and bidi control characters removed, Cyrillic and Greek
  look-alikes folded to Latin. Same words, same layout.
- `compact` view: the clean view with separators inside digit runs removed (spaces, dots,
  dashes, slashes, line breaks, and a single comma or underscore), so `4 1 1 1 - 1 1 1 1`,
  `212-555-\n0199` or `123_45_6789` become one run.

The clean view also folds what a word processor or another script puts in a value: every dash
(U+2010-U+2015, U+2212 minus, small and full-width hyphen-minus) to `-`, every decimal digit
(Arabic-Indic, Devanagari, ...) to its ASCII digit, and drops combining marks written over a
Latin letter or a digit (`1̲2̲3̲`, a decomposed `é`), so `078–05–1120` reads as `078-05-1120`.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Zero-width, joiners, bidi embeddings/overrides/isolates, soft hyphen, BOM, word joiner,
# Mongolian vowel separator.
INVISIBLE = frozenset(
    [
        0x00AD,
        0x180E,
        0x200B,
        0x200C,
        0x200D,
        0x200E,
        0x200F,
        0x2060,
        0x2061,
        0x2062,
        0x2063,
        0x2064,
        0xFEFF,
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
        # Arabic letter mark (a bidi control), combining grapheme joiner, variation selectors,
        # Hangul fillers: all render as nothing between two characters of a value.
        0x061C,
        0x034F,
        0x115F,
        0x1160,
        0x3164,
        0xFFA0,
        *range(0x180B, 0x180E),
        *range(0xFE00, 0xFE10),
        *range(0xE0100, 0xE01F0),
    ]
)

# Cyrillic and Greek letters that render like Latin ones (Unicode confusables, the common set).
CONFUSABLES = str.maketrans(
    {
        "а": "a",
        "е": "e",
        "о": "o",
        "р": "p",
        "с": "c",
        "у": "y",
        "х": "x",
        "і": "i",
        "ј": "j",
        "ѕ": "s",
        "һ": "h",
        "ԁ": "d",
        "ԛ": "q",
        "ԝ": "w",
        "ӏ": "l",
        "А": "A",
        "В": "B",
        "Е": "E",
        "К": "K",
        "М": "M",
        "Н": "H",
        "О": "O",
        "Р": "P",
        "С": "C",
        "Т": "T",
        "У": "Y",
        "Х": "X",
        "І": "I",
        "Ј": "J",
        "Ѕ": "S",
        "α": "a",
        "ε": "e",
        "ι": "i",
        "κ": "k",
        "ν": "v",
        "ο": "o",
        "ρ": "p",
        "τ": "t",
        "υ": "u",
        "χ": "x",
        "Α": "A",
        "Β": "B",
        "Ε": "E",
        "Ζ": "Z",
        "Η": "H",
        "Ι": "I",
        "Κ": "K",
        "Μ": "M",
        "Ν": "N",
        "Ο": "O",
        "Ρ": "P",
        "Τ": "T",
        "Υ": "Y",
        "Χ": "X",
    }
)

# Dashes that stand for a hyphen-minus between the parts of a value.
DASHES = frozenset(
    [*range(0x2010, 0x2016), 0x2043, 0x2212, 0x02D7, 0x2796, 0xFE58, 0xFE63, 0xFF0D, 0x2E3A, 0x2E3B]
)

# A separator between two digits that people use to group or to hide digits.
_DIGIT_SEPARATOR = re.compile(
    r"(?<=\d)(?:[ \t.\-/\u00a0]*(?:\r?\n[ \t]*)?[ \t.\-/\u00a0]*|[,_])(?=\d)"
)


@dataclass(frozen=True)
class View:
    """A transformed text and, for each of its characters, the index of its source character."""

    text: str
    source: tuple[int, ...]

    def span_to_original(self, start: int, end: int) -> tuple[int, int]:
        """Map a [start, end) span of this view back to the original text."""
        return self.source[start], self.source[end - 1] + 1


def clean_view(text: str) -> View:
    """NFKC, invisible characters dropped, look-alikes folded; offsets kept per character."""
    chars: list[str] = []
    source: list[int] = []
    for index, char in enumerate(text):
        # Any other format character (tag characters, invisible operators, ...) is invisible too.
        category = unicodedata.category(char)
        if ord(char) in INVISIBLE or category == "Cf":
            continue
        if category == "Mn" and chars and chars[-1].isascii() and chars[-1].isalnum():
            continue  # a combining mark over a Latin letter or a digit
        if ord(char) in DASHES:
            chars.append("-")
            source.append(index)
            continue
        normal = unicodedata.normalize("NFKC", char).translate(CONFUSABLES)
        for piece in normal:
            if not piece.isascii() and piece.isdecimal():
                piece = str(unicodedata.decimal(piece))
            elif ord(piece) in DASHES:
                piece = "-"
            chars.append(piece)
            source.append(index)
    return View("".join(chars), tuple(source))


# Six or more single letters or digits with one space or tab between each ("G B 2 9 N W B K"):
# a value spelled out character by character, which the digit-run rule alone leaves split.
_SPELLED_OUT = re.compile(r"(?<![^\W_])(?:[^\W_][ \t]){5,}[^\W_](?![^\W_])")


# A line break after a bracketed area code: "(415)\n336-2699".
_AREA_CODE_BREAK = re.compile(r"(?<=\(\d\d\d\))[ \t]*\r?\n[ \t]*(?=\d)")


def compact_view(clean: View) -> View:
    """The clean view with separators inside digit runs, and the spaces of values spelled out
    one character at a time, removed."""
    keep = [True] * len(clean.text)
    for match in _DIGIT_SEPARATOR.finditer(clean.text):
        for i in range(match.start(), match.end()):
            keep[i] = False
    for match in _AREA_CODE_BREAK.finditer(clean.text):
        for i in range(match.start(), match.end()):
            keep[i] = False
    for match in _SPELLED_OUT.finditer(clean.text):
        for i in range(match.start(), match.end()):
            if clean.text[i] in " \t":
                keep[i] = False
    chars = [c for c, k in zip(clean.text, keep, strict=True) if k]
    source = [s for s, k in zip(clean.source, keep, strict=True) if k]
    return View("".join(chars), tuple(source))


def views(text: str) -> tuple[View, View | None]:
    """The clean view, and the compact view when it differs from the clean one."""
    clean = clean_view(text)
    compact = compact_view(clean)
    return clean, (compact if compact.text != clean.text else None)
