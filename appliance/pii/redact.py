"""Apply a policy's actions to findings: typed placeholders, blocks, counts for the receipt."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from appliance.pii.detector import Finding
from appliance.policies.schema import Policy


@dataclass
class PlaceholderBook:
    """Issues `<ENTITY_n>` placeholders; the same value gets the same placeholder in one request."""

    _by_value: dict[tuple[str, str], str] = field(default_factory=dict)
    _next: Counter[str] = field(default_factory=Counter)

    def placeholder(self, entity: str, value: str) -> str:
        """The placeholder for `value` of type `entity`, issuing a new one on first sight."""
        key = (entity, value.strip().casefold())
        if key not in self._by_value:
            self._next[entity] += 1
            self._by_value[key] = f"<{entity}_{self._next[entity]}>"
        return self._by_value[key]


@dataclass(frozen=True)
class AppliedFinding:
    """A finding that cleared the policy's threshold, with the action taken on it."""

    finding: Finding
    action: str


@dataclass(frozen=True)
class Transformed:
    """The text as it may leave the gateway, and what was done to get there."""

    text: str
    applied: list[AppliedFinding]

    @property
    def blocked(self) -> list[AppliedFinding]:
        """Findings whose action is `block`."""
        return [a for a in self.applied if a.action == "block"]


def applicable(findings: list[Finding], policy: Policy) -> list[AppliedFinding]:
    """Findings the policy has a rule for and whose score clears that rule's threshold."""
    applied: list[AppliedFinding] = []
    for finding in findings:
        rule = policy.rule_for(finding.entity)
        if rule is None or finding.score < policy.threshold(finding.entity):
            continue
        applied.append(AppliedFinding(finding, rule.action))
    return applied


def transform(
    text: str, findings: list[Finding], policy: Policy, book: PlaceholderBook
) -> Transformed:
    """Apply each rule's action to `text`. Findings must not overlap (the detector ensures it)."""
    applied = applicable(findings, policy)
    pieces: list[str] = []
    cursor = 0
    for item in applied:
        f = item.finding
        pieces.append(text[cursor : f.start])
        if item.action == "redact":
            pieces.append(book.placeholder(f.entity, text[f.start : f.end]))
        else:
            pieces.append(text[f.start : f.end])
        cursor = f.end
    pieces.append(text[cursor:])
    return Transformed(text="".join(pieces), applied=applied)
