"""The independent evaluation set (`tests/bench/pii_independent.py`): seeded, labelled at the
right offsets, written forms that read back as the planted value, every variant family present."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.bench.pii_eval import Document, leaked, readable
from tests.bench.pii_independent import TYPES, IndependentGenerator


@pytest.fixture(scope="module")
def documents() -> list[Document]:
    return IndependentGenerator(seed=11).documents(per_domain=30)


def test_generator_is_seeded() -> None:
    first = IndependentGenerator(seed=3).documents(per_domain=2)
    again = IndependentGenerator(seed=3).documents(per_domain=2)
    other = IndependentGenerator(seed=4).documents(per_domain=2)
    assert [d.text for d in first] == [d.text for d in again]
    assert [d.text for d in first] != [d.text for d in other]


def test_written_forms_read_back_as_the_planted_value(documents: list[Document]) -> None:
    for doc in documents:
        for p in doc.planted:
            written = doc.text[p.start : p.end]
            assert p.entity in TYPES
            if p.obfuscation in ("none", "military"):
                assert written == p.value
                continue
            # What a reader sees is the value: digits, dashes, separators and letters folded.
            squash = "".join(c for c in readable(written) if c.isalnum()).casefold()
            assert squash == "".join(c for c in p.value if c.isalnum()).casefold(), written
            # And the leak check sees it too, when the text is left as it is.
            assert leaked(p, doc.text), written


def test_every_variant_family_and_type_is_present(documents: list[Document]) -> None:
    kinds = Counter(p.obfuscation for d in documents for p in d.planted)
    for kind in (
        "unicode_dash", "comma_separator", "underscore_separator", "arabic_indic_digits",
        "devanagari_digits", "combining_accents", "zero_width", "lookalike_letters",
        "lowercase", "military",
    ):  # fmt: skip
        assert kinds[kind] > 0, kind
    types = {p.entity for d in documents for p in d.planted}
    assert types == set(TYPES)
