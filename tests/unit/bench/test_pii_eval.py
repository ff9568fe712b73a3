"""The PII benchmark's generator and metrics (the engine itself is not run here)."""

from __future__ import annotations

import random
import re
from collections.abc import Callable

import pytest

from tests.bench.pii_eval import (
    OBFUSCATIONS,
    Generator,
    Planted,
    Span,
    Tally,
    f_beta,
    iban_ok,
    leak_rate,
    leaked,
    luhn_ok,
    make_card,
    make_iban,
    make_ssn,
    obfuscate,
    precision,
    readable,
    recall,
    score_document,
)


@pytest.fixture(scope="module")
def documents() -> list:
    return Generator(seed=7).documents(per_domain=8)


def test_generator_is_seeded() -> None:
    first = Generator(seed=3).documents(per_domain=2)
    second = Generator(seed=3).documents(per_domain=2)
    other = Generator(seed=4).documents(per_domain=2)
    assert [d.text for d in first] == [d.text for d in second]
    assert [d.text for d in first] != [d.text for d in other]


def test_planted_values_are_at_the_reported_offsets(documents: list) -> None:
    deterministic = ("none", "spaced_digits", "fullwidth", "lowercase")
    for doc in documents:
        for p in doc.planted:
            written = doc.text[p.start : p.end]
            if p.obfuscation in deterministic:
                assert written == obfuscate(p.value, p.obfuscation, random.Random(0))
            elif p.obfuscation == "line_break":
                # One separator (or the middle) became a line break; nothing else changed.
                assert "\n" in written
                assert re.sub(r"[\s.-]", "", written) == re.sub(r"[\s.-]", "", p.value)
            else:  # zero_width, homoglyph: undoing them gives the planted value back
                assert written != p.value
                assert readable(written) == p.value


def test_every_type_and_domain_id_is_planted(documents: list) -> None:
    entities = {p.entity for d in documents for p in d.planted}
    assert entities == set(OBFUSCATIONS)
    kinds = {p.obfuscation for d in documents for p in d.planted}
    assert kinds >= {"none", "spaced_digits", "zero_width", "fullwidth", "homoglyph",
                     "lowercase", "line_break"}  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "value", "check"),
    [
        ("spaced_digits", "212-555-0199", lambda w: w == "2 1 2-5 5 5-0 1 9 9"),
        ("fullwidth", "123", lambda w: w == "１２３"),
        ("lowercase", "Jane Doe", lambda w: w == "jane doe"),
        ("zero_width", "abcdef", lambda w: len(w) > 6 and readable(w) == "abcdef"),
        ("homoglyph", "aeo pc", lambda w: w != "aeo pc" and readable(w) == "aeo pc"),
        ("line_break", "4111 1111 1111 1111", lambda w: "\n" in w and w.count(" ") == 2),
    ],
)
def test_obfuscations_keep_a_mapping_to_the_value(
    kind: str, value: str, check: Callable[[str], bool]
) -> None:
    written = obfuscate(value, kind, random.Random(1))
    assert written != value
    assert check(written), written


def test_generated_values_are_valid() -> None:
    rng = random.Random(5)
    for _ in range(200):
        assert luhn_ok(make_card(rng))
        assert iban_ok(make_iban(rng))
        ssn = make_ssn(rng)
        area, group, serial = ssn.split("-")
        assert area not in ("000", "666") and not area.startswith("9")
        assert group != "00" and serial != "0000"
        assert ssn not in ("123-45-6789", "078-05-1120")


def test_metric_functions_on_hand_made_counts() -> None:
    t = Tally(tp=8, fn=2, fp=2, planted=10, leaks=1)
    assert recall(t) == 0.8
    assert precision(t) == 0.8
    assert f_beta(0.8, 0.8) == pytest.approx(0.8)
    assert f_beta(1.0, 0.5) == pytest.approx(5 * 0.5 / (4 + 0.5))
    assert leak_rate(t) == 0.1
    assert recall(Tally()) is None and precision(Tally()) is None


def test_score_document_counts_hits_misses_false_positives_and_leaks() -> None:
    text = "Call Jane Doe on 212-555-0199 or see Acme about SSN 165-39-7994."
    name = Planted("PERSON", 5, 13, "Jane Doe", "none")
    phone = Planted("PHONE_NUMBER", 17, 29, "212-555-0199", "none")
    ssn = Planted("US_SSN", 52, 63, "165-39-7994", "none")
    assert text[name.start : name.end] == "Jane Doe"
    assert text[ssn.start : ssn.end] == "165-39-7994"
    findings = [
        Span("PERSON", 5, 13),  # hit
        Span("PERSON", 37, 41),  # "Acme": false positive
        Span("US_BANK_NUMBER", 17, 29),  # wrong type on the phone: caught, not a hit
    ]
    transformed = "Call <PERSON_1> on <US_BANK_NUMBER_1> or see <PERSON_2> about SSN 165-39-7994."
    by_type, by_kind, misses, fps = score_document(
        [name, phone, ssn], findings, transformed, text, ["PERSON", "PHONE_NUMBER", "US_SSN"]
    )
    assert (by_type["PERSON"].tp, by_type["PERSON"].fp) == (1, 1)
    assert (by_type["PHONE_NUMBER"].fn, by_type["PHONE_NUMBER"].caught) == (1, 1)
    assert by_type["PHONE_NUMBER"].leaks == 0
    assert (by_type["US_SSN"].fn, by_type["US_SSN"].leaks) == (1, 1)
    assert by_kind["none"].planted == 3
    assert {m.entity for m in misses} == {"PHONE_NUMBER", "US_SSN"}
    assert fps == [("PERSON", "Acme")]


@pytest.mark.parametrize(
    ("planted", "transformed", "expected"),
    [
        (Planted("US_SSN", 0, 0, "165-39-7994", "spaced_digits"), "ssn 1 6 5 3 9 7 9 9 4.", True),
        (Planted("US_SSN", 0, 0, "165-39-7994", "none"), "ssn ***-**-7994 and <US_SSN_1>", False),
        (
            Planted("CREDIT_CARD", 0, 0, "4111 1111 1111 1111", "fullwidth"),
            "４１１１\n1111 1111-1111",
            True,
        ),
        (Planted("PERSON", 0, 0, "Jane Doe", "homoglyph"), "met JАNE  dоe today", True),
        (Planted("PERSON", 0, 0, "Jane Doe", "none"), "met Jane <PERSON_1> today", False),
        (
            Planted("EMAIL_ADDRESS", 0, 0, "jd@example.com", "zero_width"),
            "to j\u200bd@exam\u200bple.com",
            True,
        ),
        (
            Planted("IBAN_CODE", 0, 0, "DE89 3704 0044 0532 0130 00", "none"),
            "DE89370400440532013000",
            True,
        ),
        (Planted("PHONE_NUMBER", 0, 0, "+1 212 555 0199", "none"), "(212) 555-0199", True),
        (Planted("PHONE_NUMBER", 0, 0, "212-555-0199", "none"), "***-***-0199", False),
    ],
)
def test_leak_check_normalises_both_sides(
    planted: Planted, transformed: str, expected: bool
) -> None:
    assert leaked(planted, transformed) is expected
