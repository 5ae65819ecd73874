"""The sustainability score: 0–100 overall, from dimension scores that fit AI inference, each saying what
drove it. Pure; over the `Usage` groups of a window (and of the window before it, for the trend).

    model_efficiency   100 × tokens of low-tier traffic (L0/L1, or unclassified with short outputs) served
                       by a model outside the large/medium/reasoning tiers ÷ all such tokens
    cache_efficiency   100 × min(1, cached share of the input of models with a cheaper cached read ÷ 0.5)
    grid_carbon        100 × (1 − energy-weighted grid intensity ÷ 700 g/kWh), floored at 0
    intensity_trend    50 + 50 × (previous − current) ÷ previous g CO2e per 1M tokens, clamped to 0–100
    data_quality       100 × (1 − estimated events ÷ events)
    routing            100 × requests that asked for model "auto" ÷ requests carrying the gateway's routing label
    waste              100 × (1 − failed upstream attempts ÷ all upstream attempts of those requests)

A dimension without data (no low-tier traffic, no cache-capable model, no previous period) is left out and
the weights of the others are scaled up to sum to 1. No usage at all: no score (None).
"""

from __future__ import annotations

from typing import Any

from core.insights.model import (
    BIG_TIERS,
    CACHE_TARGET_SHARE,
    LOW_ROUTING_TIERS,
    REASONING_TIERS,
    SHORT_OUTPUT_TOKENS,
    PriceOf,
    Routing,
    Usage,
)
from core.methodology import J_PER_KWH

WEIGHTS: dict[str, float] = {
    "model_efficiency": 0.20,
    "cache_efficiency": 0.15,
    "grid_carbon": 0.20,
    "intensity_trend": 0.10,
    "data_quality": 0.20,
    "routing": 0.10,
    "waste": 0.05,
}
DIRTY_GRID_G_PER_KWH = 700.0  # scores 0 (coal-heavy grids: India, Hong Kong ~670–680 in v2.0)


def _tokens(u: Usage) -> int:
    return u.input_tokens + u.output


def _clamp(x: float) -> float:
    return max(0.0, min(100.0, x))


def _per_1m(usage: list[Usage]) -> float | None:
    tokens = sum(_tokens(u) for u in usage)
    return None if tokens == 0 else sum(u.co2_g for u in usage) / tokens * 1e6


def dimensions(
    usage: list[Usage], previous: list[Usage], price_of: PriceOf, routing: Routing | None = None
) -> dict[str, dict[str, Any]]:
    """Each dimension with data: {score, drivers}."""
    out: dict[str, dict[str, Any]] = {}
    low = [
        u for u in usage
        if u.routing_tier in LOW_ROUTING_TIERS
        or (u.routing_tier == "" and u.requests > 0 and u.output / u.requests <= SHORT_OUTPUT_TOKENS)
    ]  # fmt: skip
    low_tokens = sum(_tokens(u) for u in low)
    if low_tokens:
        big = sum(_tokens(u) for u in low if u.model_tier in BIG_TIERS | REASONING_TIERS)
        out["model_efficiency"] = {
            "score": 100.0 * (low_tokens - big) / low_tokens,
            "drivers": {"low_tier_tokens": low_tokens, "on_large_or_reasoning_models": big},
        }
    capable = [u for u in usage if (p := price_of(u.provider, u.model)) is not None and p.cached < p.input]
    inp = sum(u.input_tokens for u in capable)
    if inp:
        cached = sum(u.cached for u in capable)
        out["cache_efficiency"] = {
            "score": _clamp(100.0 * cached / inp / CACHE_TARGET_SHARE),
            "drivers": {
                "input_tokens": inp,
                "cached_input_tokens": cached,
                "target_share": CACHE_TARGET_SHARE,
            },
        }
    energy = sum(u.energy_j for u in usage)
    if energy > 0:
        grid = sum(u.co2_g for u in usage) / (energy / J_PER_KWH)
        out["grid_carbon"] = {
            "score": _clamp(100.0 * (1.0 - grid / DIRTY_GRID_G_PER_KWH)),
            "drivers": {"grid_g_per_kwh": grid, "zero_score_at_g_per_kwh": DIRTY_GRID_G_PER_KWH},
        }
    now, before = _per_1m(usage), _per_1m(previous)
    if now is not None and before:
        out["intensity_trend"] = {
            "score": _clamp(50.0 + 50.0 * (before - now) / before),
            "drivers": {"g_per_1m_tokens": now, "previous_g_per_1m_tokens": before},
        }
    events = sum(u.events for u in usage)
    if events:
        estimated = sum(u.estimated_events for u in usage)
        out["data_quality"] = {
            "score": 100.0 * (1.0 - estimated / events),
            "drivers": {"events": events, "estimated_events": estimated},
        }
    if routing is not None and routing.requests > 0:
        out["routing"] = {
            "score": _clamp(100.0 * routing.auto / routing.requests),
            "drivers": {"labelled_requests": routing.requests, "auto_requests": routing.auto},
        }
        attempts = routing.requests + routing.failed_attempts
        out["waste"] = {
            "score": _clamp(100.0 * (1.0 - routing.failed_attempts / attempts)),
            "drivers": {"upstream_attempts": attempts, "failed_attempts": routing.failed_attempts},
        }
    return out


def score(
    usage: list[Usage], previous: list[Usage], price_of: PriceOf, routing: Routing | None = None
) -> dict[str, Any]:
    """{overall_score, dimension_scores, weights}: the weighted mean of the dimensions with data."""
    dims = dimensions(usage, previous, price_of, routing)
    total = sum(WEIGHTS[k] for k in dims)
    weights = {k: WEIGHTS[k] / total for k in dims}
    overall = sum(dims[k]["score"] * w for k, w in weights.items()) if dims else None
    for k, d in dims.items():
        d["weight"] = weights[k]
    return {"overall_score": overall, "dimension_scores": dims, "weights": weights}
