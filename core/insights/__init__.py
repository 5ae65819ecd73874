"""Insights: the rules that turn a window of usage into recommendations, and their savings formulas. Pure.

Input: the window's usage grouped by (project, provider, model, region, routing tier) — `Usage`, built by
`warehouse.insights` from the rollups — and the factor set (tiers, PUE, grid, price book) with the org's
prices (`price_of`). Output: `Finding`s, each with the numbers it rests on (docs/insights.md writes the rules
and formulas out).

Projection (MODEL_RIGHTSIZING, REASONING_OVERUSE): the same token counts priced and emitted under another
model — its tier's J/token, its provider's PUE and grid at the region it was used in, its prices:

    saved_g    = (co2(current model, tokens) − co2(alternative, tokens)) × 1000       (core.methodology)
    saved_usd  =  cost(current model, tokens) − cost(alternative, tokens)             (core.pricing)

PROMPT_CACHING: a share of the input moved from uncached to cached at the model's own factors:

    moved      = max(0, CACHE_TARGET_SHARE × input − cached)
    saved_g    = moved × (J_prefill − J_cached) × PUE × grid / 3.6e6 × 1000
    saved_usd  = moved × (p_input − p_cached) / 1e6

REGION_SHIFT: the same tokens and model at the provider's region with the lowest grid in the factor set
(projected as above). BATCH_ELIGIBLE: BATCH_DISCOUNT × the cost of poller-only workloads (no CO2e claimed).

Every saving is annualised from the window: × 365 / window days.
"""

from core.insights import measured
from core.insights.model import (
    BATCH_DISCOUNT,
    CACHE_TARGET_SHARE,
    DAYS_PER_YEAR,
    REC_TYPES,
    Finding,
    PriceOf,
    Routing,
    Usage,
    annualise,
    book_prices,
    caching_savings,
    footprint_of,
    priority,
    projected_savings,
)
from core.insights.rules import (
    batch_eligible,
    cleanest_region,
    data_quality,
    prompt_caching,
    reasoning_overuse,
    region_shift,
    rightsizing,
    run,
)

__all__ = [
    "BATCH_DISCOUNT",
    "CACHE_TARGET_SHARE",
    "DAYS_PER_YEAR",
    "REC_TYPES",
    "Finding",
    "PriceOf",
    "Routing",
    "Usage",
    "annualise",
    "batch_eligible",
    "book_prices",
    "caching_savings",
    "cleanest_region",
    "data_quality",
    "measured",
    "footprint_of",
    "priority",
    "projected_savings",
    "prompt_caching",
    "reasoning_overuse",
    "region_shift",
    "rightsizing",
    "run",
]
