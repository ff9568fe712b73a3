"""Recognizers Presidio lacks, and the ones a policy defines.

Stock Presidio (measured here) has no street-address or postcode recognizer, and spaCy's small
model misses some names or labels them ORGANIZATION ("Reply to Margaret Thornbury"), and misses
names typed in lower case. The built-ins below close those gaps with patterns and a given-name
list; a policy adds its own patterns, context words, deny-lists and checksums.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files
from typing import Any

import regex
from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer, RecognizerResult

from appliance.policies.schema import CustomRecognizer

# Presidio matches patterns case-insensitively by default; capitalisation is evidence here.
_CASE_SENSITIVE = regex.DOTALL | regex.MULTILINE
_STREET_TYPES = (
    "Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|"
    "Terrace|Terr|Close|Crescent|Cres|Square|Sq|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Row|"
    "Gardens|Grove|Hill|Mews|Walk"
)
_UNIT = r"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|Flat|Floor|Fl|#)\.?\s*[A-Za-z0-9-]+)?"
STREET_ADDRESS = (
    r"\b\d{1,6}[A-Za-z]?\s+(?:[NSEW]\.?\s+)?(?:[A-Z][A-Za-z'’.-]*\s+){0,4}"
    rf"(?:{_STREET_TYPES})\b\.?{_UNIT}"
)
PO_BOX = r"\bP\.?\s?O\.?\s+Box\s+\d{1,7}\b"
_STATES = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|"
    "NH|NJ|NM|NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY"
)
US_ZIP_AFTER_STATE = rf"\b(?:{_STATES})\s+(?P<value>\d{{5}}(?:-\d{{4}})?)\b"
US_ZIP = r"\b\d{5}(?:-\d{4})?\b"
UK_POSTCODE = r"\b[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}\b"
TITLES = r"(?:Mr|Mrs|Ms|Mx|Miss|Dr|Prof|Professor|Sir|Dame|Judge|Justice|Rev|Nurse)"
TITLED_NAME = rf"\b{TITLES}\.?\s+(?P<value>[A-Z][A-Za-z'’-]+(?:\s+[A-Z][A-Za-z'’-]+)?)"
_SURNAME = r"[A-Z][a-z'’-]+(?:-[A-Z][a-z'’-]+)?"
_STOPWORDS = (
    "a an and are as at be but by for from had has have he her his i in is it its of on or "
    "our she so that the their them they this to was we were with you your will would can "
    "could should said says about after before here there"
)
_LOWER_STOP = frozenset(_STOPWORDS.split())


@cache
def first_names() -> frozenset[str]:
    """The given-name list shipped in `pii/data/first_names.txt`, lower case."""
    text = files("appliance.pii").joinpath("data/first_names.txt").read_text(encoding="utf-8")
    return frozenset(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


class GroupRecognizer(EntityRecognizer):
    """A regex recognizer whose entity span is the named group `value`, not the whole match."""

    def __init__(self, *, entity: str, name: str, regex: str, score: float, flags: int = 0) -> None:
        self._regex = re.compile(regex, flags)
        self._score = score
        self._label = name
        super().__init__(supported_entities=[entity], name=name, supported_language="en")

    def load(self) -> None:
        """Nothing to load."""

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        """Every match's `value` group (or whole match) as a result."""
        results = []
        for match in self._regex.finditer(text):
            start, end = match.span("value") if "value" in self._regex.groupindex else match.span()
            results.append(
                RecognizerResult(
                    self.supported_entities[0],
                    start,
                    end,
                    self._score,
                    recognition_metadata={"recognizer_name": self._label},
                )
            )
        return results


class GivenNameRecognizer(EntityRecognizer):
    """`<given name> <Surname>` from the shipped name list; lower-case forms score lower."""

    # Look-aheads so that pairs may overlap: "Email Jane Doe" still yields "Jane Doe".
    _CAPITALISED = re.compile(rf"\b(?=(?P<first>[A-Z][a-z]+)\s+(?P<last>{_SURNAME})\b)")
    _LOWER = re.compile(r"\b(?=(?P<first>[a-z]+)\s+(?P<last>[a-z][a-z'’-]{1,})\b)")

    def __init__(self) -> None:
        self._label = "GivenNameRecognizer"
        super().__init__(supported_entities=["PERSON"], name=self._label, supported_language="en")

    def load(self) -> None:
        """The name list loads lazily, once per process."""

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        """Capitalised pairs score 0.7; lower-case pairs, more often ordinary words, 0.6."""
        names = first_names()
        results = []
        for pattern, score in ((self._CAPITALISED, 0.7), (self._LOWER, 0.6)):
            for match in pattern.finditer(text):
                first, last = match.group("first").lower(), match.group("last").lower()
                if first not in names or last in _LOWER_STOP:
                    continue
                results.append(
                    RecognizerResult(
                        "PERSON",
                        match.start("first"),
                        match.end("last"),
                        score,
                        recognition_metadata={"recognizer_name": self._label},
                    )
                )
        return results


def builtin_recognizers() -> list[Any]:
    """Recognizers every policy can name in addition to Presidio's own."""
    return [
        PatternRecognizer(
            supported_entity="STREET_ADDRESS",
            name="StreetAddressRecognizer",
            patterns=[Pattern("street", STREET_ADDRESS, 0.75), Pattern("po box", PO_BOX, 0.75)],
            context=["address", "lives", "resides", "street", "home", "mail", "ship"],
            global_regex_flags=_CASE_SENSITIVE,
        ),
        GroupRecognizer(
            entity="POSTAL_CODE",
            name="UsZipAfterStateRecognizer",
            regex=US_ZIP_AFTER_STATE,
            score=0.85,
        ),
        PatternRecognizer(
            supported_entity="POSTAL_CODE",
            name="PostalCodeRecognizer",
            patterns=[Pattern("uk postcode", UK_POSTCODE, 0.7), Pattern("us zip", US_ZIP, 0.1)],
            context=["zip", "zipcode", "postcode", "postal", "post code"],
            global_regex_flags=_CASE_SENSITIVE,
        ),
        GroupRecognizer(
            entity="PERSON", name="TitledNameRecognizer", regex=TITLED_NAME, score=0.75
        ),
        GivenNameRecognizer(),
    ]


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum (payment cards and many account numbers)."""
    numbers = [int(c) for c in digits if c in "0123456789"]
    if len(numbers) < 2:
        return False
    total = 0
    for index, value in enumerate(reversed(numbers)):
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def mod97_valid(value: str) -> bool:
    """ISO 7064 mod-97 (IBAN): move the first four characters to the end, letters to numbers."""
    compact = re.sub(r"[\s-]", "", value).upper()
    if len(compact) < 5 or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    digits = "".join(str(int(c, 36)) for c in rearranged)
    return int(digits) % 97 == 1


_VALIDATORS = {"luhn": luhn_valid, "mod97": mod97_valid}


class PolicyPatternRecognizer(PatternRecognizer):
    """A policy-defined recognizer; a checksum, when set, must hold for a match to count."""

    def __init__(self, spec: CustomRecognizer, index: int) -> None:
        self._validator = _VALIDATORS[spec.validator] if spec.validator else None
        super().__init__(
            supported_entity=spec.entity,
            name=f"policy:{spec.entity}:{index}",
            patterns=[Pattern(p.name, p.regex, p.score) for p in spec.patterns],
            deny_list=list(spec.deny_list),
            context=list(spec.context),
        )

    def validate_result(self, pattern_text: str) -> bool | None:
        """True/False when a checksum is configured, None (no opinion) otherwise."""
        if self._validator is None:
            return None
        return self._validator(pattern_text)


def policy_recognizers(specs: list[CustomRecognizer]) -> list[Any]:
    """Presidio recognizers for a policy's own `recognizers` entries."""
    return [PolicyPatternRecognizer(spec, index) for index, spec in enumerate(specs)]
