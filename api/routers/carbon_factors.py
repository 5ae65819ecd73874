"""Carbon factor versions: /api/v1/carbon-factors (scope `read`). Published factor sets are global (not
per org) and immutable; the current one is the latest by published_at.

Energy factors are IT (server) joules per token before PUE, per phase, with low/high bounds; PUE is per
provider; grid intensity is kg CO2e per kWh per provider and region ("default" when the region is unknown).
"""

from __future__ import annotations

from datetime import date, datetime

from fastapi import APIRouter, Path
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from api.deps import Ctx, ReadPrincipal
from api.errors import error_responses
from controlplane import FactorVersion, NotFound
from core.methodology import PHASES, TierFactors

router = APIRouter(prefix="/carbon-factors", tags=["carbon factors"], responses=error_responses(401, 403))


class PhaseJoules(BaseModel):
    prefill: float
    decode: float
    cached: float
    cache_creation: float


class TierOut(BaseModel):
    model_tier: str
    description: str
    model_patterns: list[str]
    energy_per_token_prefill_j: float
    energy_per_token_decode_j: float
    energy_per_token_cached_j: float
    energy_per_token_cache_creation_j: float
    low: PhaseJoules
    high: PhaseJoules
    # the seed contract's per-tier fields: joulestream's PUE and grid intensity are per provider and region
    # (see `pue` and `grid_intensity_kg_per_kwh` below), so a tier shows what applies to an unknown provider
    pue: float = Field(description="PUE applied when the provider is unknown (the set's default)")
    grid_intensity_kg_per_kwh: float = Field(
        description="kg CO2e/kWh applied when the provider is unknown (the set's default, location-based)"
    )
    uncertainty_pct: float = Field(
        description="The band's widest deviation from the point value over the phases, % (the band is "
        "asymmetric: `low` and `high` give it exactly)"
    )
    sources: list[str]


class PueOut(BaseModel):
    providers: dict[str, float]
    default: float


class GridOut(BaseModel):
    unit: str = "kg CO2e/kWh"
    providers: dict[str, dict[str, float]]
    default: float


class FactorVersionOut(BaseModel):
    version: str
    published_at: date
    description: str
    is_current: bool
    tiers: list[TierOut]
    fallback_tier: str
    pue: PueOut
    grid_intensity_kg_per_kwh: GridOut
    provider_aliases: dict[str, str]
    sources: dict[str, str]
    created_at: datetime


class FactorVersionItem(BaseModel):
    version: str
    published_at: date
    description: str
    tier_count: int
    is_current: bool
    created_at: datetime


class FactorVersionList(BaseModel):
    versions: list[FactorVersionItem]


def tier_uncertainty_pct(t: TierFactors) -> float:
    """The widest relative deviation of a tier's low or high per-token energy from its point value, in %."""
    worst = 0.0
    for phase in PHASES:
        point = getattr(t.point, phase)
        if point > 0:
            worst = max(
                worst, (getattr(t.high, phase) - point) / point, (point - getattr(t.low, phase)) / point
            )
    return round(worst * 100, 1)


def factor_version_out(fv: FactorVersion, is_current: bool) -> FactorVersionOut:
    fs = fv.factor_set
    patterns: dict[str, list[str]] = {name: [] for name in fs.tiers}
    for mp in fs.model_patterns:
        patterns.setdefault(mp.tier, []).append(mp.pattern)
    tiers = [
        TierOut(
            model_tier=name,
            description=t.description,
            model_patterns=patterns.get(name, []),
            energy_per_token_prefill_j=t.point.prefill,
            energy_per_token_decode_j=t.point.decode,
            energy_per_token_cached_j=t.point.cached,
            energy_per_token_cache_creation_j=t.point.cache_creation,
            low=PhaseJoules(**t.low.model_dump()),
            high=PhaseJoules(**t.high.model_dump()),
            pue=fs.default_pue,
            grid_intensity_kg_per_kwh=fs.default_grid_intensity,
            uncertainty_pct=tier_uncertainty_pct(t),
            sources=list(t.sources),
        )
        for name, t in fs.tiers.items()
    ]
    return FactorVersionOut(
        version=fv.version,
        published_at=fv.published_at.date(),
        description=fs.description,
        is_current=is_current,
        tiers=tiers,
        fallback_tier=fs.fallback_tier,
        pue=PueOut(providers=dict(fs.pue), default=fs.default_pue),
        grid_intensity_kg_per_kwh=GridOut(
            providers={p: dict(r) for p, r in fs.grid.items()}, default=fs.default_grid_intensity
        ),
        provider_aliases=dict(getattr(fs, "provider_aliases", {}) or {}),
        sources=dict(fs.sources),
        created_at=fv.created_at,
    )


@router.get("", response_model=FactorVersionList, summary="Every published factor version, newest first")
def list_versions(ctx: Ctx, principal: ReadPrincipal) -> FactorVersionList:
    versions = ctx.factor_versions.list()
    current = versions[0].version if versions else None
    return FactorVersionList(
        versions=[
            FactorVersionItem(
                version=v.version,
                published_at=v.published_at.date(),
                description=v.factor_set.description,
                tier_count=v.tier_count,
                is_current=v.version == current,
                created_at=v.created_at,
            )
            for v in versions
        ]
    )


@router.get(
    "/current",
    response_model=FactorVersionOut,
    responses=error_responses(404),
    summary="The current factor version with every tier, PUE and grid value",
)
async def current_version(ctx: Ctx, principal: ReadPrincipal) -> FactorVersionOut:
    fv = await run_in_threadpool(ctx.factor_versions.current)
    if fv is None:
        raise NotFound("no carbon factor version is published")
    return factor_version_out(fv, is_current=True)


@router.get(
    "/{version}",
    response_model=FactorVersionOut,
    responses=error_responses(404),
    summary="One factor version by its version string (e.g. v1.0)",
)
def get_version(
    ctx: Ctx,
    principal: ReadPrincipal,
    version: str = Path(min_length=1, max_length=32, examples=["v1.0"]),
) -> FactorVersionOut:
    fv = ctx.factor_versions.get(version)
    if fv is None:
        raise NotFound(f"no carbon factor version {version!r}")
    current = ctx.factor_versions.current()
    return factor_version_out(fv, is_current=current is not None and current.version == fv.version)
