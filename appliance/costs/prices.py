"""The frontier price table: US dollars per million input and output tokens.

Shipped defaults are the providers' published list prices for standard (non-batch, non-cached)
API use; sites override or extend them with the `frontier_prices` setting. The reference model
(`frontier_reference_model`) is what an on-prem request is compared with.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Price:
    """List price per million tokens."""

    input_per_m: float
    output_per_m: float


DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "o3": Price(2.00, 8.00),
    "claude-sonnet-4": Price(3.00, 15.00),
    "claude-3-5-haiku": Price(0.80, 4.00),
    "claude-opus-4": Price(15.00, 75.00),
    "gemini-2.5-pro": Price(1.25, 10.00),
    "gemini-2.5-flash": Price(0.30, 2.50),
}


def price_table(overrides: dict[str, tuple[float, float]]) -> dict[str, Price]:
    """The shipped table with the site's overrides (model -> (input, output) per million)."""
    table = dict(DEFAULT_PRICES)
    for model, (input_per_m, output_per_m) in overrides.items():
        table[model] = Price(input_per_m, output_per_m)
    return table
