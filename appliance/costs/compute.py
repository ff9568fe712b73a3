"""Cost arithmetic: node time on-prem, and what the same tokens would cost at list price."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.costs.prices import Price
from appliance.errors import InvalidInput


@dataclass(frozen=True)
class Cost:
    """Both costs of one request, in the price table's currency (US dollars)."""

    onprem: float
    frontier: float
    frontier_model: str


def onprem_cost(cost_per_hour: float, seconds: float) -> float:
    """The node's hourly cost prorated to the seconds this request held it."""
    return cost_per_hour * max(seconds, 0.0) / 3600.0


def frontier_cost(price: Price, prompt_tokens: int, completion_tokens: int) -> float:
    """List price of the same token counts."""
    return (prompt_tokens * price.input_per_m + completion_tokens * price.output_per_m) / 1e6


class CostModel:
    """Prices one request: the serving node's hourly cost and the reference frontier model."""

    def __init__(self, *, prices: dict[str, Price], reference_model: str) -> None:
        if reference_model not in prices:
            raise InvalidInput(
                f"frontier_reference_model '{reference_model}' is not in the price table",
                field="frontier_reference_model",
            )
        self.prices = prices
        self.reference_model = reference_model

    def cost(
        self,
        *,
        cost_per_hour: float,
        seconds: float,
        prompt_tokens: int,
        completion_tokens: int,
        served_by: str | None = None,
    ) -> Cost:
        """Both costs. An external model in the price table is billed at its own price."""
        if served_by is not None and served_by in self.prices:
            # A request that really went to a frontier API costs its list price, not node time.
            billed = frontier_cost(self.prices[served_by], prompt_tokens, completion_tokens)
            onprem = billed
        else:
            onprem = onprem_cost(cost_per_hour, seconds)
        reference = frontier_cost(
            self.prices[self.reference_model], prompt_tokens, completion_tokens
        )
        return Cost(onprem=onprem, frontier=reference, frontier_model=self.reference_model)
