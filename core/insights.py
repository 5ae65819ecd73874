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

Every saving is annualised from the window: × 365 / window days.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from core.methodology import FactorSet, Prices, compute_footprint, match_model, place, price_for

RecType = Literal["MODEL_RIGHTSIZING", "PROMPT_CACHING", "REASONING_OVERUSE", "DATA_QUALITY"]
REC_TYPES: tuple[str, ...] = ("MODEL_RIGHTSIZING", "PROMPT_CACHING", "REASONING_OVERUSE", "DATA_QUALITY")
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
    events: int
    requests: int
    uncached: int
    cached: int
    cache_creation: int
    output: int
    co2_g: float
    cost_usd: float | None
    estimated_events: int

    @property
    def input_tokens(self) -> int:
        return self.uncached + self.cached + self.cache_creation

    @property
    def tokens(self) -> tuple[int, int, int, int]:
        return self.uncached, self.cached, self.cache_creation, self.output


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


# ------------------------------------------------------------------------------------------ the rules


def _merge(groups: Iterable[Usage]) -> dict[str, int]:
    out = {"events": 0, "requests": 0, "uncached": 0, "cached": 0, "cache_creation": 0, "output": 0}
    for g in groups:
        for k in out:
            out[k] += getattr(g, k)
    return out


def _tokens(m: dict[str, int]) -> tuple[int, int, int, int]:
    return m["uncached"], m["cached"], m["cache_creation"], m["output"]


def _evidence(window: dict[str, Any], m: dict[str, int], **extra: Any) -> dict[str, Any]:
    return {
        "window": window,
        "events": m["events"],
        "requests": m["requests"],
        "input_tokens": m["uncached"] + m["cached"] + m["cache_creation"],
        "cached_input_tokens": m["cached"],
        "output_tokens": m["output"],
        **extra,
    }


def _alternative(
    usage: list[Usage], provider: str, allowed: Callable[[str], bool]
) -> tuple[str, str, str] | None:
    """The model the org already reaches that fits `allowed` (a tier test): the one with the most tokens at
    the same provider, else at any provider; (provider, model, region) or None."""
    totals: dict[tuple[str, str, str], int] = {}
    for u in usage:
        if allowed(u.model_tier):
            key = (u.provider, u.model, u.region)
            totals[key] = totals.get(key, 0) + u.input_tokens + u.output
    if not totals:
        return None
    same = [k for k in totals if k[0] == provider]
    pool = same or list(totals)
    return max(pool, key=lambda k: (totals[k], k))


def _switch_findings(
    kind: str,
    fs: FactorSet,
    usage: list[Usage],
    eligible: Callable[[Usage], bool],
    allowed: Callable[[str], bool],
    window: dict[str, Any],
    days: float,
    price_of: PriceOf,
    why: str,
) -> list[Finding]:
    """One finding per (project, provider, model, region) whose eligible traffic another reachable model
    would serve for less CO2e."""
    grouped: dict[tuple[str, str, str, str], list[Usage]] = {}
    for u in usage:
        if eligible(u):
            grouped.setdefault((u.project_id, u.provider, u.model, u.region), []).append(u)
    out = []
    for (project, provider, model, region), groups in sorted(grouped.items()):
        m = _merge(groups)
        alt = _alternative(usage, provider, allowed)
        if m["requests"] < MIN_REQUESTS or alt is None or alt[1] == model:
            continue
        g, usd = projected_savings(fs, _tokens(m), (provider, model, region), alt, price_of)
        if g <= 0:
            continue
        g_year, usd_year = annualise(g, days), None if usd is None else annualise(usd, days)
        tiers = sorted({x.routing_tier or "unclassified" for x in groups})
        cost_words = "" if usd_year is None else f" and {usd_year:.2f} USD"
        out.append(
            Finding(
                type=kind,
                scope="model",
                subject=f"{project}/{provider}/{model}/{region}",
                project_id=project,
                model=model,
                priority=priority(g_year),
                description=(
                    f"{m['requests']} {why} requests ({', '.join(tiers)}) in the last {days:g} days went to "
                    f"{model} ({match_model(fs, model).tier} tier); {alt[1]} ({match_model(fs, alt[1]).tier} "
                    f"tier, already used by this org) would have emitted {g:.2f} g CO2e less for the same "
                    f"{sum(_tokens(m))} tokens: about {g_year:.1f} g CO2e{cost_words} a year."
                ),
                potential_savings_co2e_grams=g_year,
                potential_savings_cost=usd_year,
                evidence=_evidence(
                    window,
                    m,
                    provider=provider,
                    region=region,
                    routing_tiers=tiers,
                    alternative={"provider": alt[0], "model": alt[1], "region": alt[2]},
                    window_savings_co2e_grams=g,
                    window_savings_cost=usd,
                ),
            )
        )
    return out


def _short(u: Usage) -> bool:
    return u.requests > 0 and u.output / u.requests <= SHORT_OUTPUT_TOKENS


def rightsizing(
    fs: FactorSet, usage: list[Usage], window: dict[str, Any], days: float, price_of: PriceOf
) -> list[Finding]:
    """Large/medium models serving L0/L1 (or, unclassified, short-output) traffic, when the org already
    reaches a small-tier model."""
    return _switch_findings(
        "MODEL_RIGHTSIZING",
        fs,
        usage,
        lambda u: (
            u.model_tier in BIG_TIERS
            and (u.routing_tier in LOW_ROUTING_TIERS or (u.routing_tier == "" and _short(u)))
        ),
        lambda tier: tier == SMALL_TIER,
        window,
        days,
        price_of,
        "low-tier or short-output",
    )


def reasoning_overuse(
    fs: FactorSet, usage: list[Usage], window: dict[str, Any], days: float, price_of: PriceOf
) -> list[Finding]:
    """Reasoning models serving L0/L1 or short-output traffic, when the org reaches a non-reasoning model."""
    return _switch_findings(
        "REASONING_OVERUSE",
        fs,
        usage,
        lambda u: u.model_tier in REASONING_TIERS and (u.routing_tier in LOW_ROUTING_TIERS or _short(u)),
        lambda tier: tier not in REASONING_TIERS and tier != "embedding",
        window,
        days,
        price_of,
        "low-tier or short-output",
    )


def prompt_caching(
    fs: FactorSet, usage: list[Usage], window: dict[str, Any], days: float, price_of: PriceOf
) -> list[Finding]:
    """Long prompts with a low cached share, at a model whose price book has a cheaper cached read."""
    grouped: dict[tuple[str, str, str, str], list[Usage]] = {}
    for u in usage:
        grouped.setdefault((u.project_id, u.provider, u.model, u.region), []).append(u)
    out = []
    for (project, provider, model, region), groups in sorted(grouped.items()):
        m = _merge(groups)
        input_tokens = m["uncached"] + m["cached"] + m["cache_creation"]
        p = price_of(provider, model)
        if m["requests"] < MIN_REQUESTS or p is None or p.cached >= p.input:
            continue
        if (
            input_tokens / m["requests"] < LONG_PROMPT_TOKENS
            or m["cached"] / input_tokens >= LOW_CACHED_SHARE
        ):
            continue
        tier = groups[0].model_tier
        merged = Usage(project, provider, model, tier, region, "", *m.values(), 0.0, None, 0)
        moved, g, usd = caching_savings(fs, merged, price_of)
        if g <= 0:
            continue
        g_year, usd_year = annualise(g, days), None if usd is None else annualise(usd, days)
        share = m["cached"] / input_tokens
        cost_words = "" if usd_year is None else f" and {usd_year:.2f} USD"
        out.append(
            Finding(
                type="PROMPT_CACHING",
                scope="model",
                subject=f"{project}/{provider}/{model}/{region}",
                project_id=project,
                model=model,
                priority=priority(g_year),
                description=(
                    f"{m['requests']} requests to {model} in the last {days:g} days averaged "
                    f"{input_tokens / m['requests']:.0f} input tokens with {share:.0%} read from the prompt "
                    f"cache; at {CACHE_TARGET_SHARE:.0%} cached ({moved} more cached tokens) they would have "
                    f"emitted {g:.2f} g CO2e less: about {g_year:.1f} g CO2e{cost_words} a year."
                ),
                potential_savings_co2e_grams=g_year,
                potential_savings_cost=usd_year,
                evidence=_evidence(
                    window,
                    m,
                    provider=provider,
                    region=region,
                    cached_share=share,
                    tokens_to_cache=moved,
                    window_savings_co2e_grams=g,
                    window_savings_cost=usd,
                ),
            )
        )
    return out


def data_quality(
    usage: list[Usage], window: dict[str, Any], days: float, reasons: list[dict[str, Any]]
) -> list[Finding]:
    """One org-wide finding when at least ESTIMATED_SHARE of the window's events are estimates."""
    m = _merge(usage)
    estimated = sum(u.estimated_events for u in usage)
    if m["events"] == 0 or estimated / m["events"] < ESTIMATED_SHARE:
        return []
    share = estimated / m["events"]
    top = ", ".join(f"{r['reason']} ({r['event_count']} events)" for r in reasons[:3])
    return [
        Finding(
            type="DATA_QUALITY",
            scope="org",
            subject="estimated_share",
            project_id=None,
            model=None,
            priority="high" if share >= 0.5 else "medium",
            description=(
                f"{estimated} of {m['events']} events ({share:.0%}) in the last {days:g} days are estimates "
                f"that fell back to defaults{': ' + top if top else ''}. Name the model, provider and region "
                "(or connect a poller / a power meter) to make the totals firm."
            ),
            potential_savings_co2e_grams=0.0,
            potential_savings_cost=None,
            evidence=_evidence(
                window, m, estimated_events=estimated, estimated_share=share, reasons=reasons[:10]
            ),
        )
    ]


def run(
    fs: FactorSet,
    usage: list[Usage],
    window: dict[str, Any],
    days: float,
    price_of: PriceOf | None = None,
    reasons: list[dict[str, Any]] | None = None,
) -> list[Finding]:
    """Every finding of the window, largest annual CO2e saving first (then by identity)."""
    prices = price_of or book_prices(fs)
    found = [
        *rightsizing(fs, usage, window, days, prices),
        *reasoning_overuse(fs, usage, window, days, prices),
        *prompt_caching(fs, usage, window, days, prices),
        *data_quality(usage, window, days, reasons or []),
    ]
    return sorted(found, key=lambda f: (-f.potential_savings_co2e_grams, f.identity))
