"""The rules: one function per recommendation type, each from the window's `Usage` groups to `Finding`s, and
`run` (all of them). Thresholds and formulas in `core.insights.model`; docs/insights.md writes the rules out."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from core.insights.model import (
    BATCH_DISCOUNT,
    BATCH_PROVIDERS,
    BIG_TIERS,
    CACHE_TARGET_SHARE,
    ESTIMATED_SHARE,
    LONG_PROMPT_TOKENS,
    LOW_CACHED_SHARE,
    LOW_ROUTING_TIERS,
    MIN_REQUESTS,
    REASONING_TIERS,
    REGION_SHIFT_MAX_RATIO,
    SHORT_OUTPUT_TOKENS,
    SMALL_TIER,
    Finding,
    PriceOf,
    Usage,
    annualise,
    book_prices,
    caching_savings,
    priority,
    projected_savings,
)
from core.methodology import FactorSet, canonical_provider, match_model, place

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


def _known(fs: FactorSet, model: str) -> bool:
    """The factor set names the model's tier (an unknown model's tier is a fallback: DATA_QUALITY's matter)."""
    return match_model(fs, model).pattern is not None


def _alternative(
    fs: FactorSet, usage: list[Usage], provider: str, allowed: Callable[[str], bool]
) -> tuple[str, str, str] | None:
    """The known model the org already reaches that fits `allowed` (a tier test): the one with the most tokens
    at the same provider, else at any provider; (provider, model, region) or None."""
    totals: dict[tuple[str, str, str], int] = {}
    for u in usage:
        if allowed(u.model_tier) and _known(fs, u.model):
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
        if eligible(u) and _known(fs, u.model):
            grouped.setdefault((u.project_id, u.provider, u.model, u.region), []).append(u)
    out = []
    for (project, provider, model, region), groups in sorted(grouped.items()):
        m = _merge(groups)
        alt = _alternative(fs, usage, provider, allowed)
        if m["requests"] < MIN_REQUESTS or alt is None or alt[1] == model:
            continue
        g, usd = projected_savings(fs, _tokens(m), (provider, model, region), alt, price_of)
        if g <= 0:
            continue
        g_year, usd_year = annualise(g, days), None if usd is None else annualise(usd, days)
        tiers = sorted({x.routing_tier or "unclassified" for x in groups})
        # the alternative's share of this traffic before any change: measured savings count only its growth
        alt_tokens = sum(
            u.input_tokens + u.output
            for u in usage
            if u.project_id == project
            and (u.provider, u.model) == alt[:2]
            and (u.routing_tier or "unclassified") in tiers
        )
        alt_share = alt_tokens / (alt_tokens + sum(_tokens(m)))
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
                    alternative_share=alt_share,
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
    out = []
    for (project, provider, model, region), groups in _by_place(usage):
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
        merged = Usage(project, provider, model, tier, region, "", "", "", *m.values(), 0.0, None, 0)
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


def _by_place(usage: list[Usage]) -> list[tuple[tuple[str, str, str, str], list[Usage]]]:
    grouped: dict[tuple[str, str, str, str], list[Usage]] = {}
    for u in usage:
        grouped.setdefault((u.project_id, u.provider, u.model, u.region), []).append(u)
    return sorted(grouped.items())


def cleanest_region(fs: FactorSet, provider: str) -> tuple[str, float] | None:
    """The provider's region with the lowest location-based grid intensity in the factor set (ties: by name),
    or None for a provider the set does not list."""
    regions = fs.grid.get(canonical_provider(fs, provider))
    if not regions:
        return None
    named = [(v, r) for r, v in regions.items() if r != "default"]
    if not named:
        return None
    v, r = min(named)
    return r, v


def region_shift(
    fs: FactorSet, usage: list[Usage], window: dict[str, Any], days: float, price_of: PriceOf
) -> list[Finding]:
    """A model used in a region whose grid is well above the cleanest region the factor set lists for its
    provider: the same tokens, model and PUE at that region."""
    out = []
    for (project, provider, model, region), groups in _by_place(usage):
        m = _merge(groups)
        best = cleanest_region(fs, provider)
        here = place(fs, provider, region or None).grid
        if m["requests"] < MIN_REQUESTS or best is None or best[1] > REGION_SHIFT_MAX_RATIO * here:
            continue
        g, usd = projected_savings(
            fs, _tokens(m), (provider, model, region), (provider, model, best[0]), price_of
        )
        if g <= 0:
            continue
        g_year = annualise(g, days)
        out.append(
            Finding(
                type="REGION_SHIFT",
                scope="model",
                subject=f"{project}/{provider}/{model}/{region}",
                project_id=project,
                model=model,
                priority=priority(g_year),
                description=(
                    f"{m['requests']} requests to {model} at {provider} {region or 'default region'} "
                    f"({here * 1000:.0f} g CO2e/kWh) in the last {days:g} days; {provider} {best[0]} "
                    f"({best[1] * 1000:.0f} g CO2e/kWh) would have emitted {g:.2f} g CO2e less for the same "
                    f"tokens: about {g_year:.1f} g CO2e a year, if data residency allows."
                ),
                potential_savings_co2e_grams=g_year,
                potential_savings_cost=None if usd is None else annualise(usd, days),
                evidence=_evidence(
                    window,
                    m,
                    provider=provider,
                    region=region,
                    grid_kg_per_kwh=here,
                    alternative={"provider": provider, "model": model, "region": best[0]},
                    alternative_grid_kg_per_kwh=best[1],
                    window_savings_co2e_grams=g,
                ),
            )
        )
    return out


def batch_eligible(
    fs: FactorSet, usage: list[Usage], window: dict[str, Any], days: float, price_of: PriceOf
) -> list[Finding]:
    """Workloads seen only through a provider's usage API (poller-only: no gateway request of theirs needs an
    answer in seconds) at a provider with a Batch API: half their cost."""
    by_workload: dict[tuple[str, str], list[Usage]] = {}
    for u in usage:
        by_workload.setdefault((u.project_id, u.workload_id), []).append(u)
    out = []
    for (project, workload), groups in sorted(by_workload.items()):
        if any(u.source != "poller" for u in groups):
            continue
        eligible = [u for u in groups if canonical_provider(fs, u.provider) in BATCH_PROVIDERS]
        m = _merge(eligible)
        cost = sum(u.cost_usd or 0.0 for u in eligible)
        if m["requests"] < MIN_REQUESTS or cost <= 0:
            continue
        usd = cost * BATCH_DISCOUNT
        usd_year = annualise(usd, days)
        models = sorted({u.model for u in eligible})
        out.append(
            Finding(
                type="BATCH_ELIGIBLE",
                scope="workload",
                subject=f"{project}/{workload}",
                project_id=project,
                model=models[0] if len(models) == 1 else None,
                priority="medium" if usd_year >= 100 else "low",
                description=(
                    f"Workload {workload} sent {m['requests']} requests ({', '.join(models)}) in the last "
                    f"{days:g} days, all seen only through the provider's usage API, none through the gateway; "
                    f"if they need no answer within seconds, a Batch API at {BATCH_DISCOUNT:.0%} off would have "
                    f"cost {usd:.2f} USD less: about {usd_year:.2f} USD a year (no CO2e saving is claimed: the "
                    "factor set has no batch energy factor)."
                ),
                potential_savings_co2e_grams=0.0,
                potential_savings_cost=usd_year,
                evidence=_evidence(
                    window, m, workload_id=workload, models=models, window_cost=cost, window_savings_cost=usd
                ),  # fmt: skip
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
        *region_shift(fs, usage, window, days, prices),
        *batch_eligible(fs, usage, window, days, prices),
        *data_quality(usage, window, days, reasons or []),
    ]
    return sorted(found, key=lambda f: (-f.potential_savings_co2e_grams, f.identity))
