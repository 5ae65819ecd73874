"""Carbon methodology: versioned factor sets, model -> tier matching, tokens (or measured energy) -> energy
-> CO2e (location- and market-based), embodied CO2e, water and cost.

A factor set is data (`core/factors/{version}.yaml`); this package only reads and applies it. Every
enriched event records the version and the factors it used, so any figure can be recomputed.
Pure functions, stdlib + pydantic + pyyaml only.

    factors    the FactorSet model, its unit checks, loading (`load_factor_set()` = the latest built-in)
    matching   model -> tier, (provider, region) -> place factors, (provider, model) -> list prices
    footprint  the formulas (written out in its docstring and in docs/methodology.md) and `enrich`
"""

from core.methodology.factors import (
    FACTORS_DIR,
    J_PER_KWH,
    LATEST_VERSION,
    MAX_GRID_KG_PER_KWH,
    MAX_PUE,
    MIN_GRID_KG_PER_KWH,
    PHASES,
    FactorSet,
    FactorSetError,
    ModelPattern,
    PhaseFactors,
    TierFactors,
    builtin_versions,
    load_factor_set,
    parse_factor_set,
)
from core.methodology.footprint import (
    _FAST_CONSTRUCT,
    Extra,
    Footprint,
    Measured,
    cached_savings,
    compute_footprint,
    enrich,
    extra_of,
    joules_to_kwh,
    measured_of,
)
from core.methodology.matching import (
    ModelMatch,
    Place,
    canonical_provider,
    grid_intensity,
    match_model,
    normalise_model,
    place,
    price_for,
)
from core.methodology.sections import PriceBook, PriceRow
from core.pricing import Prices

__all__ = [
    "FACTORS_DIR",
    "J_PER_KWH",
    "LATEST_VERSION",
    "MAX_GRID_KG_PER_KWH",
    "MAX_PUE",
    "MIN_GRID_KG_PER_KWH",
    "PHASES",
    "_FAST_CONSTRUCT",
    "FactorSet",
    "FactorSetError",
    "Footprint",
    "Measured",
    "ModelMatch",
    "ModelPattern",
    "PhaseFactors",
    "Place",
    "PriceBook",
    "PriceRow",
    "Prices",
    "TierFactors",
    "builtin_versions",
    "cached_savings",
    "canonical_provider",
    "compute_footprint",
    "Extra",
    "extra_of",
    "enrich",
    "grid_intensity",
    "joules_to_kwh",
    "load_factor_set",
    "match_model",
    "measured_of",
    "normalise_model",
    "parse_factor_set",
    "place",
    "price_for",
]
