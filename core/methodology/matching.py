"""Matching: model name -> tier, (provider, region) -> place factors, (provider, model) -> list prices.

`match_model` and the price lookup are cached on the FactorSet instance (bounded): they sit on the
enrichment hot path and model names are client input.
"""

from __future__ import annotations

import fnmatch
import re
from typing import NamedTuple

from core.methodology.factors import _CACHE_LIMIT, FactorSet, ModelPattern
from core.methodology.sections import PriceRow
from core.pricing import Prices


class ModelMatch(NamedTuple):
    tier: str
    pattern: str | None
    is_estimated: bool
    reason: str | None


class Place(NamedTuple):
    """The factors of a (provider, region): v1 (PUE, location grid) and, for a v2 set, the rest."""

    pue: float
    grid: float  # location-based, kg CO2e/kWh
    reasons: tuple[str, ...]  # fallbacks taken (unknown provider / region)
    grid_market: float | None  # market-based, kg CO2e/kWh
    wue_onsite: float | None  # L per kWh of IT energy
    water_offsite: float | None  # L per kWh of facility energy
    country: str | None


class _Caches:
    """Per-FactorSet derived state: compiled patterns and bounded lookup caches."""

    __slots__ = ("compiled", "match", "owner", "price", "price_rows", "resolve")

    def __init__(self, owner: FactorSet) -> None:
        self.owner = owner  # a model_copy shares the private dict; the owner check rebuilds for the copy
        self.compiled: list[tuple[re.Pattern[str], ModelPattern]] = [
            (re.compile(fnmatch.translate(mp.pattern.lower())), mp) for mp in owner.model_patterns
        ]
        rows = owner.price_book.models if owner.price_book is not None else []
        self.price_rows: list[tuple[re.Pattern[str], PriceRow]] = [
            (re.compile(fnmatch.translate(row.pattern.lower())), row) for row in rows
        ]
        self.match: dict[str, ModelMatch] = {}
        self.price: dict[tuple[str, str], Prices | None] = {}
        self.resolve: dict[tuple[str, str, str | None], object] = {}


def _caches(fs: FactorSet) -> _Caches:
    # Read the private slot directly: pydantic's __getattr__ path for private attributes costs ~6 µs a
    # call, a large share of the per-event budget on the enrichment hot path.
    private = fs.__pydantic_private__
    caches = private["_cache"]  # type: ignore[index]
    if caches is None or caches.owner is not fs:
        caches = private["_cache"] = _Caches(fs)  # type: ignore[index]
    return caches


# Bedrock model ids: "anthropic.claude-…", "us.anthropic.claude-…", "meta.llama3-1-70b-…"
_HOSTED_PREFIX = re.compile(
    r"^(?:(?:us|eu|apac|global|us-gov|jp|au|ca)\.)?"
    r"(?:anthropic|meta|mistral|amazon|cohere|deepseek|qwen|openai|ai21|writer|google)\."
)


def normalise_model(model: str) -> str:
    """Lower-case; drop 'vendor/' and 'models/' prefixes, Bedrock region/vendor prefixes and the
    fine-tune 'ft:' prefix; turn ':' and '@' version/variant separators into '-'."""
    m = model.strip().lower()
    if m.startswith("ft:"):
        m = m[3:]
    m = m.rsplit("/", 1)[-1]
    m = _HOSTED_PREFIX.sub("", m)
    return m.replace(":", "-").replace("@", "-")


def match_model(fs: FactorSet, model: str) -> ModelMatch:
    """Tier of a model name: first matching pattern; unknown models fall back (flagged)."""
    caches = _caches(fs)
    cache = caches.match
    hit = cache.get(model)
    if hit is not None:
        return hit
    norm = normalise_model(model)
    full = model.strip().lower()
    result: ModelMatch | None = None
    for rx, mp in caches.compiled:
        if rx.match(norm) or rx.match(full):
            result = ModelMatch(mp.tier, mp.pattern, False, None)
            break
    if result is None:
        result = ModelMatch(
            fs.fallback_tier, None, True, f"unknown model {model!r}: fell back to tier {fs.fallback_tier}"
        )
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[model] = result
    return result


def canonical_provider(fs: FactorSet, provider: str) -> str:
    p = provider.strip().lower()
    return fs.provider_aliases.get(p, p)


def place(fs: FactorSet, provider: str, region: str | None) -> Place:
    """The factors of a provider and region: the provider's own figures (its default region when the region
    is unknown, flagged), else the set's defaults for an unknown provider (flagged). The v2 factors follow
    the same region resolution; a region without its own market-based figure takes the provider default."""
    reasons: list[str] = []
    prov = canonical_provider(fs, provider)
    v2 = fs.has_v2
    if prov in fs.pue:
        pue = fs.pue[prov]
        regions = fs.grid[prov]
        reg = region.strip().lower() if region is not None else None
        if reg is None or reg == "" or reg == "default":
            key = "default"
        elif reg in regions:
            key = reg
        else:
            key = "default"
            reasons.append(
                f"unknown region {region!r} for provider {prov}: used the provider default grid intensity "
                f"{regions['default']} kg CO2e/kWh"
            )
        grid = regions[key]
        if not v2:
            return Place(float(pue), float(grid), tuple(reasons), None, None, None, None)
        assert fs.grid_market is not None and fs.region_country is not None and fs.wue_onsite is not None
        assert fs.countries is not None
        market = fs.grid_market[prov]
        grid_market = market.get(key, market["default"])
        country = fs.region_country[prov][key]
        wue = fs.wue_onsite[prov]
    else:
        pue = fs.default_pue
        grid = fs.default_grid_intensity
        reasons.append(
            f"unknown provider {provider!r}: used default PUE {pue} and default grid intensity {grid} kg CO2e/kWh"
        )
        if not v2:
            return Place(float(pue), float(grid), tuple(reasons), None, None, None, None)
        assert fs.default_grid_market_intensity is not None and fs.default_wue_onsite is not None
        assert fs.countries is not None and fs.default_country is not None
        grid_market = fs.default_grid_market_intensity
        country = fs.default_country
        wue = fs.default_wue_onsite
    offsite = fs.countries[country].water_offsite
    return Place(
        float(pue), float(grid), tuple(reasons), float(grid_market), float(wue), float(offsite), country
    )


def grid_intensity(fs: FactorSet, provider: str, region: str | None) -> float:
    """The location-based grid intensity (kg CO2e/kWh) the set applies to a provider and region."""
    return place(fs, provider, region).grid


def price_for(fs: FactorSet, provider: str, model: str) -> Prices | None:
    """The factor set's list prices of a model at a provider: the first price-book row whose pattern matches
    the model name (normalised as for tiers, or as given) and whose provider (if it names one) is the event's
    canonical provider; None when the set has no price book or no row matches."""
    caches = _caches(fs)
    key = (provider, model)
    cache = caches.price
    if key in cache:
        return cache[key]
    result: Prices | None = None
    if caches.price_rows:
        assert fs.price_book is not None
        prov = canonical_provider(fs, provider)
        norm = normalise_model(model)
        full = model.strip().lower()
        for rx, row in caches.price_rows:
            if row.provider is not None and canonical_provider(fs, row.provider) != prov:
                continue
            if rx.match(norm) or rx.match(full):
                result = Prices(
                    float(row.input),
                    float(row.cached_input),
                    float(row.cache_write),
                    float(row.output),
                    f"price book {fs.price_book.version} ({row.pattern}"
                    + (f" at {row.provider}" if row.provider else "")
                    + f", as of {row.as_of.isoformat()})",
                )
                break
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = result
    return result
