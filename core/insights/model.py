"""The insights engine's vocabulary and formulas: thresholds, `Usage` (a group of the window's usage), `Finding`
(one recommendation), and the savings formulas (projection under another model or region, caching, annualising).
The rules that use them are in `core.insights.rules`; the package docstring writes the formulas out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from core.methodology import (
    FactorSet,
    Prices,
    compute_footprint,
    match_model,
    place,
    price_for,
)

REC_TYPES: tuple[str, ...] = (
    "MODEL_RIGHTSIZING",
    "PROMPT_CACHING",
    "REGION_SHIFT",
    "BATCH_ELIGIBLE",
    "REASONING_OVERUSE",
    "DATA_QUALITY",
)
Scope = Literal["org", "project", "workload", "model"]
Priority = Literal["high", "medium", "low"]

LOW_ROUTING_TIERS = frozenset({"L0", "L1"})  # lookup, extraction
BIG_TIERS = frozenset({"large", "medium"})  # right-sizing candidates (reasoning tiers: REASONING_OVERUSE)
REASONING_TIERS = frozenset({"reasoning", "reasoning-small"})
SMALL_TIER = "small"
SHORT_OUTPUT_TOKENS = 300  # output tokens per request at or below which a request is "short"
LONG_PROMPT_TOKENS = 1000  # input tokens per request at or above which a prompt is "long"
LOW_CACHED_SHARE = 0.2  # a cached share of the input below this is "low"
CACHE_TARGET_SHARE = 0.5  # OUR ASSUMPTION: the cached share a long, repeated prefix reaches
ESTIMATED_SHARE = 0.25  # DATA_QUALITY when at least this share of the events are estimates
MIN_REQUESTS = 10  # a group with fewer requests proposes nothing
HIGH_PRIORITY_G_PER_YEAR = 10_000.0  # annual CO2e saving (g) from which a finding is high priority
MEDIUM_PRIORITY_G_PER_YEAR = 1_000.0
DAYS_PER_YEAR = 365.0
REGION_SHIFT_MAX_RATIO = (
    0.8  # REGION_SHIFT when another region's grid is at most this share of the current one
)
# Batch APIs: half the list price (OpenAI, Anthropic, Azure OpenAI, Google, Bedrock and Mistral state a 50%
# batch discount on their pricing pages). The factor set has no batch energy factor: no CO2e saving is claimed.
BATCH_DISCOUNT = 0.5
BATCH_PROVIDERS = frozenset({"openai", "anthropic", "azure", "google", "aws", "mistral"})

PriceOf = Callable[[str, str], Prices | None]


@dataclass(frozen=True)
class Usage:
    """One group of the window's usage: sums of the rollups over a (project, provider, model, region,
    routing tier). `routing_tier` is '' for traffic the gateway did not classify (pollers, fixed models)."""

    project_id: str
    provider: str
    model: str
    model_tier: str
    region: str
    routing_tier: str
    workload_id: str
    source: str
    events: int
    requests: int
    uncached: int
    cached: int
    cache_creation: int
    output: int
    co2_g: float
    cost_usd: float | None
    estimated_events: int
    energy_j: float = 0.0  # facility energy (the score's grid and intensity dimensions)

    @property
    def input_tokens(self) -> int:
        return self.uncached + self.cached + self.cache_creation

    @property
    def tokens(self) -> tuple[int, int, int, int]:
        return self.uncached, self.cached, self.cache_creation, self.output


@dataclass(frozen=True)
class Routing:
    """The window's requests carrying the gateway's routing labels (the score's routing and waste
    dimensions): how many, how many asked for model "auto", the upstream attempts that failed before one
    served them."""

    requests: int = 0
    auto: int = 0
    failed_attempts: int = 0


@dataclass(frozen=True)
class Finding:
    type: str
    scope: Scope
    subject: str  # with type and scope: the identity a re-run keeps
    project_id: str | None
    model: str | None
    priority: Priority
    description: str
    potential_savings_co2e_grams: float
    potential_savings_cost: float | None
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def identity(self) -> str:
        return f"{self.type}|{self.scope}|{self.subject}"


def annualise(value: float, window_days: float) -> float:
    """A window's figure as a year's: × 365 / window days."""
    return value * DAYS_PER_YEAR / window_days


def priority(saved_g_per_year: float) -> Priority:
    if saved_g_per_year >= HIGH_PRIORITY_G_PER_YEAR:
        return "high"
    return "medium" if saved_g_per_year >= MEDIUM_PRIORITY_G_PER_YEAR else "low"


def footprint_of(
    fs: FactorSet,
    provider: str,
    model: str,
    region: str,
    tokens: tuple[int, int, int, int],
    price_of: PriceOf,
) -> tuple[float, float | None]:
    """(g CO2e location-based, USD or None without a price) of `tokens` under (provider, model, region)."""
    f = compute_footprint(
        fs,
        provider=provider,
        model=model,
        region=region or None,
        input_tokens_uncached=tokens[0],
        input_tokens_cached=tokens[1],
        input_tokens_cache_creation=tokens[2],
        output_tokens=tokens[3],
        prices=price_of(provider, model),
    )
    return f.co2_kg * 1000.0, f.cost_usd


def projected_savings(
    fs: FactorSet,
    tokens: tuple[int, int, int, int],
    current: tuple[str, str, str],
    alternative: tuple[str, str, str],
    price_of: PriceOf,
) -> tuple[float, float | None]:
    """(g, USD) the same tokens would save under `alternative` (provider, model, region) instead of
    `current`; USD None unless both have a price."""
    g0, c0 = footprint_of(fs, *current, tokens, price_of)
    g1, c1 = footprint_of(fs, *alternative, tokens, price_of)
    return g0 - g1, (None if c0 is None or c1 is None else c0 - c1)


def caching_savings(
    fs: FactorSet, u: Usage, price_of: PriceOf, target: float = CACHE_TARGET_SHARE
) -> tuple[int, float, float | None]:
    """(tokens moved to the cache, g, USD) when `target` of the group's input is read from the cache."""
    moved = max(0, int(target * u.input_tokens) - u.cached)
    tier = fs.tiers[match_model(fs, u.model).tier].point
    where = place(fs, u.provider, u.region or None)
    saved_g = moved * (tier.prefill - tier.cached) * where.pue * where.grid / 3.6e6 * 1000.0
    p = price_of(u.provider, u.model)
    saved_usd = None if p is None else moved * (p.input - p.cached) / 1e6
    return moved, saved_g, saved_usd


def book_prices(fs: FactorSet) -> PriceOf:
    return lambda provider, model: price_for(fs, provider, model)
