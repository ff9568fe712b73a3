"""transform() and the actions: typed placeholders, mask, keyed hash, pseudonyms, allow, block,
thresholds and directions. Pure: hand-made findings (the detector has its own tests)."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest

from appliance.pii.actions import (
    PLACEHOLDER,
    ActionContext,
    PlaceholderBook,
    Transformed,
    keyed_hash,
    mask,
    transform,
)
from appliance.pii.detector import Finding
from appliance.policies.schema import Action, Direction, EntityRule, Policy

KEY = b"k" * 32


def policy(*rules: EntityRule, min_score: float = 0.5) -> Policy:
    return Policy(name="test", min_score=min_score, entities=list(rules))


def rule(
    entity: str,
    action: Action = "redact",
    min_score: float | None = None,
    applies_to: Direction = "both",
) -> EntityRule:
    return EntityRule(entity=entity, action=action, min_score=min_score, applies_to=applies_to)


def ctx(book: PlaceholderBook | None = None, pseudonyms: object = None) -> ActionContext:
    return ActionContext(book=book or PlaceholderBook(), hash_key=KEY, pseudonyms=pseudonyms)  # type: ignore[arg-type]


def find(text: str, entity: str, value: str, score: float = 0.9, occurrence: int = 0) -> Finding:
    """A finding for the `occurrence`-th appearance of `value` in `text`."""
    start = -1
    for _ in range(occurrence + 1):
        start = text.index(value, start + 1)
    return Finding(entity, start, start + len(value), score)


REDACT_ALL = policy(rule("PERSON"), rule("EMAIL_ADDRESS"), rule("PHONE_NUMBER"))


# --- redact ------------------------------------------------------------------------------------


def test_redacts_to_typed_placeholders() -> None:
    text = "Mail John Smith at john@example.org."
    findings = [find(text, "PERSON", "John Smith"), find(text, "EMAIL_ADDRESS", "john@example.org")]
    result = transform(text, findings, REDACT_ALL, ctx())
    assert result.text == "Mail <PERSON_1> at <EMAIL_ADDRESS_1>."
    assert [a.action for a in result.applied] == ["redact", "redact"]
    assert [a.finding for a in result.applied] == findings
    assert result.blocked == []
    assert all(PLACEHOLDER.fullmatch(p) for p in re.findall(r"<[^>]+>", result.text))


def test_same_value_gets_the_same_placeholder() -> None:
    text = "John Smith met Ann Lee; later John Smith left."
    findings = [
        find(text, "PERSON", "John Smith"),
        find(text, "PERSON", "Ann Lee"),
        find(text, "PERSON", "John Smith", occurrence=1),
    ]
    result = transform(text, findings, REDACT_ALL, ctx())
    assert result.text == "<PERSON_1> met <PERSON_2>; later <PERSON_1> left."


def test_different_values_get_numbered_placeholders_per_type() -> None:
    text = "Ann, Bob, ann@example.org, bob@example.org"
    findings = [
        find(text, "PERSON", "Ann"),
        find(text, "PERSON", "Bob"),
        find(text, "EMAIL_ADDRESS", "ann@example.org"),
        find(text, "EMAIL_ADDRESS", "bob@example.org"),
    ]
    result = transform(text, findings, REDACT_ALL, ctx())
    assert result.text == "<PERSON_1>, <PERSON_2>, <EMAIL_ADDRESS_1>, <EMAIL_ADDRESS_2>"


def test_book_is_shared_across_calls_and_ignores_case_and_spacing() -> None:
    book = PlaceholderBook()
    first_text = "I am John Smith, reach me at John@Example.org."
    first = transform(
        first_text,
        [
            find(first_text, "PERSON", "John Smith"),
            find(first_text, "EMAIL_ADDRESS", "John@Example.org"),
        ],
        REDACT_ALL,
        ctx(book),
    )
    second_text = "Tell JOHN  SMITH and Mary Jones; cc john@example.org"
    second = transform(
        second_text,
        [
            find(second_text, "PERSON", "JOHN  SMITH"),
            find(second_text, "PERSON", "Mary Jones"),
            find(second_text, "EMAIL_ADDRESS", "john@example.org"),
        ],
        REDACT_ALL,
        ctx(book),
    )
    assert first.text == "I am <PERSON_1>, reach me at <EMAIL_ADDRESS_1>."
    assert second.text == "Tell <PERSON_1> and <PERSON_2>; cc <EMAIL_ADDRESS_1>"


def test_separate_books_start_again_at_one() -> None:
    text = "Mary Jones"
    findings = [find(text, "PERSON", "Mary Jones")]
    book = PlaceholderBook()
    book.placeholder("PERSON", "Someone Else")
    assert transform(text, findings, REDACT_ALL, ctx(book)).text == "<PERSON_2>"
    assert transform(text, findings, REDACT_ALL, ctx()).text == "<PERSON_1>"


def test_same_value_of_different_types_gets_separate_placeholders() -> None:
    book = PlaceholderBook()
    assert book.placeholder("PERSON", "Jordan") == "<PERSON_1>"
    assert book.placeholder("LOCATION", "Jordan") == "<LOCATION_1>"
    assert book.placeholder("PERSON", "  jordan ") == "<PERSON_1>"


def test_reserve_skips_numbers_taken_elsewhere() -> None:
    book = PlaceholderBook()
    book.reserve("PERSON", 3)
    assert book.placeholder("PERSON", "Ann") == "<PERSON_4>"
    book.reserve("PERSON", 2)  # never goes back
    assert book.placeholder("PERSON", "Bob") == "<PERSON_5>"


# --- thresholds and rules ------------------------------------------------------------------------


@pytest.mark.parametrize(("score", "redacted"), [(0.49, False), (0.5, True), (0.95, True)])
def test_policy_threshold(score: float, redacted: bool) -> None:
    text = "Call 212-555-0199 now."
    findings = [find(text, "PHONE_NUMBER", "212-555-0199", score=score)]
    result = transform(text, findings, REDACT_ALL, ctx())
    assert result.text == ("Call <PHONE_NUMBER_1> now." if redacted else text)
    assert len(result.applied) == (1 if redacted else 0)


@pytest.mark.parametrize(("score", "redacted"), [(0.5, False), (0.79, False), (0.8, True)])
def test_rule_min_score_overrides_the_policy_threshold(score: float, redacted: bool) -> None:
    strict_person = policy(rule("PERSON", min_score=0.8), rule("EMAIL_ADDRESS"), min_score=0.3)
    text = "Ask Jordan."
    result = transform(text, [find(text, "PERSON", "Jordan", score=score)], strict_person, ctx())
    assert result.text == ("Ask <PERSON_1>." if redacted else text)


def test_rule_min_score_can_be_lower_than_the_policy_threshold() -> None:
    lenient_phone = policy(rule("PHONE_NUMBER", min_score=0.3), min_score=0.9)
    text = "Call 212-555-0199 now."
    findings = [find(text, "PHONE_NUMBER", "212-555-0199", score=0.4)]
    assert transform(text, findings, lenient_phone, ctx()).text == "Call <PHONE_NUMBER_1> now."


def test_entity_without_a_rule_is_left_alone() -> None:
    text = "John Smith, IP 10.0.0.1"
    findings = [find(text, "PERSON", "John Smith"), find(text, "IP_ADDRESS", "10.0.0.1", 1.0)]
    result = transform(text, findings, REDACT_ALL, ctx())
    assert result.text == "<PERSON_1>, IP 10.0.0.1"
    assert [a.finding.entity for a in result.applied] == ["PERSON"]


@pytest.mark.parametrize(
    ("applies_to", "input_text", "output_text"),
    [
        ("both", "<PERSON_1> wrote", "<PERSON_1> wrote"),
        ("input", "<PERSON_1> wrote", "Ann Lee wrote"),
        ("output", "Ann Lee wrote", "<PERSON_1> wrote"),
    ],
)
def test_applies_to_selects_the_direction(
    applies_to: Direction, input_text: str, output_text: str
) -> None:
    only = policy(rule("PERSON", applies_to=applies_to))
    text = "Ann Lee wrote"
    findings = [find(text, "PERSON", "Ann Lee")]
    assert transform(text, findings, only, ctx(), direction="input").text == input_text
    assert transform(text, findings, only, ctx(), direction="output").text == output_text


def test_different_actions_per_direction() -> None:
    split = policy(
        rule("PERSON", "redact", applies_to="input"), rule("PERSON", "mask", applies_to="output")
    )
    text = "Ann Lee wrote"
    findings = [find(text, "PERSON", "Ann Lee")]
    assert transform(text, findings, split, ctx(), direction="input").text == "<PERSON_1> wrote"
    assert transform(text, findings, split, ctx(), direction="output").text == "A** L** wrote"


def test_thresholds_are_per_direction() -> None:
    split = policy(
        rule("PERSON", "redact", min_score=0.9, applies_to="input"),
        rule("PERSON", "mask", applies_to="output"),
        min_score=0.5,
    )
    assert split.threshold("PERSON", "input") == 0.9
    assert split.threshold("PERSON", "output") == 0.5
    text = "Ann Lee wrote"
    findings = [find(text, "PERSON", "Ann Lee", score=0.7)]
    assert transform(text, findings, split, ctx(), direction="input").text == text
    assert transform(text, findings, split, ctx(), direction="output").text == "A** L** wrote"


# --- allow and block -----------------------------------------------------------------------------


def test_allow_leaves_the_text_but_records_the_finding() -> None:
    allow_email = policy(rule("PERSON"), rule("EMAIL_ADDRESS", "allow"))
    text = "John Smith <john@example.org>"
    findings = [find(text, "PERSON", "John Smith"), find(text, "EMAIL_ADDRESS", "john@example.org")]
    result = transform(text, findings, allow_email, ctx())
    assert result.text == "<PERSON_1> <john@example.org>"
    assert [(a.finding.entity, a.action) for a in result.applied] == [
        ("PERSON", "redact"),
        ("EMAIL_ADDRESS", "allow"),
    ]
    assert result.blocked == []


def test_block_is_reported() -> None:
    block_ssn = policy(rule("PERSON"), rule("US_SSN", "block"))
    text = "John Smith, SSN 219-09-9999."
    ssn = find(text, "US_SSN", "219-09-9999", score=0.85)
    result = transform(text, [find(text, "PERSON", "John Smith"), ssn], block_ssn, ctx())
    assert isinstance(result, Transformed)
    assert [b.finding for b in result.blocked] == [ssn]
    assert [b.action for b in result.blocked] == ["block"]
    # The blocked value is not replaced: the caller refuses the request instead of sending it.
    assert "219-09-9999" in result.text


def test_block_below_threshold_does_not_fire() -> None:
    block_ssn = policy(rule("US_SSN", "block"), min_score=0.6)
    text = "Number 219-09-9999."
    result = transform(text, [find(text, "US_SSN", "219-09-9999", score=0.5)], block_ssn, ctx())
    assert result.blocked == []
    assert result.text == text


# --- mask ----------------------------------------------------------------------------------------

MASKS = [
    ("US_SSN", "219-09-9999", "***-**-9999"),
    ("CREDIT_CARD", "4111 1111 1111 1111", "**** **** **** 1111"),
    ("PHONE_NUMBER", "(212) 555-0199", "(***) ***-0199"),
    ("EMAIL_ADDRESS", "jane.doe@example.com", "j*******@example.com"),
    ("PERSON", "Jane Smith", "J*** S****"),
    ("PERSON", "José Müller-Lüdenscheidt", "J*** M*****-L***********"),
    # Short values keep nothing: four visible characters of seven would say too much.
    ("US_PASSPORT", "1234567", "*******"),
    ("IP_ADDRESS", "10.0.0.1", "**.*.*.*"),
]


@pytest.mark.parametrize(("entity", "value", "masked"), MASKS)
def test_mask_keeps_the_shape(entity: str, value: str, masked: str) -> None:
    assert mask(entity, value) == masked
    assert len(mask(entity, value)) == len(value)


def test_mask_of_a_one_letter_mailbox_still_shows_a_star() -> None:
    # The star is added so the result never looks unmasked (the letter itself stays visible).
    assert mask("EMAIL_ADDRESS", "j@example.com") == "j*@example.com"


def test_mask_action_in_transform() -> None:
    mask_ssn = policy(rule("US_SSN", "mask"))
    text = "SSN 219-09-9999 on file"
    result = transform(text, [find(text, "US_SSN", "219-09-9999")], mask_ssn, ctx())
    assert result.text == "SSN ***-**-9999 on file"
    assert [a.action for a in result.applied] == ["mask"]


# --- hash ----------------------------------------------------------------------------------------


def test_keyed_hash_is_hmac_sha256_under_the_install_key() -> None:
    token = keyed_hash("EMAIL_ADDRESS", "Jane@Example.org", KEY)
    expected = hmac.new(KEY, b"EMAIL_ADDRESS\x1fjane@example.org", hashlib.sha256).hexdigest()
    assert token == f"<EMAIL_ADDRESS#{expected[:16]}>"
    # Not the unsalted hash a lookup table of likely values would reverse.
    assert hashlib.sha256(b"Jane@Example.org").hexdigest()[:16] not in token


def test_keyed_hash_is_stable_per_key_and_differs_across_keys_and_types() -> None:
    a = keyed_hash("PERSON", "Jane Doe", KEY)
    assert keyed_hash("PERSON", " jane  doe ", KEY) == a
    assert keyed_hash("PERSON", "Jane Doe", b"x" * 32) != a
    assert keyed_hash("LOCATION", "Jane Doe", KEY) != a
    assert keyed_hash("PERSON", "John Doe", KEY) != a


def test_hash_action_in_transform() -> None:
    hash_email = policy(rule("EMAIL_ADDRESS", "hash"))
    text = "from jane@example.org to jane@example.org"
    findings = [
        find(text, "EMAIL_ADDRESS", "jane@example.org"),
        find(text, "EMAIL_ADDRESS", "jane@example.org", occurrence=1),
    ]
    result = transform(text, findings, hash_email, ctx())
    token = keyed_hash("EMAIL_ADDRESS", "jane@example.org", KEY)
    assert result.text == f"from {token} to {token}"
    assert "jane" not in result.text


# --- pseudonymize --------------------------------------------------------------------------------


def test_pseudonymize_uses_the_scope_not_the_request_book() -> None:
    pseudo = policy(rule("PERSON", "pseudonymize"), rule("EMAIL_ADDRESS"))
    scope = PlaceholderBook()  # any object with placeholder(entity, value); the vault is one
    scope.reserve("PERSON", 6)
    text = "Ann Lee <ann@example.org>, Ann Lee"
    findings = [
        find(text, "PERSON", "Ann Lee"),
        find(text, "EMAIL_ADDRESS", "ann@example.org"),
        find(text, "PERSON", "Ann Lee", occurrence=1),
    ]
    result = transform(text, findings, pseudo, ctx(pseudonyms=scope))
    assert result.text == "<PERSON_7> <<EMAIL_ADDRESS_1>>, <PERSON_7>"
    assert [a.action for a in result.applied] == ["pseudonymize", "redact", "pseudonymize"]


def test_pseudonymize_without_a_scope_fails_rather_than_leaking() -> None:
    pseudo = policy(rule("PERSON", "pseudonymize"))
    text = "Ann Lee"
    with pytest.raises(RuntimeError, match="pseudonym scope"):
        transform(text, [find(text, "PERSON", "Ann Lee")], pseudo, ctx())


# --- edges ---------------------------------------------------------------------------------------


def test_no_findings_returns_the_text_unchanged() -> None:
    text = "Nothing to see here."
    result = transform(text, [], REDACT_ALL, ctx())
    assert result.text == text
    assert result.applied == []


def test_findings_at_the_edges_and_adjacent() -> None:
    text = "Ann@x.org"
    findings = [Finding("PERSON", 0, 3, 0.9), Finding("EMAIL_ADDRESS", 3, 9, 0.9)]
    assert transform(text, findings, REDACT_ALL, ctx()).text == "<PERSON_1><EMAIL_ADDRESS_1>"


def test_non_ascii_text_keeps_its_characters() -> None:
    text = "📧 José Müller → josé@example.org ✓"
    findings = [
        find(text, "PERSON", "José Müller"),
        find(text, "EMAIL_ADDRESS", "josé@example.org"),
    ]
    result = transform(text, findings, REDACT_ALL, ctx())
    assert result.text == "📧 <PERSON_1> → <EMAIL_ADDRESS_1> ✓"
