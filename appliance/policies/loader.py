"""Load policies from YAML files, reporting the file, line and field of any error."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from appliance.errors import PolicyError
from appliance.policies.schema import LoadedPolicy, Policy

_NAMED_FIELD = re.compile(r"(?:Value error, )?([a-z_]+(?:\.(?:\d+|[a-z_]+))*): ")


def _line_of(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the YAML node at pydantic location `loc`, as deep as it exists."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == part), None)
            if match is None:
                key = next((k for k, _ in node.value if k.value == part), None)
                return key.start_mark.line + 1 if key is not None else line
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
        else:
            return line
        line = node.start_mark.line + 1
    return line


def _duplicate_key(node: yaml.Node | None, path: tuple[str, ...]) -> tuple[str, int] | None:
    """The dotted path and line of the first key that appears twice in one mapping."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            if name in seen:
                return ".".join((*path, name)), key.start_mark.line + 1
            seen.add(name)
            found = _duplicate_key(value, (*path, name))
            if found is not None:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found = _duplicate_key(item, (*path, str(index)))
            if found is not None:
                return found
    return None


def parse_policy(text: str, *, source: str) -> LoadedPolicy:
    """Validate policy YAML `text`; `source` names it in error messages."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise PolicyError(f"{where}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise PolicyError(f"{source}:1: a policy must be a mapping of fields")
    duplicate = _duplicate_key(root, ())
    if duplicate is not None:
        # YAML keeps the last of two equal keys: the first would be dropped without a word.
        raise PolicyError(
            f"{source}:{duplicate[1]}: field '{duplicate[0]}': duplicate key", field=duplicate[0]
        )
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        named = _NAMED_FIELD.match(first["msg"]) if not loc else None
        if named:
            # A whole-policy check names the field it is about at the start of its message.
            loc = tuple(int(p) if p.isdigit() else p for p in named.group(1).split("."))
        field = ".".join(str(p) for p in loc) or "(root)"
        line = _line_of(root, loc)
        raise PolicyError(f"{source}:{line}: field '{field}': {first['msg']}", field=field) from exc
    canonical = json.dumps(policy.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    version = hashlib.sha256(canonical.encode()).hexdigest()[:12]
    return LoadedPolicy(policy=policy, version=version, source=source)


def load_policy_file(path: Path) -> LoadedPolicy:
    """Load and validate one policy file; its name must match the file name."""
    loaded = parse_policy(path.read_text(encoding="utf-8"), source=str(path))
    if loaded.policy.name != path.stem:
        raise PolicyError(
            f"{path}:1: field 'name': '{loaded.policy.name}' does not match the file name "
            f"'{path.stem}'",
            field="name",
        )
    return loaded


def load_directory(directory: Path) -> dict[str, LoadedPolicy]:
    """Load every `*.yaml` file in `directory`; any invalid file stops the load."""
    if not directory.is_dir():
        raise PolicyError(f"policies directory {directory} does not exist")
    policies: dict[str, LoadedPolicy] = {}
    for path in sorted(directory.glob("*.yaml")):
        loaded = load_policy_file(path)
        policies[loaded.policy.name] = loaded
    return policies
