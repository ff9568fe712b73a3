"""Checksums that identifiers carry: Luhn (payment cards, many account numbers) and ISO 7064
mod-97 (IBAN). A checksum raises a shaped value's score; it never vetoes one that has context."""

from __future__ import annotations

import re


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum (payment cards and many account numbers)."""
    numbers = [int(c) for c in digits if c in "0123456789"]
    if len(numbers) < 2:
        return False
    total = 0
    for index, value in enumerate(reversed(numbers)):
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def mod97_valid(value: str) -> bool:
    """ISO 7064 mod-97 (IBAN): move the first four characters to the end, letters to numbers."""
    compact = re.sub(r"[\s-]", "", value).upper()
    if len(compact) < 5 or not compact.isascii() or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    digits = "".join(str(int(c, 36)) for c in rearranged)
    return int(digits) % 97 == 1
