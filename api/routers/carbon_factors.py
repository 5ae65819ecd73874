"""Carbon factor versions: /api/v1/carbon-factors (scope `read`). Published factor sets are global (not
per org) and immutable; the current one is the latest by published_at.

Energy factors are IT (server) joules per token before PUE, per phase, with low/high bounds; PUE is per
provider; grid intensity is kg CO2e per kWh per provider and region ("default" when the region is unknown).
Methodology v2 sets (v2.0 on) add, each None on a v1 set: market-based grid intensity, the embodied-emissions
allocation (kg CO2e per J of IT energy and its derivation), on-site and off-site water, how measured energy
is brought to the facility boundary, and the price book (USD per 1M tokens; an org's price overrides,
/api/v1/price-overrides, take precedence for that org).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from fastapi import APIRouter, Path
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from api.deps import Ctx, ReadPrincipal
from api.errors import error_responses
from controlplane import FactorVersion, NotFound
from core.methodology import PHASES, FactorSet, TierFactors

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


class BandOut(BaseModel):
    point: float
    low: float
    high: float


class MarketGridOut(BaseModel):
    unit: str = "kg CO2e/kWh"
    basis: str = (
        "market-based (GHG Protocol Scope 2): the provider's own published market-based figure where there is "
        "one, else the location-based value as the hierarchy's last step (such values are equal to `grid`)"
    )
    providers: dict[str, dict[str, float]]
    default: float


class EmbodiedOut(BaseModel):
    unit: str = "kg CO2e per J of IT energy"
    basis: str = (
        "k = E_slot / (L × P): one accelerator slot's embodied emissions (server without GPUs / GPUs per "
        "server + one GPU), spread over the hardware lifetime L at the slot's average IT power P; a usage's "
        "embodied CO2e = its IT energy × k (not × PUE). Low / high use the low / high IT energy and k."
    )
    k_kg_per_j_it: BandOut
    server_excl_gpu_kg: float
    server_gpus: int
    gpu_kg: BandOut
    lifetime_years: BandOut
    slot_power_kw: BandOut
    sources: list[str]


class ProviderValues(BaseModel):
    providers: dict[str, float]
    default: float


class WaterOut(BaseModel):
    unit: str = "L per kWh"
    basis: str = "water_l = IT kWh × (wue_onsite(provider) + PUE × water_offsite(country of the region))"
    wue_onsite_l_per_kwh: ProviderValues
    water_offsite_l_per_kwh: dict[str, float]  # country (ISO 3166-1 alpha-3) → L per kWh generated
    region_country: dict[str, dict[str, str]]
    default_country: str | None


class MeasurementOut(BaseModel):
    basis: str = (
        "measured energy replaces the token estimate: gpu boundary × host factor × PUE, server boundary × PUE, "
        "facility as measured; the band is the stated uncertainty (else the meter's default below)"
    )
    gpu_host_factor: BandOut
    uncertainty_pct: dict[str, float]
    sources: list[str]


class PriceRowOut(BaseModel):
    pattern: str
    provider: str | None
    input: float
    cached_input: float
    cache_write: float
    output: float
    as_of: date
    source: list[str]


class PriceBookOut(BaseModel):
    version: str
    currency: str
    per_tokens: int
    overrides: str = "an org's price overrides (/api/v1/price-overrides) take precedence over this book"
    models: list[PriceRowOut]


class V2Sections(BaseModel):
    """The methodology v2 parts of a factor set (each None when the set predates them)."""

    grid_market_intensity_kg_per_kwh: MarketGridOut | None = None
    embodied: EmbodiedOut | None = None
    water: WaterOut | None = None
    measurement: MeasurementOut | None = None
    price_book: PriceBookOut | None = None


def _band(b: Any) -> BandOut:
    return BandOut(point=b.point, low=b.low, high=b.high)


def v2_sections(fs: FactorSet) -> V2Sections:
    out = V2Sections()
    if fs.grid_market is not None and fs.default_grid_market_intensity is not None:
        out.grid_market_intensity_kg_per_kwh = MarketGridOut(
            providers={p: dict(r) for p, r in fs.grid_market.items()},
            default=fs.default_grid_market_intensity,
        )
    e = fs.embodied
    if e is not None:
        out.embodied = EmbodiedOut(
            k_kg_per_j_it=_band(e.k_kg_per_j_it),
            server_excl_gpu_kg=e.server_excl_gpu_kg,
            server_gpus=e.server_gpus,
            gpu_kg=_band(e.gpu_kg),
            lifetime_years=_band(e.lifetime_years),
            slot_power_kw=_band(e.slot_power_kw),
            sources=list(e.sources),
        )
    if fs.wue_onsite is not None and fs.countries is not None and fs.default_wue_onsite is not None:
        out.water = WaterOut(
            wue_onsite_l_per_kwh=ProviderValues(providers=dict(fs.wue_onsite), default=fs.default_wue_onsite),
            water_offsite_l_per_kwh={c: f.water_offsite for c, f in fs.countries.items()},
            region_country={p: dict(r) for p, r in (fs.region_country or {}).items()},
            default_country=fs.default_country,
        )
    m = fs.measurement
    if m is not None:
        out.measurement = MeasurementOut(
            gpu_host_factor=_band(m.gpu_host_factor),
            uncertainty_pct=dict(m.uncertainty_pct),
            sources=list(m.sources),
        )
    pb = fs.price_book
    if pb is not None:
        out.price_book = PriceBookOut(
            version=pb.version,
            currency=pb.currency,
            per_tokens=pb.per_tokens,
            models=[PriceRowOut(**row.model_dump()) for row in pb.models],
        )
    return out


class FactorVersionOut(V2Sections):
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
        **dict(v2_sections(fs)),
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
