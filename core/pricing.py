"""Price of a request from its token counts and per-million-token prices.

A price in USD per 1M tokens times a token count is micro-USD, so

    price (µUSD) = input_tokens × price_in_per_1m + output_tokens × price_out_per_1m

`price_micros` rounds that up to whole micro-USD (what is charged and signed in receipts); `price_usd` is
the same figure in USD, unrounded (what routing ranks upstreams by).
"""

from __future__ import annotations

import math


def price_exact_micros(
    input_tokens: int, output_tokens: int, price_in_per_1m: float, price_out_per_1m: float
) -> float:
    """The price in micro-USD, unrounded."""
    return input_tokens * price_in_per_1m + output_tokens * price_out_per_1m


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
