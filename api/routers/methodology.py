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
from api.routers.carbon_factors import tier_uncertainty_pct
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


class MethodologyOut(BaseModel):
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
        formula=FORMULA,
        units={
            "energy": "J (1 kWh = 3.6e6 J)",
            "energy_per_token": "J of IT (server) energy per token, before PUE",
            "pue": "dimensionless, facility energy / IT energy",
            "grid_intensity": "kg CO2e per kWh",
            "co2e": "kg",
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
        sources=[SourceOut(key=k, citation=v) for k, v in fs.sources.items()],
    )
