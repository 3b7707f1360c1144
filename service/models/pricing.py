"""What training costs: providers' prices and local training speed, from `pricing.json`.

Estimates are ranges: the token count is ours, the bill is the provider's (see the file's
`token_margin`), and local speed varies between runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

PRICING_FILE = Path(__file__).with_name("pricing.json")


@dataclass(frozen=True)
class Range:
    """A low and a high estimate."""

    low: float
    high: float

    def as_dict(self, digits: int = 4) -> dict[str, float]:
        """Return {low, high}, rounded."""
        return {"low": round(self.low, digits), "high": round(self.high, digits)}


@cache
def pricing() -> dict[str, Any]:
    """Return the pricing file's content (read once per process)."""
    data: dict[str, Any] = json.loads(PRICING_FILE.read_text(encoding="utf-8"))
    return data


def training_price(model_id: str) -> float | None:
    """Return the USD price per million trained tokens of a provider's base model, if listed."""
    entry = pricing()["models"].get(model_id)
    return None if entry is None else float(entry["training_per_million"])


def training_cost(model_id: str, trained_tokens: int) -> float | None:
    """Return what training `trained_tokens` on a provider's base costs, or None when free."""
    price = training_price(model_id)
    return None if price is None else round(trained_tokens / 1_000_000 * price, 6)


def estimate(
    billed_tokens: int, *, price_per_million: float | None, parameters: int | None
) -> dict[str, Any]:
    """Return a job's estimate: its cost range where billed, else its local compute time."""
    return {
        "billed_tokens": billed_tokens,
        "cost_usd": None
        if price_per_million is None
        else cost_range(billed_tokens, price_per_million).as_dict(),
        "compute_seconds": compute_seconds(billed_tokens, parameters).as_dict(1)
        if price_per_million is None
        else None,
    }


def cost_range(billed_tokens: int, price_per_million: float) -> Range:
    """Return the cost range in USD of training `billed_tokens` at a price."""
    margin = pricing()["token_margin"]
    cost = billed_tokens / 1_000_000 * price_per_million
    return Range(cost * float(margin["low"]), cost * float(margin["high"]))


def compute_seconds(billed_tokens: int, parameters: int | None) -> Range:
    """Return the training time range of a local job on the reference machine (2 CPU cores)."""
    local = pricing()["local"]
    scale = (parameters or local["reference_parameters"]) / local["reference_parameters"]
    speed = local["tokens_per_second"]
    return Range(
        billed_tokens * scale / float(speed["high"]), billed_tokens * scale / float(speed["low"])
    )
