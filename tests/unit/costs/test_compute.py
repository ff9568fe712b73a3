"""On-prem cost from node time, frontier-equivalent cost from the price table."""

from __future__ import annotations

import pytest

from appliance.costs.compute import CostModel, frontier_cost, onprem_cost
from appliance.costs.prices import DEFAULT_PRICES, Price, price_table
from appliance.errors import InvalidInput


def test_onprem_cost_is_hourly_cost_prorated() -> None:
    assert onprem_cost(3.6, 10) == pytest.approx(0.01)
    assert onprem_cost(3.6, -1) == 0.0


def test_frontier_cost_is_per_million_tokens() -> None:
    assert frontier_cost(Price(2.5, 10.0), 1_000_000, 0) == pytest.approx(2.5)
    assert frontier_cost(Price(2.5, 10.0), 200, 100) == pytest.approx(0.0015)


def test_shipped_table_has_input_cheaper_than_output() -> None:
    assert "gpt-4o" in DEFAULT_PRICES
    assert all(p.input_per_m < p.output_per_m for p in DEFAULT_PRICES.values())


def test_overrides_merge_over_the_shipped_table() -> None:
    table = price_table({"gpt-4o": (1.0, 2.0), "house-frontier": (0.5, 0.5)})
    assert table["gpt-4o"] == Price(1.0, 2.0)
    assert table["house-frontier"] == Price(0.5, 0.5)
    assert table["claude-sonnet-4"] == DEFAULT_PRICES["claude-sonnet-4"]


def test_cost_model_prices_both_sides() -> None:
    model = CostModel(prices=price_table({}), reference_model="gpt-4o")
    cost = model.cost(cost_per_hour=0.36, seconds=1.0, prompt_tokens=1000, completion_tokens=100)
    assert cost.onprem == pytest.approx(0.0001)
    assert cost.frontier == pytest.approx(0.0025 + 0.001)
    assert cost.frontier_model == "gpt-4o"


def test_external_model_is_billed_at_its_own_list_price() -> None:
    model = CostModel(prices=price_table({}), reference_model="gpt-4o")
    cost = model.cost(
        cost_per_hour=0.0, seconds=5, prompt_tokens=1_000_000, completion_tokens=0,
        served_by="gpt-4o-mini",
    )  # fmt: skip
    assert cost.onprem == pytest.approx(0.15)


def test_unknown_reference_model_is_a_clear_error() -> None:
    with pytest.raises(InvalidInput) as info:
        CostModel(prices=price_table({}), reference_model="gpt-99")
    assert info.value.field == "frontier_reference_model"
