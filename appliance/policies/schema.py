"""The policy schema. Strict: an unknown key or a bad value is an error, never a default."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Action = Literal["allow", "redact", "block"]
"""What happens to a finding. mask, hash and pseudonymize arrive with the policy engine."""


class EntityRule(BaseModel):
    """What to do with one entity type found in a request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entity: str = Field(min_length=1, pattern=r"^[A-Z][A-Z0-9_]*$")
    action: Action
    min_score: float | None = Field(default=None, ge=0.0, le=1.0)


class Policy(BaseModel):
    """A named PII policy: which entity types to look for and what to do with each."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    description: str = ""
    languages: list[str] = Field(default_factory=lambda: ["en"], min_length=1)
    min_score: float = Field(default=0.5, ge=0.0, le=1.0)
    entities: list[EntityRule] = Field(min_length=1)

    @field_validator("entities")
    @classmethod
    def _unique_entities(cls, rules: list[EntityRule]) -> list[EntityRule]:
        seen: set[str] = set()
        for rule in rules:
            if rule.entity in seen:
                raise ValueError(f"entity {rule.entity} is listed twice")
            seen.add(rule.entity)
        return rules

    def rule_for(self, entity: str) -> EntityRule | None:
        """The rule for `entity`, or None when the policy does not look for it."""
        for rule in self.entities:
            if rule.entity == entity:
                return rule
        return None

    def threshold(self, entity: str) -> float:
        """Minimum detector score for a finding of `entity` to count."""
        rule = self.rule_for(entity)
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
