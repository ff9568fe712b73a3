"""The policy schema. Strict: an unknown key or a bad value is an error, never a default.

A policy says which identifiers to look for (Presidio's recognizers plus the policy's own), how
confident a finding must be, and what happens to each: `allow`, `mask`, `redact`, `hash`,
`pseudonymize` or `block`, on the way in, on the way out, or both. It also constrains routing
(external tiers) and content retention.
"""

from __future__ import annotations

from typing import Literal

import regex
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Action = Literal["allow", "mask", "redact", "hash", "pseudonymize", "block"]
Direction = Literal["input", "output", "both"]
Tier = Literal["small", "large", "external"]
Validator = Literal["luhn", "mod97"]

_ENTITY = r"^[A-Z][A-Z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EntityRule(_Strict):
    """What to do with one entity type, and in which direction."""

    entity: str = Field(min_length=1, max_length=64, pattern=_ENTITY)
    action: Action
    min_score: float | None = Field(default=None, ge=0.0, le=1.0)
    applies_to: Direction = "both"


class PatternSpec(_Strict):
    """One regular expression of a custom recognizer, with the score a match gets."""

    name: str = Field(min_length=1, max_length=64)
    regex: str = Field(min_length=1, max_length=2000)
    score: float = Field(ge=0.0, le=1.0)

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        # Presidio compiles patterns with the `regex` package (variable-length look-behind).
        try:
            regex.compile(value)
        except regex.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value


class CustomRecognizer(_Strict):
    """A recognizer the policy defines: patterns, context words, deny-list, checksum."""

    entity: str = Field(min_length=1, max_length=64, pattern=_ENTITY)
    patterns: list[PatternSpec] = Field(default_factory=list)
    context: list[str] = Field(default_factory=list)
    deny_list: list[str] = Field(default_factory=list)
    validator: Validator | None = None

    @model_validator(mode="after")
    def _has_something_to_match(self) -> CustomRecognizer:
        if not self.patterns and not self.deny_list:
            raise ValueError("a recognizer needs at least one pattern or a deny_list")
        return self


class OutputRules(_Strict):
    """What happens to answers: scan them with the rules that apply to output, restore or not."""

    scan: bool = True
    restore_pseudonyms: bool = False
    stream_window: int = Field(default=64, ge=8, le=1024)


class PseudonymRules(_Strict):
    """Where pseudonyms live: one request or one conversation, and for how long."""

    scope: Literal["request", "conversation"] = "request"
    ttl_minutes: int = Field(default=60, ge=1, le=60 * 24 * 30)


class RoutingRules(_Strict):
    """Where requests under this policy may go."""

    allow_external: bool = False
    max_tier: Tier = "large"
    over_budget: Literal["stay_on_prem", "refuse"] = "stay_on_prem"
    """Past the monthly escalation budget: keep the request on-prem, or refuse it (429)."""


class RetentionRules(_Strict):
    """Whether request content may be kept: never (default) or encrypted for N days."""

    content: Literal["never", "encrypted"] = "never"
    days: int | None = Field(default=None, ge=1, le=3650)

    @model_validator(mode="after")
    def _days_iff_encrypted(self) -> RetentionRules:
        if self.content == "encrypted" and self.days is None:
            raise ValueError("days is required when content is 'encrypted'")
        if self.content == "never" and self.days is not None:
            raise ValueError("days only applies when content is 'encrypted'")
        return self


class Policy(_Strict):
    """A named PII policy."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    description: str = ""
    languages: list[Literal["en"]] = Field(default_factory=lambda: ["en"], min_length=1)  # type: ignore[arg-type]
    min_score: float = Field(default=0.5, ge=0.0, le=1.0)
    entities: list[EntityRule] = Field(min_length=1)
    recognizers: list[CustomRecognizer] = Field(default_factory=list)
    allow_list: list[str] = Field(default_factory=list)
    output: OutputRules = Field(default_factory=OutputRules)
    pseudonyms: PseudonymRules = Field(default_factory=PseudonymRules)
    routing: RoutingRules = Field(default_factory=RoutingRules)
    retention: RetentionRules = Field(default_factory=RetentionRules)

    @field_validator("entities")
    @classmethod
    def _one_rule_per_direction(cls, rules: list[EntityRule]) -> list[EntityRule]:
        seen: dict[str, set[str]] = {}
        for rule in rules:
            directions = {"input", "output"} if rule.applies_to == "both" else {rule.applies_to}
            taken = seen.setdefault(rule.entity, set())
            if taken & directions:
                clash = ", ".join(sorted(taken & directions))
                raise ValueError(f"entity {rule.entity} has two rules for {clash}")
            taken |= directions
        return rules

    @model_validator(mode="after")
    def _recognizers_have_rules(self) -> Policy:
        ruled = {rule.entity for rule in self.entities}
        for index, recognizer in enumerate(self.recognizers):
            if recognizer.entity not in ruled:
                raise ValueError(
                    f"recognizers.{index}: entity {recognizer.entity} has no rule in entities"
                )
        return self

    def rule_for(
        self, entity: str, direction: Literal["input", "output"] = "input"
    ) -> EntityRule | None:
        """The rule for `entity` in `direction`, or None when the policy ignores it there."""
        for rule in self.entities:
            if rule.entity == entity and rule.applies_to in (direction, "both"):
                return rule
        return None

    def entity_names(self, direction: Literal["input", "output"] = "input") -> list[str]:
        """Entity types the policy looks for in `direction`."""
        return [r.entity for r in self.entities if r.applies_to in (direction, "both")]

    def threshold(self, entity: str, direction: Literal["input", "output"] = "input") -> float:
        """Minimum detector score for a finding of `entity` in `direction` to count."""
        # Per direction: an entity may have one rule for input and another for output.
        rule = self.rule_for(entity, direction)
        if rule is not None and rule.min_score is not None:
            return rule.min_score
        return self.min_score


class LoadedPolicy(BaseModel):
    """A validated policy with the version derived from its content."""

    model_config = ConfigDict(frozen=True)

    policy: Policy
    version: str
    source: str

    @property
    def ref(self) -> str:
        """`name@version`, as receipts and the audit trail show it."""
        return f"{self.policy.name}@{self.version}"
