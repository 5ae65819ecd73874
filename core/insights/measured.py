"""Measured savings of an applied recommendation: the counterfactual over the traffic the change affected, from
what the warehouse recorded since it was applied (`Usage` groups of that window). Pure.

    MODEL_RIGHTSIZING, REASONING_OVERUSE   the alternative model's traffic in the project, on the routing tiers
        the recommendation named, beyond the share of that traffic it already had (`evidence.alternative_share`
        = s0, by tokens, over the old and the alternative model):  f × (Σ footprint(old provider, model,
        region; its tokens) − Σ what it emitted), f = (s1 − s0) ÷ s1 where s1 is its share since the change
        (an org that already sent a fifth of that traffic to the smaller model is credited only with what moved
        since; a share that fell gives a negative saving; no alternative traffic since: 0)
    REGION_SHIFT   the model's traffic in the project at the alternative region:
        Σ footprint(old region; its tokens) − Σ what it emitted
    PROMPT_CACHING   the model's traffic in the project and region: the tokens cached beyond the share cached
        before (`evidence.cached_share`): (Σ cached − share × Σ input) × (J_prefill − J_cached) × PUE × grid
    BATCH_ELIGIBLE, DATA_QUALITY   not measurable from the warehouse (None)

A measured saving may be negative (the change made things worse). Cost is None when a price is missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from core.insights.model import PriceOf, Usage, caching_savings, footprint_of
from core.methodology import FactorSet

MEASURABLE = frozenset({"MODEL_RIGHTSIZING", "REASONING_OVERUSE", "REGION_SHIFT", "PROMPT_CACHING"})


class Measured(NamedTuple):
    co2e_grams: float
    cost: float | None
    events: int
    requests: int


def _tier(u: Usage) -> str:
    return u.routing_tier or "unclassified"


def _counterfactual(
    fs: FactorSet, rows: list[Usage], old: tuple[str, str, str], price_of: PriceOf
) -> Measured:
    g, usd = 0.0, 0.0
    priced = True
    for u in rows:
        g0, c0 = footprint_of(fs, *old, u.tokens, price_of)
        g += g0 - u.co2_g
        if c0 is None or u.cost_usd is None:
            priced = False
        else:
            usd += c0 - u.cost_usd
    return Measured(g, usd if priced else None, sum(u.events for u in rows), sum(u.requests for u in rows))


def measured_savings(
    fs: FactorSet,
    rec_type: str,
    project_id: str | None,
    model: str | None,
    evidence: Mapping[str, Any],
    usage: list[Usage],
    price_of: PriceOf,
) -> Measured | None:
    """The saving the change brought over `usage` (the window since it was applied); None when the type is
    not measurable."""
    if rec_type not in MEASURABLE or model is None:
        return None
    provider, region = evidence["provider"], evidence["region"]
    mine = [u for u in usage if u.project_id == project_id]
    if rec_type in ("MODEL_RIGHTSIZING", "REASONING_OVERUSE"):
        alt = evidence["alternative"]
        tiers = set(evidence["routing_tiers"])
        rows = [
            u for u in mine if (u.provider, u.model) == (alt["provider"], alt["model"]) and _tier(u) in tiers
        ]
        old = [u for u in mine if (u.provider, u.model) == (provider, model) and _tier(u) in tiers]
        moved = _moved_part(rows, old, float(evidence.get("alternative_share", 0.0)))
        m = _counterfactual(fs, rows, (provider, model, region), price_of)
        return m._replace(co2e_grams=moved * m.co2e_grams, cost=None if m.cost is None else moved * m.cost)
    if rec_type == "REGION_SHIFT":
        alt = evidence["alternative"]
        rows = [u for u in mine if (u.provider, u.model, u.region) == (provider, model, alt["region"])]
        return _counterfactual(fs, rows, (provider, model, region), price_of)
    rows = [u for u in mine if (u.provider, u.model, u.region) == (provider, model, region)]
    if not rows:
        return Measured(0.0, 0.0, 0, 0)
    tokens = [sum(getattr(u, k) for u in rows) for k in ("uncached", "cached", "cache_creation", "output")]
    events, requests = sum(u.events for u in rows), sum(u.requests for u in rows)
    merged = Usage(project_id or "", provider, model, rows[0].model_tier, region, "", "", "", events, requests,
                   *tokens, 0.0, None, 0)  # fmt: skip
    return _cached_beyond(fs, merged, float(evidence["cached_share"]), price_of)


def _moved_part(alt: list[Usage], old: list[Usage], share_before: float) -> float:
    """The part of the alternative's traffic that moved to it: (s1 − s0) ÷ s1, s1 its token share now."""
    a = sum(u.input_tokens + u.output for u in alt)
    if a == 0:
        return 0.0
    s1 = a / (a + sum(u.input_tokens + u.output for u in old))
    return (s1 - share_before) / s1


def _cached_beyond(fs: FactorSet, u: Usage, share: float, price_of: PriceOf) -> Measured:
    """(Σ cached − share × Σ input) × the per-token cached saving, signed."""
    beyond = u.cached - share * u.input_tokens
    _, g_per, usd_per = caching_savings(fs, _one_token(u), price_of, target=1.0)
    return Measured(beyond * g_per, None if usd_per is None else beyond * usd_per, u.events, u.requests)


def _one_token(u: Usage) -> Usage:
    """A group of one uncached input token (the per-token saving of caching it) at `u`'s model and place."""
    return Usage(u.project_id, u.provider, u.model, u.model_tier, u.region, "", "", "", 1, 1, 1, 0, 0, 0, 0.0,
                 None, 0)  # fmt: skip
