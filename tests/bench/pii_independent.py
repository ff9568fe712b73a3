"""A second evaluation set for `make bench-pii`, written apart from the detector and from
`pii_eval.py`'s own generator: its own templates (letters, forms, case notes and clauses phrased
differently), values from Faker's `en_US` and `en_GB` providers (names, addresses, phones, SSNs,
cards, IBANs, passports, IP and MAC addresses, military addresses, dates of birth) and from
small format generators written here (driver's licences, record, employee, case and policy
numbers in several prefix and separator styles). No value is drawn from the detector's name
lists or patterns; the obfuscations are the ones real documents carry (a word processor's dashes,
commas or underscores as separators, Arabic-Indic or Devanagari digits, combining accents,
lower-case IBANs, look-alike letters and lower case in names, zero-width characters).

Every value is synthetic and the set is seeded: the same seed gives the same documents.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.bench.pii_eval import ZERO_WIDTH, Document, _Builder

SEED = 1515
LOCALES = ("en_US", "en_GB")
OBFUSCATED_SHARE = 0.35

# Types scored as structured identifiers on this set (addresses and names are reported apart).
STRUCTURED = (
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "US_SSN",
    "CREDIT_CARD",
    "IBAN_CODE",
    "IP_ADDRESS",
    "MAC_ADDRESS",
    "US_PASSPORT",
    "US_DRIVER_LICENSE",
    "DATE_OF_BIRTH",
    "URL",
    "EMPLOYEE_ID",
    "MEDICAL_RECORD_NUMBER",
    "CASE_NUMBER",
    "POLICY_NUMBER",
    "HEALTH_PLAN_ID",
)
TYPES = ("PERSON", *STRUCTURED, "STREET_ADDRESS", "POSTAL_CODE")

# Look-alike letters (Cyrillic) a name may carry one or two of.
_CYRILLIC = {"a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "x": "х", "y": "у", "i": "і"}
_CYRILLIC_UPPER = {"A": "А", "B": "В", "E": "Е", "K": "К", "M": "М", "H": "Н", "O": "О",
                   "P": "Р", "C": "С", "T": "Т", "X": "Х"}  # fmt: skip
_DASHES = ("\u2010", "\u2011", "\u2012", "\u2013", "\u2014", "\u2212")
_ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
_DEVANAGARI = str.maketrans("0123456789", "०१२३४५६७८९")
_COMBINING = ("\u0301", "\u0300", "\u0308", "\u0332")


def _digits_variant(value: str, rng: random.Random) -> tuple[str, str]:
    """A digit value as a document may carry it: another dash, a comma or underscore as the
    separator, another script's digits, combining accents, or zero-width characters."""
    kind = rng.choice(["dash", "comma", "underscore", "arabic", "devanagari", "accents", "zw"])
    if kind == "dash":
        dash = rng.choice(_DASHES)
        return value.replace("-", dash).replace(" ", dash), "unicode_dash"
    if kind == "comma":
        return value.replace("-", ",").replace(" ", ","), "comma_separator"
    if kind == "underscore":
        return value.replace("-", "_").replace(" ", "_"), "underscore_separator"
    if kind == "arabic":
        return value.translate(_ARABIC_INDIC), "arabic_indic_digits"
    if kind == "devanagari":
        return value.translate(_DEVANAGARI), "devanagari_digits"
    if kind == "accents":
        mark = rng.choice(_COMBINING)
        return "".join(c + mark if c.isdigit() and rng.random() < 0.5 else c for c in value), (
            "combining_accents"
        )
    chars = list(value)
    for _ in range(2):
        chars.insert(rng.randrange(1, len(chars)), rng.choice(ZERO_WIDTH))
    return "".join(chars), "zero_width"


def _name_variant(value: str, rng: random.Random) -> tuple[str, str]:
    kind = rng.choice(["lookalike", "lookalike", "lowercase", "zw"])
    if kind == "lowercase":
        return value.lower(), "lowercase"
    if kind == "zw":
        chars = list(value)
        chars.insert(rng.randrange(1, len(chars)), rng.choice(ZERO_WIDTH))
        return "".join(chars), "zero_width"
    chars = list(value)
    positions = [i for i, c in enumerate(chars) if c in _CYRILLIC or c in _CYRILLIC_UPPER]
    for i in rng.sample(positions, min(len(positions), rng.choice([1, 2]))):
        chars[i] = _CYRILLIC.get(chars[i]) or _CYRILLIC_UPPER[chars[i]]
    return "".join(chars), "lookalike_letters"


@dataclass(frozen=True)
class Slot:
    """How one kind of value is made, labelled and written."""

    entity: str
    make: Callable[[Any, random.Random], str]  # (a Faker, the set's random source)
    variant: Callable[[str, random.Random], tuple[str, str]] | None = None


def _person(f: Any, rng: random.Random) -> str:
    return f"{f.first_name()} {f.last_name()}"


def _phone(f: Any, rng: random.Random) -> str:
    # Extensions ("x1234") are dropped: they are not part of the number a reader would dial.
    return str(f.phone_number()).split("x")[0].strip()


def _ssn(f: Any, rng: random.Random) -> str:
    digits = "".join(str(rng.randint(0, 9)) for _ in range(9))
    area = rng.choice([digits[:3], "078", "123", "219"])
    body = f"{area}{digits[3:]}"
    return rng.choice(["{}-{}-{}", "{} {} {}", "{}{}{}"]).format(body[:3], body[3:5], body[5:])


def _card(f: Any, rng: random.Random) -> str:
    number = str(f.credit_card_number())
    style = rng.choice(["plain", "spaces", "dashes"])
    if style == "plain" or len(number) not in (15, 16):
        return number
    sep = " " if style == "spaces" else "-"
    if len(number) == 15:
        return sep.join((number[:4], number[4:10], number[10:]))
    return sep.join(number[i : i + 4] for i in range(0, 16, 4))


def _iban(f: Any, rng: random.Random) -> str:
    iban = str(f.iban())
    style = rng.choice(["plain", "grouped", "lower", "grouped_lower"])
    if "grouped" in style:
        iban = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    return iban.lower() if "lower" in style else iban


def _licence(f: Any, rng: random.Random) -> str:
    letter = chr(rng.randint(65, 90))
    digits = "".join(str(rng.randint(0, 9)) for _ in range(14))
    formats = [
        f"{letter}{digits[:7]}",  # CA-style
        f"{letter}{digits[:12]}",  # FL/IL-style
        f"{letter}{digits[:3]}-{digits[3:6]}-{digits[6:8]}-{digits[8:11]}-{digits[11]}",
        digits[:9],  # NY-style
        f"{digits[:3]} {digits[3:6]} {digits[6:9]}",
        digits[:8],  # TX-style
        f"{letter}{chr(rng.randint(65, 90))}{digits[:6]}",
    ]
    return rng.choice(formats)


def _passport(f: Any, rng: random.Random) -> str:
    return str(f.passport_number())


def _dob(f: Any, rng: random.Random) -> str:
    born = f.date_of_birth(minimum_age=18, maximum_age=90)
    pattern = rng.choice(["%m/%d/%Y", "%d/%m/%Y", "%B %d, %Y", "%d %B %Y", "%Y-%m-%d", "%d.%m.%Y"])
    return str(born.strftime(pattern)).replace(" 0", " ")


def _url(f: Any, rng: random.Random) -> str:
    host = f.domain_name()
    user = f.user_name()
    path = rng.choice(["u", "users", "profile", "~", "members", "staff", "about", "portfolio"])
    scheme = rng.choice(["https://", "http://", "https://www."])
    return f"{scheme}{host}/{path}{'' if path == '~' else '/'}{user}"


def _military(f: Any, rng: random.Random) -> str:
    us = f  # military providers exist in en_US only; the caller passes an en_US Faker
    state = us.military_state()
    postcode = us.postcode()
    kind = rng.choice(["ship", "apo", "dpo"])
    if kind == "ship":
        head = f"{us.military_ship()} {us.last_name()}, FPO"
    elif kind == "apo":
        head = f"{us.military_apo()}, APO"
    else:
        head = f"{us.military_dpo()}, DPO"
    return f"{head} {state} {postcode}"


def _id(prefixes: list[str], lengths: tuple[int, int]) -> Callable[[Any, random.Random], str]:
    def make(f: Any, rng: random.Random) -> str:
        digits = "".join(str(rng.randint(0, 9)) for _ in range(rng.randint(*lengths)))
        prefix = rng.choice(prefixes)
        style = rng.choice(["plain", "dash", "split", "slash", "space"])
        if style == "split" and len(digits) > 4:
            body = f"{digits[:2]}-{digits[2:]}"
        elif style == "slash" and len(digits) > 4:
            body = f"{digits[:4]}/{digits[4:]}"
        else:
            body = digits
        if not prefix:
            return body
        sep = {"plain": "", "dash": "-", "split": "-", "slash": "/", "space": " "}[style]
        return f"{prefix}{sep}{body}"

    return make


SLOTS: dict[str, Slot] = {
    "PERSON": Slot("PERSON", _person, _name_variant),
    "PERSON2": Slot("PERSON", _person, _name_variant),
    "EMAIL": Slot("EMAIL_ADDRESS", lambda f, r: f.email()),
    "PHONE": Slot("PHONE_NUMBER", _phone, _digits_variant),
    "SSN": Slot("US_SSN", _ssn, _digits_variant),
    "CARD": Slot("CREDIT_CARD", _card, _digits_variant),
    "IBAN": Slot("IBAN_CODE", _iban),
    "IP": Slot("IP_ADDRESS", lambda f, r: r.choice([f.ipv4_public(), f.ipv6()])),
    "MAC": Slot("MAC_ADDRESS", lambda f, r: f.mac_address()),
    "LICENCE": Slot("US_DRIVER_LICENSE", _licence, _digits_variant),
    "PASSPORT": Slot("US_PASSPORT", _passport),
    "DOB": Slot("DATE_OF_BIRTH", _dob),
    "URL": Slot("URL", _url),
    "MILITARY": Slot("STREET_ADDRESS", _military),
    "EMPLOYEE": Slot("EMPLOYEE_ID", _id(["", "E", "HR", "EMP", "PN"], (5, 8)), _digits_variant),
    "MRN": Slot("MEDICAL_RECORD_NUMBER", _id(["", "MRN", "MR", "H"], (6, 9)), _digits_variant),
    "CASE": Slot("CASE_NUMBER", _id(["", "CV", "CL", "HR", "GR"], (5, 8)), _digits_variant),
    "POLICY": Slot("POLICY_NUMBER", _id(["", "POL", "GRP", "LF", "PLN"], (6, 10)), _digits_variant),
    "MEMBER": Slot("HEALTH_PLAN_ID", _id(["", "MBR", "XJH", "W"], (7, 10)), _digits_variant),
}

# {ADDRESS} is a street line, a town and a postcode (three labels); the rest are SLOTS.
COMMON = [
    "Correspondence for {PERSON} should go to {ADDRESS}.",
    "{PERSON} can be reached by e-mail ({EMAIL}) or by telephone on {PHONE}.",
    "Best number for {PERSON} during the day: {PHONE}.",
    "The online account was last accessed from {IP}; the laptop's MAC is {MAC}.",
    "A refund of the deposit will be wired to {IBAN}.",
    "The charge appeared on the credit card {CARD} last month.",
    "SSN on file for {PERSON}: {SSN}.",
    "Her social security no. is {SSN} according to the intake form.",
    "Identity was checked against passport no. {PASSPORT} and driver's license {LICENCE}.",
    "{PERSON} (date of birth {DOB}) attended in person.",
    "Personal page: {URL}",
    "Deployed address: {MILITARY}.",
    "Please copy {PERSON2} on anything sent to {EMAIL}.",
]
DOMAIN = {
    "legal": [
        "Counsel for the claimant, {PERSON}, lodged the bundle under case ref {CASE}.",
        "This Agreement is made between {PERSON} of {ADDRESS} and the Company.",
        "The insured's policy number is {POLICY} and the claim was declined.",
        "Served on {PERSON2}, DOB {DOB}, at the address given.",
        "In the matter of {CASE}, the witness {PERSON} gave evidence.",
        "Signed: {PERSON}\nWitness: {PERSON2}",
    ],
    "hr": [
        "Payroll record {EMPLOYEE} belongs to {PERSON}, who starts on Monday.",
        "Grievance {CASE} was raised by {PERSON} against a line manager.",
        "Pension scheme policy no. {POLICY} transfers with the employee.",
        "Staff number {EMPLOYEE}: {PERSON}, born {DOB}.",
        "Emergency contact for {PERSON}: {PERSON2}, {PHONE}.",
        "Right-to-work check: passport number {PASSPORT}, seen by {PERSON2}.",
    ],
    "medical": [
        "Patient {PERSON}, MRN {MRN}, was admitted overnight.",
        "Hospital record {MRN} lists {PERSON2} as next of kin.",
        "Insurance member ID {MEMBER}; subscriber {PERSON}.",
        "{PERSON} (DOB: {DOB}) reports chest pain since yesterday.",
        "Discharge summary for {PERSON} sent to the GP at {ADDRESS}.",
        "Referred by Dr. {PERSON2}; callback number {PHONE}.",
    ],
}
HEADINGS = {
    "legal": ["WITHOUT PREJUDICE", "Heads of Terms", "Statement of Case"],
    "hr": ["Confidential - HR", "Case File", "Employee Relations Note"],
    "medical": ["Progress Note", "Admission Summary", "Triage Record"],
}
FILLER = [
    "No further action is needed at this stage.",
    "The parties will review the position in two weeks.",
    "All documents were scanned and filed.",
    "This note was dictated and later checked.",
]


class IndependentGenerator:
    """Seeded documents from the templates above and Faker's en_US and en_GB providers."""

    def __init__(self, seed: int = SEED) -> None:
        from faker import Faker as _Faker

        self.rng = random.Random(seed)
        self.fakers = {}
        for offset, locale in enumerate(LOCALES):
            faker = _Faker(locale)
            faker.seed_instance(seed + offset)
            self.fakers[locale] = faker

    def documents(self, per_domain: int) -> list[Document]:
        """`per_domain` documents for each of legal, HR and medical."""
        return [self._document(domain) for domain in DOMAIN for _ in range(per_domain)]

    def _document(self, domain: str) -> Document:
        rng = self.rng
        locale = rng.choice(LOCALES)
        faker = self.fakers[locale]
        b = _Builder(domain)
        b.text(rng.choice(HEADINGS[domain]) + "\n\n")
        templates = rng.sample(COMMON, 4) + rng.sample(DOMAIN[domain], 3)
        rng.shuffle(templates)
        for index, template in enumerate(templates):
            self._sentence(b, template, faker, domain)
            b.text("\n" if index % 3 == 2 else " ")
            if rng.random() < 0.3:
                b.text(rng.choice(FILLER) + " ")
        return b.document()

    def _sentence(self, b: _Builder, template: str, faker: Any, domain: str) -> None:
        rng = self.rng
        parts = template.replace("{", "\x00{").replace("}", "}\x00").split("\x00")
        for part in parts:
            if not (part.startswith("{") and part.endswith("}")):
                b.text(part)
                continue
            name = part[1:-1]
            if name == "ADDRESS":
                street = f"{faker.building_number()} {faker.street_name()}"
                b.value("STREET_ADDRESS", street, street, "none")
                b.text(f", {faker.city()} ")
                code = faker.postcode()
                b.value("POSTAL_CODE", code, code, "none")
                continue
            slot = SLOTS[name]
            source = self.fakers["en_US"] if name in ("MILITARY", "SSN") else faker
            value = slot.make(source, rng)
            written, kind = value, "none"
            if slot.variant is not None and rng.random() < OBFUSCATED_SHARE:
                written, kind = slot.variant(value, rng)
                if written == value:  # nothing to vary (no separator to replace)
                    kind = "none"
            if name == "MILITARY":
                kind = "military"
            b.value(slot.entity, value, written, kind)
