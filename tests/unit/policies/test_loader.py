"""Policy loading and the schema: the shipped policy, content versions, and errors naming file,
line and field. The database-backed store has its own tests (test_store.py)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from appliance.config import PROJECT_ROOT
from appliance.errors import PolicyError
from appliance.policies.loader import load_directory, load_policy_file, parse_policy
from appliance.policies.schema import LoadedPolicy

POLICY = textwrap.dedent(
    """\
    # A small policy used by these tests.
    name: {name}
    description: Test policy.
    min_score: 0.5
    entities:
      - entity: PERSON
        action: redact
        min_score: 0.7
      - entity: EMAIL_ADDRESS
        action: {email_action}
      - entity: US_SSN
        action: block
    """
)


def policy_text(name: str = "strict", email_action: str = "redact") -> str:
    return POLICY.format(name=name, email_action=email_action)


def write(directory: Path, filename: str, text: str) -> Path:
    path = directory / filename
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text: str, needle: str) -> int:
    """1-based number of the only line of `text` containing `needle`."""
    lines = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(lines) == 1, f"{needle!r} is on lines {lines}"
    return lines[0]


def load_error(tmp_path: Path, text: str, filename: str = "strict.yaml") -> PolicyError:
    path = write(tmp_path, filename, text)
    with pytest.raises(PolicyError) as info:
        load_policy_file(path)
    return info.value


# --- the shipped policy --------------------------------------------------------------------------


def test_shipped_default_policy_loads() -> None:
    policies = load_directory(PROJECT_ROOT / "policies")
    loaded = policies["default"]
    assert loaded.policy.name == "default"
    assert re.fullmatch(r"default@[0-9a-f]{12}", loaded.ref)
    rules = {r.entity: r.action for r in loaded.policy.entities}
    # The caller's contact details are pseudonymized (and restored for the caller); government
    # and financial identifiers are redacted and never restored.
    for entity in ("PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "STREET_ADDRESS"):
        assert rules[entity] == "pseudonymize"
    for entity in ("US_SSN", "CREDIT_CARD", "IBAN_CODE", "US_PASSPORT"):
        assert rules[entity] == "redact"
    assert loaded.policy.output.restore_pseudonyms is True


def test_shipped_default_policy_file_loads_directly() -> None:
    loaded = load_policy_file(PROJECT_ROOT / "policies" / "default.yaml")
    assert loaded.source.endswith("default.yaml")
    assert loaded.policy.threshold("PERSON") == 0.6
    assert loaded.policy.threshold("EMAIL_ADDRESS") == loaded.policy.min_score


# --- versions ------------------------------------------------------------------------------------


def test_valid_policy_parses() -> None:
    loaded = parse_policy(policy_text(), source="strict.yaml")
    assert isinstance(loaded, LoadedPolicy)
    assert loaded.policy.name == "strict"
    assert [r.entity for r in loaded.policy.entities] == ["PERSON", "EMAIL_ADDRESS", "US_SSN"]
    assert loaded.policy.threshold("PERSON") == 0.7
    assert loaded.policy.threshold("US_SSN") == 0.5
    assert loaded.policy.rule_for("IP_ADDRESS") is None
    assert loaded.ref == f"strict@{loaded.version}"


def test_version_is_stable_for_the_same_content() -> None:
    first = parse_policy(policy_text(), source="a.yaml")
    second = parse_policy(policy_text(), source="b.yaml")
    assert re.fullmatch(r"[0-9a-f]{12}", first.version)
    assert first.version == second.version


def test_version_ignores_comments_layout_and_key_order() -> None:
    reformatted = textwrap.dedent(
        """\
        entities: [{action: redact, entity: PERSON, min_score: 0.7},
                   {entity: EMAIL_ADDRESS, action: redact},   # a comment
                   {entity: US_SSN, action: block}]
        min_score: 0.50
        description: "Test policy."
        name: strict
        languages: [en]
        """
    )
    original = parse_policy(policy_text(), source="a.yaml")
    assert parse_policy(reformatted, source="b.yaml").version == original.version


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("action: block", "action: redact"),
        ("min_score: 0.7", "min_score: 0.8"),
        ("description: Test policy.", "description: Another description."),
        ("  - entity: US_SSN\n    action: block\n", ""),
    ],
)
def test_version_changes_when_content_changes(old: str, new: str) -> None:
    text = policy_text()
    assert old in text
    changed = text.replace(old, new)
    assert parse_policy(changed, source="a.yaml").version != (
        parse_policy(text, source="a.yaml").version
    )


# --- errors name file, line and field ------------------------------------------------------------


def test_unknown_top_level_key(tmp_path: Path) -> None:
    text = policy_text().replace("min_score: 0.5\n", "min_score: 0.5\ncolour: red\n")
    error = load_error(tmp_path, text)
    assert f"strict.yaml:{line_of(text, 'colour')}:" in error.message
    assert "'colour'" in error.message
    assert error.field == "colour"


def test_unknown_key_inside_an_entity_rule(tmp_path: Path) -> None:
    text = policy_text().replace("action: block", "action: block\n    replacement: XXX")
    error = load_error(tmp_path, text)
    assert f"strict.yaml:{line_of(text, 'replacement')}:" in error.message
    assert error.field == "entities.2.replacement"
    assert "'entities.2.replacement'" in error.message


def test_bad_action_names_line_and_field(tmp_path: Path) -> None:
    text = policy_text(email_action="explode")
    error = load_error(tmp_path, text)
    path = tmp_path / "strict.yaml"
    assert f"{path}:{line_of(text, 'explode')}:" in error.message
    assert "entities.1.action" in error.message
    assert error.field == "entities.1.action"
    assert "'allow'" in error.message  # pydantic lists the allowed values


def test_bad_value_deep_in_the_file_names_its_line(tmp_path: Path) -> None:
    text = policy_text().replace("min_score: 0.7", "min_score: 7")
    error = load_error(tmp_path, text)
    assert f"strict.yaml:{line_of(text, 'min_score: 7')}:" in error.message
    assert error.field == "entities.0.min_score"


def test_missing_required_field_names_the_field(tmp_path: Path) -> None:
    text = policy_text().replace("    action: block\n", "")
    error = load_error(tmp_path, text)
    assert error.field == "entities.2.action"
    assert "Field required" in error.message
    # The rule that lacks the field starts on the US_SSN line.
    assert f"strict.yaml:{line_of(text, 'US_SSN')}:" in error.message


def test_bad_entity_name(tmp_path: Path) -> None:
    text = policy_text().replace("entity: PERSON", "entity: person")
    error = load_error(tmp_path, text)
    assert f"strict.yaml:{line_of(text, 'person')}:" in error.message
    assert error.field == "entities.0.entity"


def test_duplicate_entity(tmp_path: Path) -> None:
    text = policy_text().replace("entity: US_SSN", "entity: PERSON")
    error = load_error(tmp_path, text)
    assert "entity PERSON has two rules for input, output" in error.message
    assert error.field == "entities"
    match = re.search(r"strict\.yaml:(\d+):", error.message)
    assert match is not None
    # The validator sees the whole list, so the line is inside the entities block.
    entities_line = line_of(text, "entities:")
    assert entities_line <= int(match.group(1)) <= len(text.splitlines())


def test_empty_entity_list(tmp_path: Path) -> None:
    text = "name: strict\nentities: []\n"
    error = load_error(tmp_path, text)
    assert "strict.yaml:2:" in error.message
    assert error.field == "entities"


def test_name_must_match_file_name(tmp_path: Path) -> None:
    error = load_error(tmp_path, policy_text(name="strict"), filename="lenient.yaml")
    assert "lenient.yaml:1:" in error.message
    assert "'strict'" in error.message
    assert "'lenient'" in error.message
    assert error.field == "name"


@pytest.mark.parametrize(
    ("old", "new", "field", "needle"),
    [
        ("min_score: 0.5\n", "min_score: 0.5\nmin_score: 0.9\n", "min_score", "min_score: 0.9"),
        (
            "    action: block\n",
            "    action: block\n    action: allow\n",
            "entities.2.action",
            "action: allow",
        ),
    ],
)
def test_duplicate_key_is_refused(
    tmp_path: Path, old: str, new: str, field: str, needle: str
) -> None:
    text = policy_text().replace(old, new)
    error = load_error(tmp_path, text)
    assert error.field == field
    assert "duplicate key" in error.message
    assert f"strict.yaml:{line_of(text, needle)}:" in error.message


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    text = "name: strict\nentities:\n  - entity: PERSON\n    action: [redact\n"
    error = load_error(tmp_path, text)
    assert "not valid YAML" in error.message
    match = re.search(r"strict\.yaml:(\d+):", error.message)
    assert match is not None
    # The unclosed bracket opens on line 4; the parser notices at or after it.
    assert int(match.group(1)) >= 4


def test_yaml_tab_indentation_is_invalid(tmp_path: Path) -> None:
    text = "name: strict\nentities:\n\t- entity: PERSON\n"
    error = load_error(tmp_path, text)
    assert "not valid YAML" in error.message
    assert "strict.yaml:3:" in error.message


@pytest.mark.parametrize("text", ["", "- just\n- a list\n", "a plain string\n"])
def test_policy_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    error = load_error(tmp_path, text)
    assert "strict.yaml:1:" in error.message
    assert "mapping" in error.message


# --- a directory of policies ---------------------------------------------------------------------


def test_directory_loads_every_yaml_file(tmp_path: Path) -> None:
    write(tmp_path, "strict.yaml", policy_text(name="strict"))
    write(tmp_path, "lenient.yaml", policy_text(name="lenient", email_action="allow"))
    write(tmp_path, "notes.txt", "not a policy")
    policies = load_directory(tmp_path)
    assert sorted(policies) == ["lenient", "strict"]
    assert policies["lenient"].policy.rule_for("EMAIL_ADDRESS").action == "allow"  # type: ignore[union-attr]


def test_missing_directory_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="does not exist"):
        load_directory(tmp_path / "nowhere")


def test_directory_stops_at_an_invalid_file(tmp_path: Path) -> None:
    write(tmp_path, "strict.yaml", policy_text(name="strict"))
    bad = policy_text(name="broken", email_action="explode")
    write(tmp_path, "broken.yaml", bad)
    with pytest.raises(PolicyError) as info:
        load_directory(tmp_path)
    assert f"broken.yaml:{line_of(bad, 'explode')}:" in info.value.message


# --- schema --------------------------------------------------------------------------------------

RECOGNIZER = textwrap.dedent(
    """    name: strict
    entities:
      - {entity: PERSON, action: redact}
      - {entity: MEMBER_ID, action: redact}
    recognizers:
      - entity: MEMBER_ID
        patterns:
          - {name: member, regex: '(?<=member[:\\s]{1,3})\\d{8}', score: 0.8}
        context: [member]
        validator: luhn
    """
)


PATTERNS = (
    "    patterns:\n      - {name: member, regex: '(?<=member[:\\s]{1,3})\\d{8}', score: 0.8}\n"
)
assert PATTERNS in RECOGNIZER


def test_recognizer_parses() -> None:
    policy = parse_policy(RECOGNIZER, source="strict.yaml").policy
    (recognizer,) = policy.recognizers
    assert recognizer.entity == "MEMBER_ID"
    assert recognizer.validator == "luhn"
    assert recognizer.patterns[0].regex == r"(?<=member[:\s]{1,3})\d{8}"


def test_applies_to_directions() -> None:
    text = textwrap.dedent(
        """        name: strict
        entities:
          - {entity: PERSON, action: redact, applies_to: input}
          - {entity: PERSON, action: mask, applies_to: output}
          - {entity: EMAIL_ADDRESS, action: redact}
        """
    )
    policy = parse_policy(text, source="strict.yaml").policy
    assert policy.rule_for("PERSON", "input").action == "redact"  # type: ignore[union-attr]
    assert policy.rule_for("PERSON", "output").action == "mask"  # type: ignore[union-attr]
    assert policy.entity_names("input") == ["PERSON", "EMAIL_ADDRESS"]
    assert policy.entity_names("output") == ["PERSON", "EMAIL_ADDRESS"]
    assert policy.entities[2].applies_to == "both"


@pytest.mark.parametrize(
    ("rules", "clash"),
    [
        (
            "[{entity: PERSON, action: redact},"
            " {entity: PERSON, action: mask, applies_to: output}]",
            "output",
        ),
        (
            "[{entity: PERSON, action: redact, applies_to: input},"
            " {entity: PERSON, action: mask, applies_to: input}]",
            "input",
        ),
    ],
)
def test_two_rules_for_one_direction_are_refused(tmp_path: Path, rules: str, clash: str) -> None:
    error = load_error(tmp_path, f"name: strict\nentities: {rules}\n")
    assert f"entity PERSON has two rules for {clash}" in error.message
    assert error.field == "entities"


def test_bad_applies_to(tmp_path: Path) -> None:
    text = "name: strict\nentities:\n  - {entity: PERSON, action: redact, applies_to: sideways}\n"
    error = load_error(tmp_path, text)
    assert error.field == "entities.0.applies_to"
    assert "strict.yaml:3:" in error.message


@pytest.mark.parametrize(
    ("retention", "ok"),
    [
        ("{content: never}", True),
        ("{content: encrypted, days: 30}", True),
        ("{content: encrypted}", False),
        ("{content: never, days: 30}", False),
        ("{content: encrypted, days: 0}", False),
        ("{content: forever}", False),
    ],
)
def test_retention_days_rule(tmp_path: Path, retention: str, ok: bool) -> None:
    text = f"name: strict\nentities: [{{entity: PERSON, action: redact}}]\nretention: {retention}\n"
    if ok:
        assert parse_policy(text, source="strict.yaml").policy.retention.content in (
            "never",
            "encrypted",
        )
        return
    error = load_error(tmp_path, text)
    assert error.field is not None and error.field.startswith("retention")
    assert "strict.yaml:3:" in error.message


def test_default_retention_is_never_and_routing_is_local() -> None:
    policy = parse_policy(
        "name: strict\nentities: [{entity: PERSON, action: redact}]\n", source="s"
    ).policy
    assert policy.retention.content == "never"
    assert policy.retention.days is None
    assert policy.routing.allow_external is False


def test_recognizer_without_patterns_or_deny_list(tmp_path: Path) -> None:
    text = RECOGNIZER.replace(
        PATTERNS,
        "",
    )
    assert "patterns" not in text
    error = load_error(tmp_path, text)
    assert "at least one pattern or a deny_list" in error.message
    assert error.field == "recognizers.0"
    assert f"strict.yaml:{line_of(text, '- entity: MEMBER_ID')}:" in error.message


def test_recognizer_with_only_a_deny_list_is_valid() -> None:
    text = RECOGNIZER.replace(
        PATTERNS,
        "    deny_list: [Bluebird]\n",
    )
    assert parse_policy(text, source="strict.yaml").policy.recognizers[0].deny_list == ["Bluebird"]


def test_invalid_regex_names_field_and_line(tmp_path: Path) -> None:
    text = RECOGNIZER.replace("\\d{8}'", "\\d{8}('")
    assert "d{8}('" in text
    error = load_error(tmp_path, text)
    assert error.field == "recognizers.0.patterns.0.regex"
    assert "'recognizers.0.patterns.0.regex'" in error.message
    assert "not a valid regular expression" in error.message
    assert f"strict.yaml:{line_of(text, 'name: member')}:" in error.message


def test_recognizer_entity_without_a_rule(tmp_path: Path) -> None:
    text = RECOGNIZER.replace("  - {entity: MEMBER_ID, action: redact}\n", "")
    error = load_error(tmp_path, text)
    assert "recognizers.0: entity MEMBER_ID has no rule in entities" in error.message
    assert error.field == "recognizers.0"
    assert f"strict.yaml:{line_of(text, '- entity: MEMBER_ID')}:" in error.message


@pytest.mark.parametrize("validator", ["crc32", "LUHN"])
def test_unknown_validator(tmp_path: Path, validator: str) -> None:
    error = load_error(tmp_path, RECOGNIZER.replace("validator: luhn", f"validator: {validator}"))
    assert error.field == "recognizers.0.validator"
    assert f"strict.yaml:{line_of(RECOGNIZER, 'validator')}:" in error.message
