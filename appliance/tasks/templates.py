"""Task templates: YAML files with a prompt, a parameter schema and an output schema.

Loaded strictly, like policies: an unknown key or a bad schema stops start-up naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.exceptions import ValidationError as SchemaValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from appliance.errors import InvalidInput, PolicyError, TaskNotFound
from appliance.inference.base import Tier
from appliance.tasks.schema_limits import check_schema

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


class TaskTemplate(BaseModel):
    """One task: how to prompt, which parameters it takes, what it returns."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    description: str
    tier: Tier = "small"
    model: bool = True
    """False for tasks that never call a model (redact)."""
    max_tokens: int = Field(default=128, gt=0, le=8192)
    prompt: str
    reduce_prompt: str | None = None
    parameters: dict[str, Any]
    output: dict[str, Any]

    def public(self) -> dict[str, Any]:
        """What `GET /api/v1/tasks` shows."""
        return {
            "name": self.name,
            "description": self.description,
            "tier": self.tier,
            "uses_model": self.model,
            "parameters": self.parameters,
            "output": self.output,
        }

    def validate_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """`params` checked against the parameter schema, with schema defaults filled in."""
        validator = Draft202012Validator(self.parameters)
        errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
        if errors:
            error: SchemaValidationError = errors[0]
            where = ".".join(str(p) for p in ["params", *error.absolute_path])
            raise InvalidInput(f"{where}: {error.message}", field=where)
        for key, spec in self.parameters.get("properties", {}).items():
            # A parameter that becomes a grammar (`x-json-schema`) gets the schema limits first.
            if isinstance(spec, dict) and spec.get("x-json-schema") and key in params:
                check_schema(params[key], field=f"params.{key}")
        filled = dict(params)
        for key, spec in self.parameters.get("properties", {}).items():
            if key not in filled and isinstance(spec, dict) and "default" in spec:
                filled[key] = spec["default"]
        return filled


class TaskCatalog:
    """Every template, by name."""

    def __init__(self, templates: dict[str, TaskTemplate]) -> None:
        self._templates = templates

    @classmethod
    def from_directory(cls, directory: Path = TEMPLATES_DIR) -> TaskCatalog:
        """Load every `*.yaml` in `directory`; a bad file is an error naming it."""
        found: dict[str, TaskTemplate] = {}
        for path in sorted(directory.glob("*.yaml")):
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
                template = TaskTemplate.model_validate(data)
                Draft202012Validator.check_schema(template.parameters)
                Draft202012Validator.check_schema(template.output)
            except (yaml.YAMLError, ValidationError, SchemaError) as exc:
                raise PolicyError(f"task template {path.name}: {exc}") from exc
            if template.name != path.stem:
                raise PolicyError(f"task template {path.name}: name must be '{path.stem}'")
            found[template.name] = template
        return cls(found)

    def names(self) -> list[str]:
        """Template names, sorted."""
        return sorted(self._templates)

    def get(self, name: str) -> TaskTemplate:
        """The template `name`; unknown names list the known ones."""
        try:
            return self._templates[name]
        except KeyError:
            raise TaskNotFound(
                f"task '{name}' does not exist; available: {', '.join(self.names())}",
                field="name",
                available=self.names(),
            ) from None

    def all(self) -> list[TaskTemplate]:
        """Every template, in name order."""
        return [self._templates[n] for n in self.names()]
