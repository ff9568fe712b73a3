"""The two synthetic golden sets the product ships, and the script that makes them.

- `hr-tickets`: 200 HR help-desk tickets to classify (payroll, leave, benefits, it_access,
  facilities); some mention a made-up employee name or e-mail address, so the set's policy has
  identifiers to handle, as real tickets would.
- `invoices`: 100 invoice notes to extract into `{invoice_number, vendor, total, currency}`.

Both are generated from fixed templates with a fixed seed, so `python -m appliance.eval.samples`
rewrites byte-identical files (a test checks the committed files against the generator). Every
name, address and number is invented.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.errors import Conflict

if TYPE_CHECKING:
    from appliance.auth.actor import Actor
    from appliance.eval.service import Evaluation

SAMPLES_DIR = Path(__file__).resolve().parent / "sample_data"
SEED = 20261128

HR_LABELS = ["payroll", "leave", "benefits", "it_access", "facilities"]
INVOICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "invoice_number": {"type": "string"},
        "vendor": {"type": "string"},
        "total": {"type": "number"},
        "currency": {"type": "string", "enum": ["EUR", "USD", "GBP", "CHF"]},
    },
    "required": ["invoice_number", "vendor", "total", "currency"],
}

_HR: dict[str, list[str]] = {
    "payroll": [
        "My {month} payslip shows {n} hours of overtime missing.",
        "I was paid twice for {month}; how do I return the extra salary?",
        "The tax code on my payslip changed in {month} and my net pay dropped.",
        "When will the salary increase from my review show up on my pay?",
        "My bonus was not included in the {month} payroll run.",
        "Please correct the bank account my salary is paid into.",
    ],
    "leave": [
        "I would like to book {n} days of annual leave starting next Monday.",
        "How many vacation days do I have left this year?",
        "I need to request parental leave from {month}.",
        "Can I carry over {n} unused holiday days into next year?",
        "I was sick for {n} days last week; how do I record sick leave?",
        "Please cancel my approved time off in {month}.",
    ],
    "benefits": [
        "How do I add my partner to the health insurance plan?",
        "What is the employer contribution to the pension scheme?",
        "I want to enrol in the cycle-to-work benefit.",
        "Does the dental plan cover orthodontic treatment?",
        "How do I claim my gym membership allowance for {month}?",
        "Can I change my life insurance beneficiary?",
    ],
    "it_access": [
        "I cannot log in to the HR portal since the password reset.",
        "My laptop account is locked after {n} failed attempts.",
        "Please give me access to the shared payroll folder on the file server.",
        "The VPN rejects my token since {month}.",
        "I need a licence for the spreadsheet software on my new laptop.",
        "My e-mail inbox is full and I cannot send messages.",
    ],
    "facilities": [
        "The air conditioning on floor {n} has been broken for a week.",
        "My desk chair is damaged; can I get a replacement?",
        "The badge reader at the side entrance does not open the door.",
        "Please book meeting room {n} for the team workshop.",
        "The kitchen sink on floor {n} is leaking.",
        "Can I get a parking space assigned from {month}?",
    ],
}
_OPENERS = ["", "Hello, ", "Hi team, ", "Good morning. ", "Quick question: "]
_PEOPLE = [
    ("Maria Lopez", "maria.lopez"),
    ("Daniel Okafor", "daniel.okafor"),
    ("Priya Raman", "priya.raman"),
    ("Tom Becker", "tom.becker"),
    ("Aiko Tanaka", "aiko.tanaka"),
    ("Lena Fischer", "lena.fischer"),
]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "September"]

_VENDORS = [
    "Acme Office Supplies",
    "Northwind Logistics",
    "Blue Harbor Consulting",
    "Greenleaf Catering",
    "Pinnacle Software",
    "Orbit Cleaning Services",
    "Summit Print Works",
    "Atlas Hardware",
]
_INVOICE_TEMPLATES = [
    "Invoice {number} from {vendor}. Amount due: {total} {currency}. Payment within 30 days.",
    "{vendor} billed us {total} {currency} on invoice {number} for last month's services.",
    "Please pay invoice {number}: {currency} {total}, issued by {vendor}.",
    "Received invoice no. {number} ({vendor}) totalling {total} {currency}, VAT included.",
    "Supplier: {vendor}\nInvoice number: {number}\nTotal: {total} {currency}",
]
_CURRENCIES = ["EUR", "USD", "GBP", "CHF"]


def hr_tickets(count: int = 200) -> list[dict[str, Any]]:
    """`count` labelled tickets, labels in turn so every class is equally present."""
    rng = random.Random(SEED)  # noqa: S311 - a fixed seed makes the files reproducible
    rows: list[dict[str, Any]] = []
    for i in range(count):
        label = HR_LABELS[i % len(HR_LABELS)]
        text = rng.choice(_HR[label]).format(n=rng.randint(2, 9), month=rng.choice(_MONTHS))
        text = rng.choice(_OPENERS) + text
        if rng.random() < 0.3:
            name, mail = rng.choice(_PEOPLE)
            text += f" Thanks, {name} ({mail}@example.com)"
        rows.append({"id": f"hr-{i + 1:03d}", "input": text, "expected": label})
    rng.shuffle(rows)
    return rows


def invoices(count: int = 100) -> list[dict[str, Any]]:
    """`count` invoice notes with the fields to extract."""
    rng = random.Random(SEED + 1)  # noqa: S311 - reproducible, not secret
    rows: list[dict[str, Any]] = []
    for i in range(count):
        vendor = rng.choice(_VENDORS)
        number = f"INV-{rng.randint(2023, 2026)}-{rng.randint(1, 9999):04d}"
        total = round(rng.randint(1000, 500_000) / 100, 2)
        currency = rng.choice(_CURRENCIES)
        text = rng.choice(_INVOICE_TEMPLATES).format(
            number=number, vendor=vendor, total=f"{total:,.2f}", currency=currency
        )
        rows.append(
            {
                "id": f"inv-{i + 1:03d}",
                "input": text,
                "expected": {
                    "invoice_number": number,
                    "vendor": vendor,
                    "total": total,
                    "currency": currency,
                },
            }
        )
    return rows


SAMPLES: dict[str, dict[str, Any]] = {
    "hr-tickets": {
        "task": "classify",
        "file": "hr-tickets.jsonl",
        "make": hr_tickets,
        "params": {"labels": HR_LABELS},
        "description": "200 synthetic HR help-desk tickets, five classes.",
    },
    "invoices": {
        "task": "extract",
        "file": "invoices.jsonl",
        "make": invoices,
        "params": {"schema": INVOICE_SCHEMA},
        "description": "100 synthetic invoice notes: number, vendor, total, currency.",
    },
}
"""Each shipped set: its task, file, generator, task parameters and description."""


def render(rows: list[dict[str, Any]]) -> str:
    """Rows as JSONL text (sorted keys, so the file is stable)."""
    return "".join(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n" for row in rows)


def write_all(directory: Path = SAMPLES_DIR) -> list[Path]:
    """Generate every sample set into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in SAMPLES.values():
        path = directory / spec["file"]
        path.write_text(render(spec["make"]()), encoding="utf-8")
        written.append(path)
    return written


async def load_samples(
    evaluation: Evaluation, actor: Actor, names: list[str] | None = None
) -> list[str]:
    """Create the shipped sets that do not exist yet; returns the names created."""
    created: list[str] = []
    for name in names or list(SAMPLES):
        spec = SAMPLES[name]
        data = (SAMPLES_DIR / spec["file"]).read_bytes()
        try:
            await evaluation.upload(
                actor,
                name=name,
                data=data,
                task=spec["task"],
                fmt="jsonl",
                params=spec["params"],
                description=spec["description"],
            )
        except Conflict:
            continue
        created.append(name)
    return created


if __name__ == "__main__":
    for path in write_all(Path(sys.argv[1]) if len(sys.argv) > 1 else SAMPLES_DIR):
        print(path)
