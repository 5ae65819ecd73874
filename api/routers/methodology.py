"""GET /api/v1/methodology — public (no auth): how joulestream turns tokens into CO2e, with every value
and its source, taken from the current carbon factor version (so it always matches the calculation)."""

from __future__ import annotations

from datetime import date
from statistics import median

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from api.deps import Ctx
from api.errors import error_responses
from api.routers.carbon_factors import V2Sections, tier_uncertainty_pct, v2_sections
from controlplane import NotFound
from core.methodology import FactorSet

router = APIRouter(tags=["methodology"])

PIPELINE = (
    "tokens → IT energy (J) → × PUE → facility energy (J) → ÷ 3.6e6 → kWh → × grid intensity → CO2e (kg)"
)
FORMULA = [
    "IT J = Σ tokens_phase × J/token_phase (phases: prefill, decode, cached, cache_creation; by model tier)",
    "facility J = IT J × PUE(provider)",
    "kWh = facility J / 3.6e6",
    "kg CO2e = kWh × grid intensity(provider, region) [kg CO2e/kWh, location-based]",
]
FORMULA_V2 = [
    "co2_kg_market = kWh × market-based grid intensity(provider, region)",
    "co2_kg_embodied = IT J × embodied k [kg CO2e per J of IT energy; not × PUE]",
    "water_l = IT kWh × (on-site WUE(provider) + PUE × off-site water(country of the region)) [L/kWh]",
    "cost_usd = (uncached × input + cached × cached_input + cache_write × cache_write + output × output) / 1e6 "
    "[USD per 1M tokens: the org's override, else the price book]",
    "measured energy (when an event carries one) replaces the token estimate: gpu boundary × host factor × PUE, "
    "server × PUE, facility as measured; energy_source = measured",
]
FIGURES = [
    (
        "energy_j",
        "J",
        "facility energy (IT × PUE); energy_source says whether estimated from tokens or measured",
    ),
    ("co2_kg", "kg CO2e", "Scope 2, location-based (operational); the meaning it always had"),
    ("co2_kg_market", "kg CO2e", "Scope 2, market-based (the providers' contractual instruments)"),
    ("co2_kg_embodied", "kg CO2e", "Scope 3 (category 1, purchased services): the hardware's embodied share"),
    ("water_l", "L", "water consumed on site (cooling) and off site (electricity generation)"),
    ("cost_usd", "USD", "price of the tokens: the org's price override, else the factor set's price book"),
]
PHASES = [
    {"name": "prefill", "tokens": "input_tokens_uncached", "description": "uncached input (prompt) tokens"},
    {"name": "decode", "tokens": "output_tokens", "description": "output tokens, including reasoning tokens"},
    {
        "name": "cached",
        "tokens": "input_tokens_cached",
        "description": "input tokens read from the prompt cache",
    },
    {
        "name": "cache_creation",
        "tokens": "input_tokens_cache_creation",
        "description": "input tokens written to the prompt cache",
    },
]
UNCERTAINTY_BASIS = (
    "Each model tier carries low / point / high energy per token for every phase, spanning the published "
    "measurements and estimates it cites. Low and high CO2e use the low and high factors with the same PUE "
    "and grid intensity, so the bounds express the energy-model uncertainty, the dominant term. Models, "
    "providers or regions not in the factor set fall back to the fallback tier, the default PUE and the "
    "default grid intensity, and the resulting figures are flagged is_estimated with the reasons."
)


class PhaseOut(BaseModel):
    name: str
    tokens: str
    description: str


class TierMethod(BaseModel):
    name: str
    description: str
    model_patterns: list[str]
    j_per_token: dict[str, dict[str, float]]  # point/low/high → phase → J (IT, before PUE)
    sources: list[str]


class SourceOut(BaseModel):
    key: str
    citation: str


class FigureOut(BaseModel):
    field: str
    unit: str
    meaning: str


class MethodologyOut(V2Sections):
    version: str
    published_at: date
    description: str
    pipeline: str
    formula: list[str]
    units: dict[str, str]
    phases: list[PhaseOut]
    tiers: list[TierMethod]
    fallback_tier: str
    pue_values: dict[str, object]
    grid_intensity: dict[str, object]
    uncertainty: dict[str, str | float]
    figures: list[FigureOut]
    sources: list[SourceOut]


def _default_uncertainty_pct(fs: FactorSet) -> float:
    """The fallback tier's widest band deviation, % (what an unknown model gets)."""
    return tier_uncertainty_pct(fs.tiers[fs.fallback_tier])


@router.get(
    "/methodology",
    response_model=MethodologyOut,
    responses=error_responses(404),
    summary="How emissions are calculated (public)",
)
async def methodology(ctx: Ctx) -> MethodologyOut:
    fv = await run_in_threadpool(ctx.factor_versions.current)
    if fv is None:
        raise NotFound("no carbon factor version is published")
    fs = fv.factor_set
    patterns: dict[str, list[str]] = {name: [] for name in fs.tiers}
    for mp in fs.model_patterns:
        patterns.setdefault(mp.tier, []).append(mp.pattern)
    return MethodologyOut(
        version=fs.version,
        published_at=fv.published_at.date(),
        description=fs.description,
        pipeline=PIPELINE,
        formula=FORMULA + (FORMULA_V2 if fs.embodied is not None else []),
        units={
            "energy": "J (1 kWh = 3.6e6 J)",
            "energy_per_token": "J of IT (server) energy per token, before PUE",
            "pue": "dimensionless, facility energy / IT energy",
            "grid_intensity": "kg CO2e per kWh",
            "co2e": "kg",
            "embodied": "kg CO2e per J of IT energy",
            "water": "L per kWh (on-site per IT kWh, off-site per kWh generated)",
            "price": "USD per 1,000,000 tokens",
        },
        phases=[PhaseOut(**p) for p in PHASES],
        tiers=[
            TierMethod(
                name=name,
                description=t.description,
                model_patterns=patterns.get(name, []),
                j_per_token={
                    "point": t.point.model_dump(),
                    "low": t.low.model_dump(),
                    "high": t.high.model_dump(),
                },
                sources=list(t.sources),
            )
            for name, t in fs.tiers.items()
        ],
        fallback_tier=fs.fallback_tier,
        pue_values={
            "providers": dict(fs.pue),
            "default": fs.default_pue,
            # the seed contract's two figures: the known providers' median PUE, and the unknown-provider one
            "known_hyperscalers": median(fs.pue.values()) if fs.pue else fs.default_pue,
            "unknown_providers": fs.default_pue,
        },
        grid_intensity={
            "unit": "kg CO2e/kWh",
            "basis": "location-based annual average of the provider's region; provider default when unknown",
            "providers": {p: dict(r) for p, r in fs.grid.items()},
            "default": fs.default_grid_intensity,
            "value_kg_per_kwh": fs.default_grid_intensity,  # the seed contract's single value: the default
        },
        uncertainty={
            "method": "low/high bounds per tier and phase",
            "basis": UNCERTAINTY_BASIS,
            "default_pct": _default_uncertainty_pct(fs),
        },
        figures=[
            FigureOut(field=f, unit=u, meaning=m)
            for f, u, m in FIGURES
            if fs.embodied is not None or f in ("energy_j", "co2_kg")
        ],
        sources=[SourceOut(key=k, citation=v) for k, v in fs.sources.items()],
        **dict(v2_sections(fs)),
    )
