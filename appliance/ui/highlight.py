"""Text cut into plain and highlighted segments, for the PII preview and the policy test pane."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from appliance.pii.detector import Finding

ACTIONS = ("allow", "mask", "redact", "hash", "pseudonymize", "block")
"""Every policy action, in the order the legend lists them."""

ACTION_HELP = {
    "allow": "kept as written",
    "mask": "characters masked",
    "redact": "replaced by a typed placeholder",
    "hash": "replaced by a keyed hash",
    "pseudonymize": "replaced by a consistent pseudonym",
    "block": "the request cannot be sent",
}


@dataclass(frozen=True)
class Segment:
    """A run of text; `entity`/`action` are set when a finding covers it."""

    text: str
    entity: str | None = None
    action: str | None = None
    score: float = 0.0


@dataclass
class Preview:
    """What the preview shows: segments, counts per entity and per action, what blocks."""

    segments: list[Segment]
    by_entity: Counter[str] = field(default_factory=Counter)
    by_action: Counter[str] = field(default_factory=Counter)
    blocked: list[str] = field(default_factory=list)


def preview(text: str, items: Sequence[tuple[Finding, str]]) -> Preview:
    """Cut `text` at each finding; where findings overlap, the earlier (then longer) one wins."""
    ordered = sorted(items, key=lambda item: (item[0].start, -(item[0].end - item[0].start)))
    segments: list[Segment] = []
    by_entity: Counter[str] = Counter()
    by_action: Counter[str] = Counter()
    blocked: set[str] = set()
    cursor = 0
    for finding, action in ordered:
        if finding.start < cursor:
            continue
        if finding.start > cursor:
            segments.append(Segment(text[cursor : finding.start]))
        segments.append(
            Segment(text[finding.start : finding.end], finding.entity, action, finding.score)
        )
        by_entity[finding.entity] += 1
        by_action[action] += 1
        if action == "block":
            blocked.add(finding.entity)
        cursor = finding.end
    if cursor < len(text):
        segments.append(Segment(text[cursor:]))
    return Preview(segments, by_entity, by_action, sorted(blocked))
