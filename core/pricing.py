"""Price of usage from its token counts and per-million-token prices: the one cost formula.

A price in USD per 1M tokens times a token count is micro-USD, so

    cost (µUSD) = uncached_in × p_input + cached_in × p_cached + cache_write × p_cache_write + out × p_output
    cost (USD)  = cost (µUSD) / 1e6

`cost_exact_micros` is that formula; everything else here is a view of it. The gateway prices a request
with one input and one output price (`price_micros`: the same formula with every input token at p_input,
rounded up to whole micro-USD — what is charged and signed in receipts; `price_usd`: unrounded, what
routing ranks upstreams by). Enrichment prices an event's four token classes with `Prices` from the factor
set's price book or an org's override (`cost_usd`).
"""

from __future__ import annotations

import math
from typing import NamedTuple


class Prices(NamedTuple):
    """List prices, USD per 1,000,000 tokens, and where they came from."""

    input: float  # uncached input token
    cached: float  # input token read from the prompt cache
    cache_write: float  # input token written to the prompt cache
    output: float  # output token, incl. reasoning tokens
    source: str  # e.g. "price book pb-2026-12-03 (gpt-4o*)" or "org override …"


def cost_exact_micros(
    uncached: int, cached: int, cache_write: int, output: int, p_input: float, p_cached: float,
    p_cache_write: float, p_output: float,
) -> float:  # fmt: skip
    """Σ tokens × USD per 1M tokens = micro-USD, unrounded. The one place the cost formula lives."""
    return uncached * p_input + cached * p_cached + cache_write * p_cache_write + output * p_output


def cost_usd(uncached: int, cached: int, cache_write: int, output: int, prices: Prices) -> float:
    """The cost of an event's tokens at `prices`, USD, unrounded."""
    if uncached < 0 or cached < 0 or cache_write < 0 or output < 0:
        raise ValueError(f"token counts must be >= 0, got {(uncached, cached, cache_write, output)}")
    micros = cost_exact_micros(
        uncached, cached, cache_write, output, prices.input, prices.cached, prices.cache_write, prices.output
    )
    return float(micros / 1e6)


def price_exact_micros(
    input_tokens: int, output_tokens: int, price_in_per_1m: float, price_out_per_1m: float
) -> float:
    """The price in micro-USD, unrounded (every input token at the input price)."""
    return cost_exact_micros(input_tokens, 0, 0, output_tokens, price_in_per_1m, 0.0, 0.0, price_out_per_1m)


def price_micros(
    input_tokens: int, output_tokens: int, price_in_per_1m: float, price_out_per_1m: float
) -> int:
    """The price in whole micro-USD, rounded up."""
    return math.ceil(price_exact_micros(input_tokens, output_tokens, price_in_per_1m, price_out_per_1m))


def price_usd(
    input_tokens: int, output_tokens: int, price_in_per_1m: float, price_out_per_1m: float
) -> float:
    """The price in USD, unrounded."""
    return price_exact_micros(input_tokens, output_tokens, price_in_per_1m, price_out_per_1m) / 1e6
