"""Presidio wiring. The only module (with its package) that imports Presidio or spaCy.

The NLP engine is configured explicitly from settings so that Presidio never tries to download a
spaCy model, and tldextract (used by the e-mail recognizer) is told to use its bundled suffix list
instead of fetching one: nothing here touches the network.

Detection runs on normalised views of the text (`normalize.py`) and maps findings back to the
original; long texts are analysed in overlapping chunks, because Presidio's context enhancement
rescans the whole document per finding and slows down more than linearly.
"""

from __future__ import annotations

import os

# Must be set before tldextract is imported: it builds its extractor at import time.
os.environ["TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS"] = ""

import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from appliance.errors import DetectorUnavailable
from appliance.pii.normalize import DASHES, INVISIBLE, View, views
from appliance.pii.recognizers import (
    TAGGED_ENTITIES,
    TAGGER_HOOK,
    DigitGatedPhoneRecognizer,
    builtin_recognizers,
    policy_recognizers,
)
from appliance.policies.schema import Policy

log = logging.getLogger(__name__)

# spaCy labels that are never personal data; left in, Presidio warns on every request.
_IGNORED_NER_LABELS = frozenset(
    {
        "CARDINAL",
        "ORDINAL",
        "QUANTITY",
        "PERCENT",
        "MONEY",
        "WORK_OF_ART",
        "LANGUAGE",
        "LAW",
        "EVENT",
        "PRODUCT",
        "FAC",
    }
)
# Entities whose values are digit runs: these are also looked for in the compact view, where
# separators inside digit runs are removed ("4 1 1 1 ...", "212-555-\n0199").
DIGIT_ENTITIES = frozenset(
    {
        "PHONE_NUMBER",
        "US_SSN",
        "CREDIT_CARD",
        "US_BANK_NUMBER",
        "US_ITIN",
        "UK_NHS",
        "US_PASSPORT",
        "US_DRIVER_LICENSE",
        "MEDICAL_LICENSE",
        "IBAN_CODE",
    }
)
# Presidio recognizers replaced by the shape-first ones in `identifiers.py`: each of these
# discards shaped values (a "known invalid" SSN, an unlisted card prefix, a lower-case IBAN)
# or scores them below any threshold even with context. README "PII policies" says which
# recognizer owns each type.
_REPLACED_PRESIDIO_RECOGNIZERS = (
    "UsSsnRecognizer",
    "CreditCardRecognizer",
    "IbanRecognizer",
    "UsLicenseRecognizer",
    "UsPassportRecognizer",
    "IpRecognizer",
)
# An allowed finding (action `allow`) yields to any overlapping finding of a type the policy
# protects that scores at least this, even below that type's own threshold: "allow" on a coarse
# NER label must not release a person, an address or an identifier another signal saw.
_PROTECT_SIGNAL_FLOOR = 0.3
# How much of each side of a message boundary is re-read joined, for a value split in two.
_SEAM_CHARS = 64
DEFAULT_PHONE_REGIONS = ("US", "GB")
CHUNK_CHARS = 2000
CHUNK_OVERLAP = 200
# Presidio's context enhancement defaults (LemmaContextAwareEnhancer), applied to the compact view.
_CONTEXT_BOOST = 0.35
_CONTEXT_FLOOR = 0.4
_CONTEXT_CHARS = 60
_NHS_CONTEXT = re.compile(r"\b(nhs|national health|health service)\b", re.IGNORECASE)
_NOT_AN_ORGANISATION = re.compile(
    r"^(?:(?:mon|tues|wednes|thurs|fri|satur|sun)day|jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|"
    r"apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|"
    r"dec(?:ember)?|mr|mrs|ms|dr|prof|sir|dame|judge|justice)\b[\s\d,./-]*",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One detected identifier: Python string offsets into the analysed text."""

    entity: str
    start: int
    end: int
    score: float


@dataclass(frozen=True)
class DetectionSpec:
    """What one policy asks the detector for, with its own recognizers built once."""

    entities: tuple[str, ...]
    thresholds: dict[str, float]
    allow_list: frozenset[str] = frozenset()
    recognizers: tuple[Any, ...] = field(default=(), compare=False)
    # Entities the policy detects only to let through (action `allow`): they must never absorb
    # an overlapping finding the policy acts on.
    passthrough: frozenset[str] = frozenset()

    @classmethod
    def for_policy(cls, policy: Policy, direction: str = "input") -> DetectionSpec:
        """The spec for `policy` in `direction` (`input` or `output`)."""
        way: Literal["input", "output"] = "output" if direction == "output" else "input"
        names = policy.entity_names(way)
        return cls(
            entities=tuple(names),
            thresholds={name: policy.threshold(name, way) for name in names},
            allow_list=frozenset(v.strip().casefold() for v in policy.allow_list),
            recognizers=tuple(policy_recognizers(policy.recognizers)),
            passthrough=frozenset(
                name
                for name in names
                if (rule := policy.rule_for(name, way)) and rule.action == "allow"
            ),
        )

    @classmethod
    def everything(cls, min_score: float = 0.0) -> DetectionSpec:
        """Every supported entity above `min_score` (diagnostics and tests)."""
        return cls(entities=(), thresholds={"*": min_score})

    def threshold(self, entity: str) -> float:
        return self.thresholds.get(entity, self.thresholds.get("*", 0.0))


class PiiDetector:
    """A loaded Presidio analyzer with the appliance's recognizers. Thread-safe."""

    def __init__(
        self,
        spacy_model: str,
        *,
        language: str = "en",
        phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS,
    ) -> None:
        # Deferred: spaCy and Presidio load in the detector's own thread or process.
        import spacy.util
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import NlpEngineProvider
        from presidio_analyzer.predefined_recognizers import SpacyRecognizer

        if not spacy.util.is_package(spacy_model) and not os.path.isdir(spacy_model):
            raise DetectorUnavailable(
                f"spaCy model '{spacy_model}' is not installed (setting spacy_model); "
                "install its package, the appliance never downloads one"
            )
        provider = NlpEngineProvider(
            nlp_configuration={
                "nlp_engine_name": "spacy",
                "models": [{"lang_code": language, "model_name": spacy_model}],
                "ner_model_configuration": {"labels_to_ignore": sorted(_IGNORED_NER_LABELS)},
            }
        )
        self.spacy_model = spacy_model
        self.language = language
        presidio_log = logging.getLogger("presidio-analyzer")
        level = presidio_log.level
        # Loading warns once per recognizer of every other language; only English is configured.
        presidio_log.setLevel(logging.ERROR)
        nlp_engine: Any = provider.create_engine()  # a SpacyNlpEngine, as configured above
        try:
            self._engine: Any = AnalyzerEngine(
                nlp_engine=nlp_engine, supported_languages=[language]
            )
        finally:
            presidio_log.setLevel(level)
        # The pipeline runs only the stages a request's entities need (`_skipped_pipes`): no
        # dependency parse, attribute ruler or lemmatizer ever (context words are compared with
        # lower-cased tokens, `_artifacts`), the tagger only for the name recognizers that read
        # part-of-speech tags, NER only when the policy asks for an entity spaCy labels.
        self._nlp_engine = nlp_engine
        self._nlp: Any = nlp_engine.nlp[language]
        if "parser" in self._nlp.pipe_names:
            self._nlp.disable_pipe("parser")
        self._listening = _listening_pipes(self._nlp)
        self._tag_pipes = [
            name
            for name in self._nlp.pipe_names
            if name == "tagger" or name in self._listening.get("tagger", set())
        ]
        self._tag_reach = _embedding_reach(self._nlp, self._listening.get("tagger", set()))
        # libphonenumber tries every region per candidate: restrict them to the site's own.
        self._engine.registry.remove_recognizer("PhoneRecognizer")
        self._engine.registry.add_recognizer(
            DigitGatedPhoneRecognizer(supported_regions=phone_regions, supported_language=language)
        )
        for name in _REPLACED_PRESIDIO_RECOGNIZERS:
            self._engine.registry.remove_recognizer(name)
        for recognizer in builtin_recognizers():
            self._engine.registry.add_recognizer(recognizer)
        self.supported_entities: frozenset[str] = frozenset(
            self._engine.get_supported_entities(language=language)
        )
        # The entities this pipeline's NER can produce (the configured mapping also names labels
        # of other models, such as PHONE, which the English pipelines do not have).
        mapping = nlp_engine.ner_model_configuration.model_to_presidio_entity_mapping
        labels = self._nlp.get_pipe("ner").labels if "ner" in self._nlp.pipe_names else ()
        self._ner_entities = frozenset(
            mapping[label]
            for label in labels
            if label in mapping and label not in _IGNORED_NER_LABELS
        )
        # Pattern recognizers that also run on the compact view (no NLP needed there).
        self._digit_recognizers = [
            r
            for r in self._engine.registry.get_recognizers(language=language, all_fields=True)
            if set(r.supported_entities) & DIGIT_ENTITIES and not isinstance(r, SpacyRecognizer)
        ]

    def warm(self) -> None:
        """Run one analysis so the first real request does not pay for lazy initialisation."""
        self.analyze(
            "Contact Jane Doe at jane@example.org or 212-555-0100, 1 Main Street.",
            DetectionSpec.everything(),
        )

    def analyze(self, text: str, spec: DetectionSpec) -> list[Finding]:
        """Findings in `text` (offsets into `text`) that clear the spec's thresholds."""
        wanted = wanted_entities(spec, self.supported_entities)
        if spec.entities and not wanted:
            return []
        entities = wanted or None
        clean, compact = views(text)
        skipped = self._skipped_pipes(entities)
        raw: list[Finding] = []
        for offset, chunk in _chunks(clean.text):
            results = self._engine.analyze(
                text=chunk,
                language=self.language,
                entities=entities,
                ad_hoc_recognizers=list(spec.recognizers) or None,
                nlp_artifacts=self._artifacts(chunk, skipped),
            )
            raw += _mapped(
                clean, [(r.entity_type, r.start + offset, r.end + offset, r.score) for r in results]
            )
        if compact is not None:
            raw += _mapped(compact, self._digit_pass(compact.text, entities, spec))
        # Names have no digits: a PERSON over "8:24-cv-15332" or an IPv6 address is spaCy's
        # misreading (the identifier's own recognizer covers it where the policy asks).
        raw = [
            f
            for f in (_whole_name(_trim_person(f, text), text) for f in raw)
            if not (f.entity == "PERSON" and any(c.isdigit() for c in text[f.start : f.end]))
        ]
        # A value on the allow-list is not an identifier, and neither is any part of it (the
        # domain inside an allowed e-mail address is not a URL to protect).
        allowed = [f for f in raw if text[f.start : f.end].strip().casefold() in spec.allow_list]
        kept = [
            f
            for f in raw
            if f.score >= spec.threshold(f.entity)
            and not any(a.start <= f.start and f.end <= a.end for a in allowed)
            and not _false_organisation(f, text)
        ]
        if spec.passthrough:
            kept = _protect_over_allow(kept, raw, spec, text)
        kept += _other_mentions(kept, clean, spec)
        return resolve_overlaps(kept, text)

    def _skipped_pipes(self, entities: list[str] | None) -> list[str]:
        """Pipeline stages the wanted entities do not need (the tokenizer always runs: context
        words and custom recognizers read tokens)."""
        wanted = set(entities) if entities is not None else None
        needed: set[str] = set()
        if wanted is None or wanted & (self._ner_entities | TAGGED_ENTITIES):
            needed.add("ner")
        if self._tag_reach is None and (wanted is None or wanted & TAGGED_ENTITIES):
            needed.add("tagger")  # no window gives the same tags: tag the whole text
        for pipe in list(needed):
            needed |= self._listening.get(pipe, set())
        return [name for name in self._nlp.pipe_names if name not in needed]

    def _artifacts(self, text: str, skipped: list[str]) -> Any:
        """Presidio's NLP artifacts from the stages that run, with lower-cased tokens in place of
        lemmas: Presidio compares context words with lemmas by substring, so "phones" still
        supports "phone", and the lemmatizer (with the attribute ruler it needs) is not run."""
        # Deferred like the rest of Presidio (see __init__).
        from presidio_analyzer.nlp_engine import NlpArtifacts

        doc = self._nlp(text, disable=skipped)
        if "tagger" in skipped and self._tag_reach is not None:
            doc.user_data[TAGGER_HOOK] = self._tag_tokens
        # Presidio's own conversion (labels mapped and filtered as configured), then rebuilt
        # with the lower-cased tokens so that the context keywords derive from them.
        spacy_made = self._nlp_engine._doc_to_nlp_artifact(doc, self.language)
        return NlpArtifacts(
            entities=spacy_made.entities,
            tokens=doc,
            tokens_indices=spacy_made.tokens_indices,
            lemmas=[token.lower_ for token in doc],
            nlp_engine=self._nlp_engine,
            language=self.language,
            scores=spacy_made.scores,
        )

    def _tag_tokens(self, doc: Any, ranges: list[tuple[int, int]]) -> None:
        """Tag the tokens of each (`start`, `end`) range, in one batch of windows that reach
        `_tag_reach` tokens further on each side. A token's tag depends only on the tokens
        within the embedding's reach, so a window yields the tags a whole-document pass would,
        for a fraction of the tokens."""
        wanted = sorted((s, e) for s, e in ranges if not all(doc[i].tag_ for i in range(s, e)))
        reach = self._tag_reach or 0
        windows: list[list[int]] = []  # [low, high, first, last]: wanted tokens inside
        for first, last in wanted:
            low, high = max(0, first - reach), min(len(doc), last + reach)
            if windows and low <= windows[-1][1]:
                previous = windows[-1]
                previous[1], previous[3] = max(previous[1], high), max(previous[3], last)
            else:
                windows.append([low, high, first, last])
        if not windows:
            return
        docs = [doc[low:high].as_doc() for low, high, _, _ in windows]
        for name in self._tag_pipes:
            docs = list(self._nlp.get_pipe(name).pipe(docs))
        for (low, _, first, last), window in zip(windows, docs, strict=True):
            for i in range(first, last):
                if not doc[i].tag_:
                    doc[i].tag_ = window[i - low].tag_

    def analyze_many(self, texts: list[str], spec: DetectionSpec) -> list[list[Finding]]:
        """Findings per text for the messages of one conversation, in order.

        Each text is analysed on its own, and each boundary between two consecutive texts is
        read once more joined (the end of one and the start of the next), so that a value split
        across two messages ("SSN 078-05" then "-1120") is found in both halves.
        """
        results = [self.analyze(text, spec) for text in texts]
        for index in range(len(texts) - 1):
            left, right = texts[index], texts[index + 1]
            head = left[-_SEAM_CHARS:]
            tail = right[:_SEAM_CHARS]
            if not head.strip() or not tail.strip():
                continue
            seam = f"{head}\n{tail}"
            cut = len(head)
            offset = len(left) - len(head)
            for finding in self.analyze(seam, spec):
                if not (finding.start < cut < finding.end):
                    continue  # wholly on one side: already found there
                results[index].append(
                    Finding(finding.entity, offset + finding.start, len(left), finding.score)
                )
                results[index + 1].append(
                    Finding(finding.entity, 0, finding.end - cut - 1, finding.score)
                )
        return [
            resolve_overlaps([f for f in found if f.end > f.start], text)
            for found, text in zip(results, texts, strict=True)
        ]

    def _digit_pass(
        self, text: str, entities: list[str] | None, spec: DetectionSpec
    ) -> list[tuple[str, int, int, float]]:
        wanted = set(entities) if entities else set(self.supported_entities)
        found: list[tuple[str, int, int, float]] = []
        recognizers = self._digit_recognizers + [
            r for r in spec.recognizers if set(r.supported_entities) & wanted
        ]
        for recognizer in recognizers:
            targets = [e for e in recognizer.supported_entities if e in wanted]
            if not targets:
                continue
            context = [w.casefold() for w in getattr(recognizer, "context", None) or ()]
            for result in recognizer.analyze(text=text, entities=targets, nlp_artifacts=None):
                score = result.score
                # The compact view gets no NLP pass, so Presidio's context enhancement does not
                # run on it; without this, "SSN: 1 2 3 4 5 6 7 8 9" (a weak pattern once joined)
                # never clears a threshold that the same value written normally clears.
                window = text[max(0, result.start - _CONTEXT_CHARS) : result.start].casefold()
                if context and any(word in window for word in context):
                    score = min(1.0, max(score + _CONTEXT_BOOST, _CONTEXT_FLOOR))
                found.append((result.entity_type, result.start, result.end, score))
        return found


def _listening_pipes(nlp: Any) -> dict[str, set[str]]:
    """For each component, the shared embedding components it listens to (in the English
    pipelines the tagger listens to `tok2vec`; NER has its own embedding)."""
    listening: dict[str, set[str]] = {}
    for name in nlp.pipe_names:
        model = nlp.config["components"][name].get("model", {})
        tok2vec = model.get("tok2vec", {}) if isinstance(model, dict) else {}
        if "Listener" in str(tok2vec.get("@architectures", "")):
            listening[name] = {other for other in nlp.pipe_names if other.startswith("tok2vec")}
    return listening


def _embedding_reach(nlp: Any, embedders: set[str]) -> int | None:
    """How many tokens on each side the tagger's embedding reads (window size x depth of a
    window encoder), or None when it cannot be read from the configuration (then the tagger
    runs on whole texts)."""
    if "tagger" not in nlp.pipe_names or len(embedders) != 1:
        return None
    config = nlp.config.interpolate()["components"]
    encode = config[next(iter(embedders))].get("model", {}).get("encode", {})
    window, depth = encode.get("window_size"), encode.get("depth")
    if "Window" not in str(encode.get("@architectures", "")):
        return None
    if not isinstance(window, int) or not isinstance(depth, int):
        return None
    return window * depth


def _protect_over_allow(
    kept: list[Finding], raw: list[Finding], spec: DetectionSpec, text: str
) -> list[Finding]:
    """Allow never beats protect. spaCy calls "3905 Cedar Terrace", "Bradley Jones" or a
    passport number an ORGANIZATION or a LOCATION; where the policy allows those labels, that
    finding would win the overlap and the value behind it would pass unredacted. An allowed
    finding is dropped when a finding the policy acts on overlaps it; a weaker signal of a
    protected type (below its own threshold, not below the floor) is raised to that threshold
    and replaces it."""
    acted = [f for f in kept if f.entity not in spec.passthrough]
    signals = [
        f
        for f in raw
        if f.entity not in spec.passthrough
        and f.score >= _PROTECT_SIGNAL_FLOOR
        and text[f.start : f.end].strip().casefold() not in spec.allow_list
    ]
    result = list(acted)
    for finding in kept:
        if finding.entity not in spec.passthrough:
            continue
        if any(a.start < finding.end and finding.start < a.end for a in acted):
            continue
        overlapping = [s for s in signals if s.start < finding.end and finding.start < s.end]
        if not overlapping or finding.entity not in _COARSE_NER:
            # An `allow` on a precise type (an e-mail address) is the policy's own choice; only
            # coarse NER labels yield to a weaker protected signal.
            result.append(finding)
            continue
        for signal in overlapping:
            raised = Finding(
                signal.entity,
                signal.start,
                signal.end,
                max(signal.score, spec.threshold(signal.entity)),
            )
            if raised not in result:
                result.append(raised)
    return result


_MENTION_ENTITIES = frozenset({"PERSON"})
_MENTION_STOP = frozenset(
    {"the", "and", "for", "with", "from", "this", "that", "mr", "mrs", "ms", "dr", "miss",
     "sir", "dame", "prof", "judge", "justice"}
)  # fmt: skip


def _other_mentions(kept: list[Finding], clean: View, spec: DetectionSpec) -> list[Finding]:
    """Every other mention of a name found once in the text: the same name in lower case, in
    a sentence spaCy misreads, or its surname alone ("... Sørensen, though Sørensen ...").

    One confident finding makes the name known for the whole text; leaving its other mentions
    readable would undo the protection of the first.
    """
    names: dict[str, float] = {}
    for finding in kept:
        if finding.entity not in _MENTION_ENTITIES or finding.entity in spec.passthrough:
            continue
        if finding.score < spec.threshold(finding.entity):
            continue
        start, end = _clean_span(clean, finding.start, finding.end)
        words = clean.text[start:end].split()
        if not words or any(c.isdigit() for c in "".join(words)):
            continue
        full = " ".join(words).casefold()
        names[full] = max(names.get(full, 0.0), finding.score)
        for word in words:
            token = word.strip(".,'\u2019").casefold()
            if len(token) >= 3 and token not in _MENTION_STOP and word[:1].isupper():
                names.setdefault(token, spec.threshold(finding.entity))
    if not names:
        return []
    folded = clean.text.casefold()
    if len(folded) != len(clean.text):
        return []  # casefolding changed the length (ß, ...): offsets would not line up
    found = []
    for name, score in names.items():
        single = " " not in name
        pattern = r"(?<!\w)" + r"\s+".join(re.escape(w) for w in name.split()) + r"(?!\w)"
        for match in re.finditer(pattern, folded):
            if single and not clean.text[match.start()].isupper():
                continue  # a surname alone counts only where it is written as a name
            start, end = clean.span_to_original(match.start(), match.end())
            found.append(Finding("PERSON", start, end, score))
    return found


def _clean_span(clean: View, start: int, end: int) -> tuple[int, int]:
    """The clean-view span of an original-text span (the inverse of `span_to_original`)."""
    indices = [i for i, s in enumerate(clean.source) if start <= s < end]
    return (indices[0], indices[-1] + 1) if indices else (0, 0)


def wanted_entities(spec: DetectionSpec, supported: frozenset[str]) -> list[str]:
    """The spec's entities a detector with `supported` entities (or the spec's own recognizers)
    can find; none for a spec that names entities means there is nothing to look for."""
    return [e for e in spec.entities if e in supported or _custom(e, spec)]


def _custom(entity: str, spec: DetectionSpec) -> bool:
    return any(entity in r.supported_entities for r in spec.recognizers)


def _chunks(text: str) -> Iterator[tuple[int, str]]:
    """Overlapping windows cut at white space, so a value near a cut is whole in one of them."""
    if len(text) <= CHUNK_CHARS:
        yield 0, text
        return
    start = 0
    while start < len(text):
        end = min(len(text), start + CHUNK_CHARS)
        if end < len(text):
            cut = text.rfind(" ", start + CHUNK_CHARS - CHUNK_OVERLAP, end)
            end = cut if cut > start else end
        yield start, text[start:end]
        if end >= len(text):
            return
        nxt = end - CHUNK_OVERLAP
        space = text.find(" ", nxt, end)
        start = space + 1 if space != -1 else nxt


def _mapped(view: View, spans: list[tuple[str, int, int, float]]) -> list[Finding]:
    findings = []
    for entity, start, end, score in spans:
        if end <= start:
            continue
        original_start, original_end = view.span_to_original(start, end)
        findings.append(Finding(entity, original_start, original_end, float(score)))
    return findings


_LEADING_NOT_NAME = re.compile(
    r"^(?:(?:e-?mail|call|contact|dear|reply|ask|tell|mail|message|hi|hello|thanks|thank|ping|"
    r"text|write|phone|meet|cc|to|from|per|attn|regards)\b[\s,:]*)+",
    re.IGNORECASE,
)


def _trim_person(finding: Finding, text: str) -> Finding:
    """spaCy's small model often takes the verb or greeting before a name into it
    ("Email Jane Doe", "Dear John Smith"); the name is what gets replaced."""
    if finding.entity != "PERSON":
        return finding
    lead = _LEADING_NOT_NAME.match(text[finding.start : finding.end])
    if lead is None or finding.start + lead.end() >= finding.end:
        return finding
    return Finding(finding.entity, finding.start + lead.end(), finding.end, finding.score)


def _one_of(codes: frozenset[int]) -> str:
    return "[" + "".join(re.escape(chr(code)) for code in sorted(codes)) + "]"


# A hyphen or any dash the normaliser folds, with the invisible characters it drops around it.
_INVISIBLE = f"{_one_of(INVISIBLE)}*"
_JOIN = f"{_INVISIBLE}(?:-|{_one_of(DASHES)}){_INVISIBLE}"
# A part of two letters or more, apostrophes inside ("O'Neil").
_PART = r"([^\W\d_](?:[^\W\d_]|['\u2019])*[^\W\d_])"
_PART_BEFORE = re.compile(rf"(?<![\w'\u2019-]){_PART}{_JOIN}$")
_PART_AFTER = re.compile(rf"{_JOIN}{_PART}(?![\w'\u2019-])")


def _whole_name(finding: Finding, text: str) -> Finding:
    """A name found without a capitalised part joined to it by a hyphen ("Nowak" in
    "Kowalska-Nowak") is widened to the whole name, so no part of it stays readable."""
    if finding.entity != "PERSON":
        return finding
    start, end = finding.start, finding.end
    window = max(0, start - 40)
    before = _PART_BEFORE.search(text, window, start)
    if before is not None and before.group(1)[0].isupper():
        start = before.start(1)
    after = _PART_AFTER.match(text, end, min(len(text), end + 40))
    if after is not None and after.group(1)[0].isupper():
        end = after.end(1)
    if (start, end) == (finding.start, finding.end):
        return finding
    return Finding(finding.entity, start, end, finding.score)


def _false_organisation(finding: Finding, text: str) -> bool:
    """spaCy's small model calls some dates and titles ORGANIZATION; those are not parties."""
    return finding.entity == "ORGANIZATION" and bool(
        _NOT_AN_ORGANISATION.fullmatch(text[finding.start : finding.end].strip())
    )


# Coarse NER labels: in a cluster with a shaped or listed finding, the specific type names it.
_COARSE_NER = frozenset({"DATE_TIME", "LOCATION", "ORGANIZATION", "NRP"})
# Above this, scores rank equal and the longer finding names the cluster (a checksum-valid IBAN
# over a DEA-shaped run inside it).
_RANK_CAP = 0.9


def _rank(finding: Finding, text: str) -> tuple[int, float, int]:
    score = finding.score
    if finding.entity == "UK_NHS" and not _NHS_CONTEXT.search(
        text[max(0, finding.start - 60) : finding.start]
    ):
        # A 10-digit number with a valid NHS checksum is far more often a phone number; Presidio
        # scores both, NHS with 1.0. Without NHS context, let the phone reading win.
        score = min(score, 0.3)
    if finding.entity == "PERSON" and any(c.isdigit() for c in text[finding.start : finding.end]):
        # spaCy calls "3890 Creekside Lane" or an IPv6 address a person; names have no digits.
        score = min(score, 0.3)
    tier = 0 if finding.entity in _COARSE_NER else 1
    return tier, min(score, _RANK_CAP), finding.end - finding.start


def resolve_overlaps(findings: list[Finding], text: str = "") -> list[Finding]:
    """One finding per overlapping cluster: the best-ranked one (score, then length) names the
    entity and the span covers the whole cluster, so no part of any finding escapes its action.

    A PERSON inside a wider ORGANIZATION span replaces it first (spaCy's small model often
    wraps a name and the words before it as an organisation), and a PERSON inside a street
    address gives way to it.
    """
    persons = [f for f in findings if f.entity == "PERSON"]
    addresses = [f for f in findings if f.entity == "STREET_ADDRESS"]
    findings = [
        f
        for f in findings
        if not (
            f.entity == "ORGANIZATION"
            and any(p.start >= f.start and p.end <= f.end for p in persons)
        )
        # A "person" inside a street address is the street's name ("2263 Bubby Drive").
        and not (
            f.entity == "PERSON" and any(a.start <= f.start and f.end <= a.end for a in addresses)
        )
    ]
    resolved: list[Finding] = []
    cluster: list[Finding] = []
    for finding in sorted(findings, key=lambda f: (f.start, -f.end)):
        if cluster and finding.start >= max(f.end for f in cluster):
            resolved.append(_merge(cluster, text))
            cluster = []
        cluster.append(finding)
    if cluster:
        resolved.append(_merge(cluster, text))
    return resolved


def _merge(cluster: list[Finding], text: str) -> Finding:
    best = max(cluster, key=lambda f: _rank(f, text))
    start = min(f.start for f in cluster)
    end = max(f.end for f in cluster)
    return Finding(best.entity, start, end, best.score)


_cache: dict[str, PiiDetector] = {}
_cache_lock = threading.Lock()


def load_detector(
    spacy_model: str, phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS
) -> PiiDetector:
    """The process's detector for `spacy_model` and phone regions, loaded and warmed once."""
    key = f"{spacy_model}|{','.join(phone_regions)}"
    with _cache_lock:
        detector = _cache.get(key)
        if detector is None:
            try:
                detector = PiiDetector(spacy_model, phone_regions=phone_regions)
                detector.warm()
            except DetectorUnavailable:
                raise
            except Exception as exc:
                raise DetectorUnavailable(f"PII detector failed to load: {exc}") from exc
            _cache[key] = detector
        return detector


class Detector(Protocol):
    """What the gateway needs of a detector: the in-process `PiiDetector` or a `DetectorPool`
    of worker processes (`pii/pool.py`), which give the same findings."""

    spacy_model: str
    supported_entities: frozenset[str]

    def analyze(self, text: str, spec: DetectionSpec) -> list[Finding]: ...

    def analyze_many(self, texts: list[str], spec: DetectionSpec) -> list[list[Finding]]: ...


Analyzer = Callable[[str, DetectionSpec], list[Finding]]
"""What the gateway needs of a detector: text and spec in, findings out."""
