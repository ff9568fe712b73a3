"""Normalised views: what detection sees for each obfuscation, and the exact way back.

Every row gives an obfuscated original, the text of the view the detector analyses, and a span
of that view with the original substring it must map back to (what gets transformed).
"""

from __future__ import annotations

import pytest

from appliance.pii.normalize import View, clean_view, compact_view, views

ZWSP = "\u200b"
ZWJ = "\u200d"
RLO = "\u202e"
PDF = "\u202c"
LRI = "\u2066"
PDI = "\u2069"


def span_of(view: View, needle: str) -> tuple[int, int]:
    start = view.text.index(needle)
    return start, start + len(needle)


CLEAN = [
    pytest.param(
        "Call ２１２-５５５-０１９９ now",
        "Call 212-555-0199 now",
        "212-555-0199",
        "２１２-５５５-０１９９",
        id="full-width digits",
    ),
    pytest.param(
        f"mail jane{ZWSP}.doe@exa{ZWJ}mple.org now",
        "mail jane.doe@example.org now",
        "jane.doe@example.org",
        f"jane{ZWSP}.doe@exa{ZWJ}mple.org",
        id="zero-width inside an e-mail",
    ),
    pytest.param(
        f"id {RLO}9999-09-912{PDF} here",
        "id 9999-09-912 here",
        "9999-09-912",
        "9999-09-912",  # the controls around the value stay where they are
        id="bidi override around a number",
    ),
    pytest.param(
        f"ask {LRI}Jane Doe{PDI}.",
        "ask Jane Doe.",
        "Jane Doe",
        "Jane Doe",
        id="bidi isolates around a name",
    ),
    pytest.param(
        "Dear Jоhn Smіth,",  # Cyrillic о and і
        "Dear John Smith,",
        "John Smith",
        "Jоhn Smіth",
        id="Cyrillic homoglyphs in a name",
    ),
    pytest.param(
        "Dear Αlice Κοwalski,",  # Greek Alpha, Kappa, omicron
        "Dear Alice Kowalski,",
        "Alice Kowalski",
        "Αlice Κοwalski",
        id="Greek homoglyphs in a name",
    ),
    pytest.param(
        "the ﬁle of Oﬃcer Smith",
        "the file of Officer Smith",
        "Officer Smith",
        "Oﬃcer Smith",
        id="NFKC ligatures expand, offsets stay on the ligature",
    ),
    pytest.param(
        "Soft\u00adhyphen Jane",
        "Softhyphen Jane",
        "Jane",
        "Jane",
        id="soft hyphen removed",
    ),
]


@pytest.mark.parametrize(("original", "view_text", "needle", "original_value"), CLEAN)
def test_clean_view(original: str, view_text: str, needle: str, original_value: str) -> None:
    view = clean_view(original)
    assert view.text == view_text
    assert len(view.source) == len(view.text)
    start, end = view.span_to_original(*span_of(view, needle))
    assert original[start:end] == original_value


HIDDEN = [
    0x00AD,  # soft hyphen
    0x034F,  # combining grapheme joiner
    0x061C,  # Arabic letter mark (bidi control)
    0x180B,  # Mongolian variation selector
    0x200B,  # zero-width space
    0x200E,  # left-to-right mark
    0x202E,  # right-to-left override
    0x2060,  # word joiner
    0x2067,  # right-to-left isolate
    0x3164,  # Hangul filler
    0xFE0F,  # variation selector 16
    0xFEFF,  # BOM
    0xE0001,  # language tag
    0xE0041,  # tag letter A ("ASCII smuggling")
    0x1D173,  # musical symbol begin beam (format)
    0xE0100,  # variation selector 17
]


@pytest.mark.parametrize("codepoint", HIDDEN, ids=[f"U+{c:04X}" for c in HIDDEN])
def test_invisible_characters_are_dropped(codepoint: int) -> None:
    hidden = chr(codepoint)
    original = f"mail jane{hidden}.doe@exam{hidden}ple.org or 212-555{hidden}-0199"
    clean, compact = views(original)
    assert clean.text == "mail jane.doe@example.org or 212-555-0199"
    start, end = clean.span_to_original(*span_of(clean, "jane.doe@example.org"))
    assert original[start:end] == f"jane{hidden}.doe@exam{hidden}ple.org"
    assert compact is not None
    start, end = compact.span_to_original(*span_of(compact, "2125550199"))
    assert original[start:end] == f"212-555{hidden}-0199"


def test_ligature_pieces_map_to_the_one_original_character() -> None:
    original = "Oﬃce"
    view = clean_view(original)
    assert view.text == "Office"
    assert view.source == (0, 1, 1, 1, 2, 3)
    # Half of a ligature maps to the whole ligature, never to half a character.
    assert view.span_to_original(2, 3) == (1, 2)


COMPACT = [
    pytest.param(
        "Card 4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 ok",
        "Card 4111111111111111 ok",
        "4111111111111111",
        "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
        id="spaced digits",
    ),
    pytest.param(
        "Card 4111-1111-1111-1111 ok",
        "Card 4111111111111111 ok",
        "4111111111111111",
        "4111-1111-1111-1111",
        id="dashed digits",
    ),
    pytest.param(
        "SSN 219.09.9999 ok",
        "SSN 219099999 ok",
        "219099999",
        "219.09.9999",
        id="dotted digits",
    ),
    pytest.param(
        "Call 212-555-\n0199 tomorrow",
        "Call 2125550199 tomorrow",
        "2125550199",
        "212-555-\n0199",
        id="digits broken by a line break",
    ),
    pytest.param(
        "Call 212 555\r\n   0199 tomorrow",
        "Call 2125550199 tomorrow",
        "2125550199",
        "212 555\r\n   0199",
        id="CRLF and indentation inside digits",
    ),
    pytest.param(
        "Call ２１２ ５５５ ０１９９ now",
        "Call 2125550199 now",
        "2125550199",
        "２１２ ５５５ ０１９９",
        id="full-width and spaced together",
    ),
    pytest.param(
        "IBAN G B 8 2 W E S T 1 2 3 4 5 6 9 8 7 6 5 4 3 2 please",
        "IBAN GB82WEST12345698765432 please",
        "GB82WEST12345698765432",
        "G B 8 2 W E S T 1 2 3 4 5 6 9 8 7 6 5 4 3 2",
        id="letters and digits spelled out one by one",
    ),
    pytest.param(
        "Call (415)\n336-2699 today",
        "Call (415)3362699 today",
        "(415)3362699",
        "(415)\n336-2699",
        id="line break after a bracketed area code",
    ),
    pytest.param(
        f"Card 4111{ZWSP} 1111 {ZWSP}1111 1111 ok",
        "Card 4111111111111111 ok",
        "4111111111111111",
        f"4111{ZWSP} 1111 {ZWSP}1111 1111",
        id="zero-width and spaces inside digits",
    ),
]


@pytest.mark.parametrize(("original", "view_text", "needle", "original_value"), COMPACT)
def test_compact_view(original: str, view_text: str, needle: str, original_value: str) -> None:
    clean, compact = views(original)
    assert compact is not None
    assert compact.text == view_text
    assert len(compact.source) == len(compact.text)
    start, end = compact.span_to_original(*span_of(compact, needle))
    assert original[start:end] == original_value
    # The clean view keeps the separators: only the compact view joins digit runs.
    assert clean.text != compact.text


@pytest.mark.parametrize(
    "original",
    [
        "Nothing to see here.",
        "A word - another word",
        "Two lines\nof text 12",
        "",
    ],
)
def test_no_compact_view_when_no_digit_run_is_split(original: str) -> None:
    clean, compact = views(original)
    assert clean.text == original
    assert compact is None
    assert clean.source == tuple(range(len(original)))


def test_short_spelled_out_runs_and_words_are_kept() -> None:
    # Fewer than six single characters, or ordinary words: nothing is joined.
    assert views("a b c d e")[1] is None
    assert views("I am a cat in a hat")[1] is None


def test_separators_between_words_and_digits_are_kept() -> None:
    # Only separators with a digit on both sides go: "Room 12 - 3rd floor" joins 12 and 3.
    view = compact_view(clean_view("Flat 4 - B, 12 - 3rd"))
    assert view.text == "Flat 4 - B, 123rd"


def test_identity_view_maps_every_span_to_itself() -> None:
    original = "Jane Doe, jane@example.org"
    view = clean_view(original)
    for start in range(len(original)):
        for end in range(start + 1, len(original) + 1):
            assert view.span_to_original(start, end) == (start, end)
