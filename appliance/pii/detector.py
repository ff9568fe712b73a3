"""Presidio wiring. The only module (with its package) that imports Presidio or spaCy.

The NLP engine is configured explicitly from settings so that Presidio never tries to download a
spaCy model, and tldextract (used by the e-mail recognizer) is told to use its bundled suffix list
instead of fetching one: nothing here touches the network.
"""

from __future__ import annotations

import os

# Must be set before tldextract is imported: it builds its extractor at import time.
os.environ["TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS"] = ""

import logging
import threading
from dataclasses import dataclass
from typing import Any

from appliance.errors import DetectorUnavailable

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


@dataclass(frozen=True, slots=True)
class Finding:
    """One detected identifier: Python string offsets into the analysed text."""

    entity: str
    start: int
    end: int
    score: float


class PiiDetector:
    """A loaded Presidio analyzer. Thread-safe for concurrent `analyze` calls."""

    def __init__(self, spacy_model: str, *, language: str = "en") -> None:
        import spacy.util
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import NlpEngineProvider

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
        self._engine: Any = AnalyzerEngine(
            nlp_engine=provider.create_engine(), supported_languages=[language]
        )
        self.supported_entities: frozenset[str] = frozenset(
            self._engine.get_supported_entities(language=language)
        )

    def warm(self) -> None:
        """Run one analysis so the first real request does not pay for lazy initialisation."""
        self.analyze("Contact Jane Doe at jane@example.org or 212-555-0100.", entities=None)

    def analyze(
        self, text: str, *, entities: list[str] | None, min_score: float = 0.0
    ) -> list[Finding]:
        """Findings in `text` for `entities` (all supported ones when None), overlaps resolved."""
        wanted = None if entities is None else [e for e in entities if e in self.supported_entities]
        if wanted is not None and not wanted:
            return []
        results = self._engine.analyze(
            text=text, language=self.language, entities=wanted, score_threshold=min_score
        )
        findings = [Finding(r.entity_type, r.start, r.end, float(r.score)) for r in results]
        return resolve_overlaps(findings)


def resolve_overlaps(findings: list[Finding]) -> list[Finding]:
    """Keep one finding per overlapping region: the highest score, then the longest span."""
    ranked = sorted(findings, key=lambda f: (-f.score, -(f.end - f.start), f.start))
    kept: list[Finding] = []
    for finding in ranked:
        if all(finding.end <= k.start or finding.start >= k.end for k in kept):
            kept.append(finding)
    return sorted(kept, key=lambda f: f.start)


_cache: dict[str, PiiDetector] = {}
_cache_lock = threading.Lock()


def load_detector(spacy_model: str) -> PiiDetector:
    """The process's detector for `spacy_model`, loaded and warmed once."""
    with _cache_lock:
        detector = _cache.get(spacy_model)
        if detector is None:
            try:
                detector = PiiDetector(spacy_model)
                detector.warm()
            except DetectorUnavailable:
                raise
            except Exception as exc:
                raise DetectorUnavailable(f"PII detector failed to load: {exc}") from exc
            _cache[spacy_model] = detector
        return detector
