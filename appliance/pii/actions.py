"""What a policy does with each finding: allow, mask, redact, hash, pseudonymize or block.

`transform()` applies the actions to a text and reports what was done, for the receipt. The same
value gets the same placeholder within a request (and, for pseudonyms in conversation scope,
within the conversation).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal, Protocol

from appliance.pii.detector import Finding
from appliance.policies.schema import Policy

PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]*)_(\d+)>")


def _key(entity: str, value: str) -> tuple[str, str]:
    return entity, " ".join(value.split()).casefold()


@dataclass
class PlaceholderBook:
    """Issues `<ENTITY_n>` placeholders; the same value gets the same placeholder in one request."""

    _by_value: dict[tuple[str, str], str] = field(default_factory=dict)
    _next: Counter[str] = field(default_factory=Counter)

    def placeholder(self, entity: str, value: str) -> str:
        """The placeholder for `value` of type `entity`, issuing a new one on first sight."""
        key = _key(entity, value)
        if key not in self._by_value:
            self._next[entity] += 1
            self._by_value[key] = f"<{entity}_{self._next[entity]}>"
        return self._by_value[key]

    def reserve(self, entity: str, number: int) -> None:
        """Never issue `number` (or lower) for `entity` again: it is taken elsewhere."""
        self._next[entity] = max(self._next[entity], number)


class Pseudonyms(Protocol):
    """Where pseudonymized values go: a placeholder out, the value kept encrypted for restore."""

    def placeholder(self, entity: str, value: str) -> str:
        """The scope's placeholder for `value`, storing the value if it is new."""
        ...


def mask(entity: str, value: str) -> str:
    """Keep the shape, hide the content: `***-**-6789`, `j*********@example.com`, `J*** S****`."""
    if entity == "EMAIL_ADDRESS" and "@" in value:
        local, _, domain = value.partition("@")
        return local[:1] + "*" * max(len(local) - 1, 1) + "@" + domain
    if entity == "PERSON":
        return re.sub(r"\w+", lambda m: m.group()[0] + "*" * (len(m.group()) - 1), value)
    alnum = [i for i, c in enumerate(value) if c.isalnum()]
    visible = set(alnum[-4:]) if len(alnum) >= 8 else set()
    return "".join(c if (i in visible or not c.isalnum()) else "*" for i, c in enumerate(value))


def keyed_hash(entity: str, value: str, key: bytes) -> str:
    """`<ENTITY#hex>`: HMAC-SHA256 with the install's secret, so values cannot be brute-forced
    from a table of likely inputs as with an unsalted hash."""
    digest = hmac.new(key, "\x1f".join(_key(entity, value)).encode(), hashlib.sha256).hexdigest()
    return f"<{entity}#{digest[:16]}>"


@dataclass(frozen=True)
class Applied:
    """A finding the policy acted on, and the action."""

    finding: Finding
    action: str


@dataclass(frozen=True)
class Transformed:
    """The text as it may leave the gateway, and what was done to get there."""

    text: str
    applied: list[Applied]

    @property
    def blocked(self) -> list[Applied]:
        """Findings whose action is `block`."""
        return [a for a in self.applied if a.action == "block"]


@dataclass
class ActionContext:
    """Per-request state the actions need."""

    book: PlaceholderBook
    hash_key: bytes
    pseudonyms: Pseudonyms | None = None


def transform(
    text: str,
    findings: list[Finding],
    policy: Policy,
    context: ActionContext,
    direction: Literal["input", "output"] = "input",
) -> Transformed:
    """Apply the policy's action to each finding (non-overlapping, as the detector returns them)."""
    applied: list[Applied] = []
    pieces: list[str] = []
    cursor = 0
    for finding in findings:
        rule = policy.rule_for(finding.entity, direction)
        if rule is None or finding.score < policy.threshold(finding.entity, direction):
            continue
        value = text[finding.start : finding.end]
        if rule.action in ("allow", "block"):
            replacement = value
        elif rule.action == "mask":
            replacement = mask(finding.entity, value)
        elif rule.action == "redact":
            replacement = context.book.placeholder(finding.entity, value)
        elif rule.action == "hash":
            replacement = keyed_hash(finding.entity, value, context.hash_key)
        else:  # pseudonymize
            if context.pseudonyms is None:
                raise RuntimeError("pseudonymize needs a pseudonym scope")
            replacement = context.pseudonyms.placeholder(finding.entity, value)
        pieces.append(text[cursor : finding.start])
        pieces.append(replacement)
        cursor = finding.end
        applied.append(Applied(finding, rule.action))
    pieces.append(text[cursor:])
    return Transformed(text="".join(pieces), applied=applied)
