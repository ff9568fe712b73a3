"""Shape-first recognizers for structured identifiers.

A privacy product must protect a value that *looks like* an identifier where it stands. Presidio's
stock recognizers do the opposite in places: its SSN recognizer drops "known invalid" numbers
(`123-45-6789`), libphonenumber rejects unassigned area codes (`(535) 345-0772`), and its card
recognizer only knows some issuer prefixes. Here the shape finds the value; context words near it
raise the score; a validity check (Luhn, mod-97, SSN area rules, a real IPv6) may raise it too.
Nothing vetoes a shaped value that has context.

Each recognizer scores context itself (in a window before the value) instead of leaving it to
Presidio's lemma-based enhancer, so that the same value scores the same in the clean view and in
the compact view (where no NLP runs).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from presidio_analyzer import EntityRecognizer, RecognizerResult

from appliance.pii.checksums import luhn_valid, mod97_valid

# How far before a value its context words may stand ("SSN (on file): 078-05-1120").
CONTEXT_BEFORE = 48
# How far after ("078-05-1120 (SSN)").
CONTEXT_AFTER = 16
# Score lost per character between a context word and the value.
CONTEXT_DECAY = 0.002
# Distance added for a context word that follows the value rather than preceding it.
AFTER_PENALTY = 8


@dataclass(frozen=True)
class Shape:
    """One way an identifier is written: a regex (group `value` if the label is part of it),
    the score of the bare shape, the score with context, and an optional validity check that
    adds `valid_bonus` (never subtracts)."""

    name: str
    regex: str
    score: float
    context_score: float
    validator: Callable[[str], bool] | None = None
    valid_bonus: float = 0.1
    flags: int = re.IGNORECASE
    accept: Callable[[str], bool] | None = None
    """A structural filter (digit count, a real address): not a validity veto, a shape test."""


class ShapeRecognizer(EntityRecognizer):
    """Finds one entity type by its shapes; context words and validity raise the score."""

    def __init__(
        self, *, entity: str, name: str, shapes: list[Shape], context: str | None = None
    ) -> None:
        self._shapes = [(shape, re.compile(shape.regex, shape.flags)) for shape in shapes]
        self._context = re.compile(context, re.IGNORECASE) if context else None
        self._label = name
        super().__init__(supported_entities=[entity], name=name, supported_language="en")

    def load(self) -> None:
        """Nothing to load: the patterns compile in `__init__`."""

    def context_distance(self, text: str, start: int, end: int) -> int | None:
        """How many characters separate the nearest context word from `text[start:end]` (None:
        no context word within reach)."""
        if self._context is None:
            return None
        window = max(0, start - CONTEXT_BEFORE)
        before = [start - m.end() for m in self._context.finditer(text, window, start)]
        # A word after the value counts, but less than one before it ("passport no. X and
        # driver's license Y": "driver's" after X must not make X a licence).
        after = [
            AFTER_PENALTY + 4 * (m.start() - end)
            for m in self._context.finditer(text, end, end + CONTEXT_AFTER)
        ]
        distances = before + after
        return min(distances) if distances else None

    def has_context(self, text: str, start: int, end: int) -> bool:
        """Whether a context word stands just before (or just after) `text[start:end]`."""
        return self.context_distance(text, start, end) is not None

    def context_score(self, shape_score: float, text: str, start: int, end: int) -> float:
        """The score with context: the nearer the word, the higher (so that in "passport no. X
        and driver's license Y", Y is the licence)."""
        distance = self.context_distance(text, start, end)
        if distance is None:
            return 0.0
        return shape_score - CONTEXT_DECAY * min(distance, CONTEXT_BEFORE)

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        """Every shaped match, scored by shape, context and validity."""
        results = []
        for shape, pattern in self._shapes:
            for match in pattern.finditer(text):
                start, end = match.span("value") if "value" in pattern.groupindex else match.span()
                value = text[start:end]
                if shape.accept is not None and not shape.accept(value):
                    continue
                score = max(shape.score, self.context_score(shape.context_score, text, start, end))
                if shape.validator is not None and shape.validator(value):
                    score = min(1.0, score + shape.valid_bonus)
                results.append(self._result(start, end, score))
        return results

    def _result(self, start: int, end: int, score: float) -> RecognizerResult:
        return RecognizerResult(
            self.supported_entities[0],
            start,
            end,
            score,
            # Scored with context already: Presidio's enhancer must not add to it again.
            recognition_metadata={
                "recognizer_name": self._label,
                "is_score_enhanced_by_context": True,
            },
        )


def _digits(value: str) -> str:
    return "".join(c for c in value if c.isdigit())


def _digit_count(low: int, high: int) -> Callable[[str], bool]:
    return lambda value: low <= len(_digits(value)) <= high


# -- US social security number ---------------------------------------------------------------


def ssn_plausible(value: str) -> bool:
    """The SSA's assignment rules (area not 000, 666 or 9xx; group and serial not zero).

    Only raises the score: `123-45-6789` and `078-05-1120` are protected all the same."""
    digits = _digits(value)
    if len(digits) != 9:
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


_NOT_DIGIT_BEFORE = r"(?<![\w-])"
_NOT_DIGIT_AFTER = r"(?![\w]|-\d)"

SSN_CONTEXT = (
    r"\b(?:ssn|ss#|ss no|s\.s\.n\.?|social security|social sec\.?|soc\.? ?sec\.?|"
    r"ssa number|tax ?payer id|tin)\b"
)
SSN_SHAPES = [
    # 3-2-4 with one separator used twice: the SSN's own shape.
    Shape(
        "ssn formatted",
        rf"{_NOT_DIGIT_BEFORE}\d{{3}}(?P<sep>[-. /])\d{{2}}(?P=sep)\d{{4}}{_NOT_DIGIT_AFTER}",
        0.5,
        0.85,
        validator=ssn_plausible,
    ),
    # Nine digits run together: only with context (passport and account numbers look the same).
    Shape(
        "ssn bare",
        rf"{_NOT_DIGIT_BEFORE}\d{{9}}{_NOT_DIGIT_AFTER}",
        0.05,
        0.75,
        validator=ssn_plausible,
        valid_bonus=0.05,
    ),
]

# -- phone numbers ---------------------------------------------------------------------------


def nanp_plausible(value: str) -> bool:
    """Area code and exchange start with 2-9 (NANP numbering); raises the score only."""
    digits = _digits(value)
    if len(digits) == 11 and digits[0] == "1":
        digits = digits[1:]
    return len(digits) == 10 and digits[0] in "23456789" and digits[3] in "23456789"


PHONE_CONTEXT = (
    r"\b(?:phone|tel|telephone|mobile|cell|cellphone|call\w*|contact|reach|dial|"
    r"text|sms|whatsapp|ring|landline|ph|mob|number)\b"
)
_SEP = r"[-. \u00a0]"
PHONE_SHAPES = [
    # NANP, any area code: (535) 345-0772, 535-345-0772, 535.345.0772, +1 535 345 0772.
    Shape(
        "nanp formatted",
        rf"(?<![\w+])(?:\+?1{_SEP}?)?(?:\(\d{{3}}\){_SEP}?|\d{{3}}{_SEP})"
        rf"\d{{3}}{_SEP}\d{{4}}(?![\w]|-\d)",
        0.5,
        0.85,
        validator=nanp_plausible,
    ),
    # Ten digits run together: only with context (account and case numbers look the same).
    Shape("nanp bare", r"(?<![\w+])(?:\+?1)?\d{10}(?!\w)", 0.2, 0.7, validator=nanp_plausible),
    # International with a country code: +44 20 7946 0958, +44(0)1632 960 123, 0049 30 1234567.
    Shape(
        "international",
        r"(?<![\w+])(?:\+|00)[1-9]\d{0,2}(?:[-. \u00a0]?\(?\d{1,5}\)?){1,6}(?![\w]|-\d)",
        0.55,
        0.85,
        accept=_digit_count(8, 15),
    ),
    # National trunk-prefixed numbers (UK and most of Europe): 020 7946 0958, (0161) 496 0000.
    # The trunk code in brackets is a phone number's own shape.
    Shape(
        "national bracketed",
        r"(?<![\w+])\(0\d{2,4}\)[ \u00a0]?\d{3,4}[-. \u00a0]?\d{3,4}(?![\w]|-\d)",
        0.5,
        0.8,
        accept=_digit_count(10, 11),
    ),
    Shape(
        "national",
        r"(?<![\w+])\(?0\d{2,4}\)?[-. \u00a0]?\d{3,4}[-. \u00a0]?\d{3,4}(?![\w]|-\d)",
        0.35,
        0.75,
        accept=_digit_count(10, 11),
    ),
]

# -- payment cards ---------------------------------------------------------------------------

CARD_CONTEXT = (
    r"\b(?:card|credit|debit|visa|master ?card|amex|american express|discover|diners|jcb|"
    r"maestro|payment|paid|pan|cc|cc#|charged?)\b"
)
CARD_SHAPES = [
    # Groups of four (and Amex 4-6-5, Diners 4-6-4) with one kind of separator: 12-19 digits.
    Shape(
        "card grouped",
        r"(?<![\w-])\d{4}(?P<sep>[- \u00a0.])(?:\d{4}(?P=sep)\d{4}(?P=sep)\d{1,7}|"
        r"\d{6}(?P=sep)\d{4,5})(?![\w]|-\d)",
        0.35,
        0.8,
        validator=luhn_valid,
        valid_bonus=0.3,
        accept=_digit_count(12, 19),
    ),
    Shape(
        "card bare",
        r"(?<![\w-])\d{12,19}(?![\w]|-\d)",
        0.1,
        0.55,
        validator=luhn_valid,
        valid_bonus=0.35,
    ),
]

# -- driver's licences and passports ----------------------------------------------------------

LICENCE_CONTEXT = (
    r"\b(?:driver'?s?|driving|DL|D\.L\.|DLN|licen[cs]e|lic\.?|operator'?s? permit|"
    r"permit (?:no|number)|state id)\b"
)
LICENCE_SHAPES = [
    # The common US state formats: a letter (or two) and digits (CA A1234567, FL/IL letter +
    # 12 digits, WA-style letters), optionally grouped (FL S530-460-73-123-0); all-digit ones
    # (NY 9, TX 8, PA 8 digits). Alone, any of these is just a code: context is required.
    Shape(
        "letters and digits",
        r"(?<![\w-])[A-Z]{1,3}-?\d{3,14}(?:-\d{1,5}){0,4}(?![\w]|-\d)",
        0.1,
        0.7,
        accept=_digit_count(5, 16),
    ),
    Shape(
        "digits",
        r"(?<![\w-])\d{3}[- ]?\d{2,3}[- ]?\d{3,6}(?![\w]|-\d)",
        0.02,
        0.7,
        accept=_digit_count(7, 12),
    ),
    Shape("digits bare", r"(?<![\w-])\d{7,12}(?![\w]|-\d)", 0.02, 0.7),
    # A UK driving licence number: 5 surname letters (9-padded), 6 digits, 2 initials, a check
    # digit and two letters; distinctive enough to score without context.
    Shape(
        "uk driving licence",
        r"(?<![\w-])[A-Z9]{5}\d[0156]\d{4}[A-Z9]{2}\d[A-Z]{2}(?:\s?\d{2})?(?![\w])",
        0.7,
        0.9,
    ),
]

PASSPORT_CONTEXT = r"\b(?:passport|passeport|reisepass|travel document|mrz)\b"
PASSPORT_SHAPES = [
    # US: 9 digits or a letter and 8 digits; UK: 9 digits; most others 1-2 letters + 6-8 digits.
    Shape("passport", r"(?<![\w-])[A-Z]{0,2}\d{6,9}(?![\w]|-\d)", 0.05, 0.7),
]

# -- IBAN ------------------------------------------------------------------------------------

# Length of the IBAN of each country that issues them (ISO 13616 registry).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip
IBAN_CONTEXT = r"\b(?:iban|bank|account|acct|transfer|wire|sepa|swift|bic|payee|beneficiary)\b"
_IBAN_CANDIDATE = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?:[ \-\u00a0]?[A-Za-z0-9]){11,32}", re.IGNORECASE
)


class IbanShapeRecognizer(ShapeRecognizer):
    """IBANs in any case and grouping, cut at their country's length (so that a word after the
    last group is not taken in); mod-97 raises the score, context alone suffices."""

    def __init__(self) -> None:
        super().__init__(entity="IBAN_CODE", name="IbanShapeRecognizer", shapes=[],
                         context=IBAN_CONTEXT)  # fmt: skip

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        """Candidates cut to the country's IBAN length, scored by checksum and context."""
        results = []
        for match in _IBAN_CANDIDATE.finditer(text):
            start = match.start()
            length = IBAN_LENGTHS.get(match.group()[:2].upper())
            if length is None:
                continue
            end, seen = start, 0
            for index in range(start, match.end()):
                if text[index].isalnum():
                    seen += 1
                    if seen == length:
                        end = index + 1
                        break
            if seen < length:
                continue
            if end < len(text) and text[end].isalnum():
                continue  # runs on into more letters or digits: not this country's IBAN
            value = text[start:end]
            grouped = " " in value or "-" in value
            score = 0.35 if grouped or value[:2].isupper() else 0.25
            score = max(score, self.context_score(0.6, text, start, end))
            if mod97_valid(value):
                # The country's exact length and a mod-97 check: as strong as evidence gets.
                score = max(0.95, min(1.0, score + 0.55))
            results.append(self._result(start, end, score))
        return results


# -- dates of birth --------------------------------------------------------------------------

_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_DATE = (
    r"(?:\d{1,2}[/.\-]\d{1,2}[/.\-](?:\d{4}|\d{2})|\d{4}[/.\-]\d{1,2}[/.\-]\d{1,2}|"
    rf"(?:the\s+)?\d{{1,2}}(?:st|nd|rd|th)?(?:\s+of)?\s+{_MONTH},?\s+\d{{4}}|"
    rf"{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}})"
)
DOB_SHAPES = [
    Shape(
        "labelled date of birth",
        r"\b(?:DOB|D\.O\.B\.?|date\s+of\s+birth|birth\s*date|birthday|born(?:\s+on)?|"
        r"d/o/b)\b[^\n\d]{0,24}?(?P<value>" + _DATE + r")",
        0.9,
        0.9,
    ),
]

# -- URLs with a personal path ---------------------------------------------------------------

PERSONAL_URL_SHAPES = [
    Shape(
        "profile path",
        r"\b(?:https?://|www\.)[^\s/<>\"']+/(?:~|@|u/|user/|users/|profile/|profiles/|in/|"
        r"people/|person/|member/|members/|author/|staff/|home/|~)[^\s<>\"'()\[\]]*[^\s<>\"'()"
        r"\[\].,;:!?]",
        0.85,
        0.85,
    ),
]

# -- IP and MAC addresses ----------------------------------------------------------------------


def _ip_accept(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


IP_CONTEXT = r"\b(?:ip|ipv4|ipv6|address|host|server|login|logged|access(?:ed)?|from|client)\b"
IP_SHAPES = [
    Shape(
        "ipv4",
        r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)",
        0.6,
        0.85,
        accept=_ip_accept,
    ),
    # Full and compressed IPv6 (validated by the standard library, which is the shape here).
    Shape(
        "ipv6",
        r"(?<![\w:.])(?=[0-9a-f:]*:[0-9a-f]*:)(?:[0-9a-f]{1,4}|:)(?::[0-9a-f]{0,4}){1,7}"
        r"(?:(?<=:)(?:\d{1,3}\.){3}\d{1,3})?(?![\w:]|\.\d)",
        0.8,
        0.9,
        accept=lambda v: v.count(":") >= 2 and sum(c.isalnum() for c in v) >= 4 and _ip_accept(v),
    ),
]
MAC_SHAPES = [
    Shape(
        "mac colon or dash",
        r"(?<![\w:-])[0-9a-f]{2}(?P<sep>[:-])(?:[0-9a-f]{2}(?P=sep)){4}[0-9a-f]{2}(?![\w:-])",
        0.8,
        0.9,
    ),
    Shape("mac dotted", r"(?<![\w.])[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}(?![\w.])", 0.6, 0.9),
]
MAC_CONTEXT = r"\b(?:mac|hardware address|ethernet|wi-?fi|device|adapter|bssid)\b"

# -- military (APO/FPO/DPO) addresses --------------------------------------------------------

MILITARY_ADDRESS_SHAPES = [
    Shape(
        "ship or unit with apo/fpo/dpo",
        r"\b(?:(?:USNS|USNV|USS|USCGC|HMS)\s+[A-Z][A-Za-z'.-]*(?:\s+[A-Z][A-Za-z'.-]*){0,2}|"
        r"(?:PSC|Unit|CMR)\s+\d{1,5},?\s+Box\s+\d{1,5}),?\s+(?:FPO|APO|DPO)\s+(?:AA|AE|AP)"
        r"(?:\s+\d{5}(?:-\d{4})?)?",
        0.9,
        0.9,
        flags=0,
    ),
    Shape(
        "apo/fpo/dpo line",
        r"\b(?:FPO|APO|DPO)\s+(?:AA|AE|AP)\s+\d{5}(?:-\d{4})?\b",
        0.8,
        0.8,
        flags=0,
    ),
]


def identifier_recognizers() -> list[Any]:
    """The shape-first recognizers, one per entity type (or two where types share one)."""
    return [
        ShapeRecognizer(entity="US_SSN", name="SsnShapeRecognizer", shapes=SSN_SHAPES,
                        context=SSN_CONTEXT),
        ShapeRecognizer(entity="PHONE_NUMBER", name="PhoneShapeRecognizer", shapes=PHONE_SHAPES,
                        context=PHONE_CONTEXT),
        ShapeRecognizer(entity="CREDIT_CARD", name="CardShapeRecognizer", shapes=CARD_SHAPES,
                        context=CARD_CONTEXT),
        IbanShapeRecognizer(),
        ShapeRecognizer(entity="US_DRIVER_LICENSE", name="LicenceShapeRecognizer",
                        shapes=LICENCE_SHAPES, context=LICENCE_CONTEXT),
        ShapeRecognizer(entity="US_PASSPORT", name="PassportShapeRecognizer",
                        shapes=PASSPORT_SHAPES, context=PASSPORT_CONTEXT),
        ShapeRecognizer(entity="DATE_OF_BIRTH", name="DateOfBirthRecognizer", shapes=DOB_SHAPES),
        ShapeRecognizer(entity="URL", name="PersonalUrlRecognizer", shapes=PERSONAL_URL_SHAPES),
        ShapeRecognizer(entity="IP_ADDRESS", name="IpShapeRecognizer", shapes=IP_SHAPES,
                        context=IP_CONTEXT),
        ShapeRecognizer(entity="MAC_ADDRESS", name="MacAddressRecognizer", shapes=MAC_SHAPES,
                        context=MAC_CONTEXT),
        ShapeRecognizer(entity="STREET_ADDRESS", name="MilitaryAddressRecognizer",
                        shapes=MILITARY_ADDRESS_SHAPES),
    ]  # fmt: skip
