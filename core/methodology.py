"""Carbon methodology: versioned factor sets, model -> tier matching, tokens -> energy -> CO2e.

The calculation (docs/methodology.md):

    IT J        = Σ tokens_phase × J/token_phase          (prefill, decode, cached, cache_creation)
    facility J  = IT J × PUE(provider)
    kWh         = facility J / 3.6e6
    kg CO2e     = kWh × grid(provider, region)             (kg CO2e per kWh, location-based)

The low / high bounds use the tier's low / high per-token factors with the same PUE and grid. The cached-token
savings (what the cached input tokens would have cost at the prefill price, minus what they cost at the
cached price, at the same PUE and grid) are `cached_savings`.

A factor set is data (`core/factors/{version}.yaml`); this module only reads and applies it. Every
enriched event records the version and the factors it used, so any figure can be recomputed.
Pure functions, stdlib + pydantic + pyyaml only. `match_model` and the per-(provider, model, region)
resolution are cached on the FactorSet instance: they sit on the enrichment hot path.
"""

from __future__ import annotations

import fnmatch
import math
import re
from datetime import UTC, date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from core.contracts import EnrichedUsage, UsageEvent

FACTORS_DIR = Path(__file__).parent / "factors"
J_PER_KWH = 3.6e6
# Grid intensity must lie in [MIN, MAX) kg CO2e/kWh. No real grid's annual average is above ~1.1 kg/kWh
# or below ~1 g/kWh, so 350 (g/kWh) and 0.00035 (t/kWh, Cloud Carbon Footprint's unit) are both caught.
MIN_GRID_KG_PER_KWH = 0.001
MAX_GRID_KG_PER_KWH = 2.0
MAX_PUE = 3.0  # sanity ceiling; hyperscalers report 1.08-1.2, the worst enterprise averages are ~2
_VERSION_RE = re.compile(r"^v\d+(\.\d+)*$")
_CACHE_LIMIT = 50_000  # per FactorSet; model names are client input, so the caches must be bounded
PHASES = ("prefill", "decode", "cached", "cache_creation")


class FactorSetError(ValueError):
    """A factor set file that cannot be used: bad YAML, bad units, inconsistent references."""


class PhaseFactors(BaseModel):
    """IT energy per token for each phase, joules (before PUE)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefill: float = Field(ge=0, description="uncached input token")
    decode: float = Field(ge=0, description="output token (incl. reasoning tokens)")
    cached: float = Field(ge=0, description="input token read from the prompt cache")
    cache_creation: float = Field(ge=0, description="input token written to the prompt cache")

    @field_validator("prefill", "decode", "cached", "cache_creation")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number of joules per token")
        return v


class TierFactors(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str
    point: PhaseFactors
    low: PhaseFactors
    high: PhaseFactors
    sources: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> TierFactors:
        for phase in PHASES:
            lo, pt, hi = getattr(self.low, phase), getattr(self.point, phase), getattr(self.high, phase)
            if not lo <= pt <= hi:
                raise ValueError(
                    f"tier {self.name!r}, phase {phase!r}: need low <= point <= high, got {lo} / {pt} / {hi}"
                )
        return self


class ModelPattern(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pattern: str = Field(min_length=1, description="fnmatch glob, case-insensitive")
    tier: str


class ModelMatch(NamedTuple):
    tier: str
    pattern: str | None
    is_estimated: bool
    reason: str | None


class _Resolved(NamedTuple):
    """Everything about (provider, model, region) that does not depend on token counts."""

    tier: str
    point: PhaseFactors
    low: PhaseFactors
    high: PhaseFactors
    pue: float
    grid: float
    is_estimated: bool
    reasons: tuple[str, ...]
    # derived once per resolution for the hot path (see _energies and enrich):
    # J per (uncached, cached, cache-creation, output) token for point, low, high
    per_token: tuple[tuple[float, float, float, float], ...]
    # the footprint fields that do not depend on token counts, in EnrichedUsage field order
    head: dict[str, Any]


class _Caches:
    """Per-FactorSet derived state: compiled patterns and bounded lookup caches."""

    __slots__ = ("compiled", "match", "owner", "resolve")

    def __init__(self, owner: FactorSet) -> None:
        self.owner = owner  # a model_copy shares the private dict; the owner check rebuilds for the copy
        self.compiled: list[tuple[re.Pattern[str], ModelPattern]] = [
            (re.compile(fnmatch.translate(mp.pattern.lower())), mp) for mp in owner.model_patterns
        ]
        self.match: dict[str, ModelMatch] = {}
        self.resolve: dict[tuple[str, str, str | None], _Resolved] = {}


class FactorSet(BaseModel):
    """One published, immutable version of every factor the calculation uses."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    published_at: date
    description: str
    tiers: dict[str, TierFactors]
    model_patterns: list[ModelPattern] = Field(min_length=1)
    fallback_tier: str
    pue: dict[str, float]
    default_pue: float
    grid: dict[str, dict[str, float]] = Field(
        description="provider -> region -> kg CO2e/kWh; 'default' required"
    )
    default_grid_intensity: float = Field(description="kg CO2e/kWh for unknown providers")
    provider_aliases: dict[str, str] = Field(default_factory=dict, description="alias -> provider key")
    sources: dict[str, str] = Field(description="source key -> citation / URL")

    _cache: _Caches | None = PrivateAttr(default=None)

    @field_validator("version")
    @classmethod
    def _version_format(cls, v: str) -> str:
        if not _VERSION_RE.match(v):
            raise ValueError(f"version {v!r} must look like v1.0")
        return v

    @field_validator("pue", "grid", "provider_aliases")
    @classmethod
    def _lower_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            if key != key.strip().lower():
                raise ValueError(f"provider key {key!r} must be lower-case with no surrounding spaces")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> FactorSet:
        problems: list[str] = []
        for key, tier in self.tiers.items():
            if tier.name != key:
                problems.append(f"tier key {key!r} has name {tier.name!r}")
            for src in tier.sources:
                if src not in self.sources:
                    problems.append(f"tier {key!r} cites unknown source {src!r}")
        if not self.tiers:
            problems.append("no tiers")
        if self.fallback_tier not in self.tiers:
            problems.append(f"fallback_tier {self.fallback_tier!r} is not a tier")
        for mp in self.model_patterns:
            if mp.tier not in self.tiers:
                problems.append(f"pattern {mp.pattern!r} maps to unknown tier {mp.tier!r}")
        for provider, value in [*self.pue.items(), ("default_pue", self.default_pue)]:
            if not (math.isfinite(value) and 1.0 <= value <= MAX_PUE):
                problems.append(f"PUE for {provider!r} is {value}: must be between 1 and {MAX_PUE}")
        grid_values = [("default_grid_intensity", "-", self.default_grid_intensity)] + [
            (provider, region, value)
            for provider, regions in self.grid.items()
            for region, value in regions.items()
        ]
        for provider, region, value in grid_values:
            if not (math.isfinite(value) and MIN_GRID_KG_PER_KWH <= value < MAX_GRID_KG_PER_KWH):
                problems.append(
                    f"grid intensity {provider}/{region} = {value} kg CO2e/kWh is outside "
                    f"[{MIN_GRID_KG_PER_KWH}, {MAX_GRID_KG_PER_KWH}): grid values are kg CO2e per kWh "
                    "(US average ~0.37); 0.00035 is t/kWh, 350 is g/kWh"
                )
        for provider, regions in self.grid.items():
            if "default" not in regions:
                problems.append(f"grid for provider {provider!r} has no 'default' region")
            for region in regions:
                if region != region.strip().lower():
                    problems.append(f"grid region {provider}/{region!r} must be lower-case")
        if set(self.pue) != set(self.grid):
            problems.append(
                f"pue and grid must list the same providers; only in pue: {sorted(set(self.pue) - set(self.grid))}, "
                f"only in grid: {sorted(set(self.grid) - set(self.pue))}"
            )
        for alias, target in self.provider_aliases.items():
            if target not in self.pue:
                problems.append(f"provider alias {alias!r} points to unknown provider {target!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def __eq__(self, other: object) -> bool:  # fields only: the private caches are not part of the value
        if not isinstance(other, FactorSet):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # dict fields: not hashable


def _caches(fs: FactorSet) -> _Caches:
    # Read the private slot directly: pydantic's __getattr__ path for private attributes costs ~6 µs a
    # call, a large share of the per-event budget on the enrichment hot path.
    private = fs.__pydantic_private__
    caches = private["_cache"]  # type: ignore[index]
    if caches is None or caches.owner is not fs:
        caches = private["_cache"] = _Caches(fs)  # type: ignore[index]
    return caches


# --------------------------------------------------------------------------------------------- loading


def parse_factor_set(text: str) -> FactorSet:
    """YAML text -> validated FactorSet. Raises FactorSetError with every problem found."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FactorSetError(f"factor set is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise FactorSetError("factor set must be a YAML mapping")
    tiers = data.get("tiers")
    if isinstance(tiers, dict):  # the YAML keys tiers by name; the model also carries it
        data["tiers"] = {
            key: ({"name": key, **value} if isinstance(value, dict) else value)
            for key, value in tiers.items()
        }
    try:
        return FactorSet.model_validate(data)
    except ValidationError as exc:
        raise FactorSetError(f"invalid factor set: {_summarise(exc)}") from exc


def _summarise(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


@lru_cache(maxsize=16)
def load_factor_set(version: str = "v1.0") -> FactorSet:
    """The published factor set `core/factors/{version}.yaml` (cached)."""
    if not _VERSION_RE.match(version):
        raise FactorSetError(f"bad factor set version {version!r}: must look like v1.0")
    path = FACTORS_DIR / f"{version}.yaml"
    if not path.is_file():
        raise FactorSetError(f"no factor set {version!r} (expected {path})")
    fs = parse_factor_set(path.read_text(encoding="utf-8"))
    if fs.version != version:
        raise FactorSetError(f"{path.name} declares version {fs.version!r}")
    return fs


# --------------------------------------------------------------------------------------------- matching

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


def _canonical_provider(fs: FactorSet, provider: str) -> str:
    p = provider.strip().lower()
    return fs.provider_aliases.get(p, p)


def _pue_and_grid(fs: FactorSet, provider: str, region: str | None) -> tuple[float, float, list[str]]:
    """(PUE, grid kg CO2e/kWh, estimation reasons) of a provider and region: the provider's own figures
    (its default region when the region is unknown), else the set's defaults for an unknown provider."""
    reasons: list[str] = []
    prov = _canonical_provider(fs, provider)
    if prov in fs.pue:
        pue = fs.pue[prov]
        regions = fs.grid[prov]
        reg = region.strip().lower() if region is not None else None
        if reg is None or reg == "" or reg == "default":
            grid = regions["default"]
        elif reg in regions:
            grid = regions[reg]
        else:
            grid = regions["default"]
            reasons.append(
                f"unknown region {region!r} for provider {prov}: used the provider default grid intensity "
                f"{grid} kg CO2e/kWh"
            )
    else:
        pue = fs.default_pue
        grid = fs.default_grid_intensity
        reasons.append(
            f"unknown provider {provider!r}: used default PUE {pue} and default grid intensity {grid} kg CO2e/kWh"
        )
    return float(pue), float(grid), reasons


def grid_intensity(fs: FactorSet, provider: str, region: str | None) -> float:
    """The grid intensity (kg CO2e/kWh) the set applies to a provider and region."""
    return _pue_and_grid(fs, provider, region)[1]


def _resolve(fs: FactorSet, provider: str, model: str, region: str | None) -> _Resolved:
    key = (provider, model, region)
    cache = _caches(fs).resolve
    hit = cache.get(key)
    if hit is not None:
        return hit
    reasons: list[str] = []
    match = match_model(fs, model)
    if match.reason:
        reasons.append(match.reason)
    tier = fs.tiers[match.tier]
    pue, grid, place_reasons = _pue_and_grid(fs, provider, region)
    reasons += place_reasons
    per_token = tuple(
        (float(f.prefill), float(f.cached), float(f.cache_creation), float(f.decode))
        for f in (tier.point, tier.low, tier.high)
    )
    point_j = per_token[0]
    head = dict(
        zip(
            Footprint._fields[:10],  # model_tier … grid_intensity_kg_per_kwh
            (match.tier, fs.version, bool(reasons), tuple(reasons), point_j[0], point_j[3], point_j[1])
            + (point_j[2], float(pue), float(grid)),
            strict=True,
        )
    )
    resolved = _Resolved(
        tier=match.tier,
        point=tier.point,
        low=tier.low,
        high=tier.high,
        pue=float(pue),
        grid=float(grid),
        is_estimated=bool(reasons),
        reasons=tuple(reasons),
        per_token=per_token,
        head=head,
    )
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = resolved
    return resolved


# --------------------------------------------------------------------------------------------- calculation


def joules_to_kwh(j: float) -> float:
    return j / J_PER_KWH


def cached_savings(
    input_tokens_cached: int, j_per_prefill_token: float, j_per_cached_token: float, pue: float, grid: float
) -> tuple[float, float]:
    """(facility J, kg CO2e) the cached input tokens saved compared with paying the prefill price, at the
    event's own factors. Evaluated left to right in this order: the warehouse's fallback for ledger rows
    written without these fields (migration 0002's column defaults) computes the same floats."""
    saved_j = input_tokens_cached * (j_per_prefill_token - j_per_cached_token) * pue
    return float(saved_j), float(saved_j * grid / J_PER_KWH)


class Footprint(NamedTuple):
    """Everything EnrichedUsage needs beyond the raw event."""

    model_tier: str
    factors_version: str
    is_estimated: bool
    estimation_reasons: tuple[str, ...]
    j_per_prefill_token: float
    j_per_decode_token: float
    j_per_cached_token: float
    j_per_cache_creation_token: float
    pue: float
    grid_intensity_kg_per_kwh: float
    energy_j: float  # facility energy = IT energy × PUE
    energy_j_low: float
    energy_j_high: float
    co2_kg: float
    co2_kg_low: float
    co2_kg_high: float
    energy_cached_savings_j: float
    co2_cached_savings_kg: float


def _energies(r: _Resolved, uncached: int, cached: int, creation: int, output: int) -> tuple[float, ...]:
    """(energy_j, energy_j_low, energy_j_high, co2_kg, co2_kg_low, co2_kg_high, energy_cached_savings_j,
    co2_cached_savings_kg): IT joules per phase × PUE, then × grid intensity. The one place the formula lives
    (compute_footprint and enrich both call it)."""
    if uncached < 0 or cached < 0 or creation < 0 or output < 0:
        raise ValueError(f"token counts must be >= 0, got {(uncached, cached, creation, output)}")
    pue = r.pue
    kg_per_j = r.grid / J_PER_KWH
    (p0, c0, w0, d0), (p1, c1, w1, d1), (p2, c2, w2, d2) = r.per_token
    energy = (uncached * p0 + cached * c0 + creation * w0 + output * d0) * pue
    energy_low = (uncached * p1 + cached * c1 + creation * w1 + output * d1) * pue
    energy_high = (uncached * p2 + cached * c2 + creation * w2 + output * d2) * pue
    return (
        float(energy),
        float(energy_low),
        float(energy_high),
        float(energy * kg_per_j),
        float(energy_low * kg_per_j),
        float(energy_high * kg_per_j),
        *cached_savings(cached, p0, c0, pue, r.grid),
    )


def compute_footprint(
    fs: FactorSet,
    *,
    provider: str,
    model: str,
    region: str | None,
    input_tokens_uncached: int,
    input_tokens_cached: int,
    input_tokens_cache_creation: int,
    output_tokens: int,
) -> Footprint:
    r = _resolve(fs, provider, model, region)
    energies = _energies(
        r, input_tokens_uncached, input_tokens_cached, input_tokens_cache_creation, output_tokens
    )
    return Footprint._make((*r.head.values(), *energies))


_EVENT_FIELDS = tuple(UsageEvent.model_fields)
_ENRICHED_FIELDS = tuple(EnrichedUsage.model_fields)
# The fast path below builds the instance the way `model_construct` does, minus its per-field alias and
# default handling (which makes `model_construct` slower than full validation: ~20 µs vs ~12 µs here).
# It is valid only while every EnrichedUsage field is supplied by the event, the footprint or
# `enriched_at`, no field has an alias, and there is no post-init hook; otherwise use model_construct.
_FAST_CONSTRUCT = (
    _ENRICHED_FIELDS == (*_EVENT_FIELDS, *Footprint._fields, "enriched_at")
    and all(f.alias is None and f.validation_alias is None for f in EnrichedUsage.model_fields.values())
    and not EnrichedUsage.__pydantic_post_init__
    and not EnrichedUsage.__private_attributes__
)
_ALL_FIELDS_SET = frozenset(_ENRICHED_FIELDS)


def _construct(values: dict[str, Any]) -> EnrichedUsage:
    """`values` holds every field, in field order (checked by _FAST_CONSTRUCT)."""
    if not _FAST_CONSTRUCT:
        return EnrichedUsage.model_construct(**values)
    obj = EnrichedUsage.__new__(EnrichedUsage)
    object.__setattr__(obj, "__dict__", values)
    object.__setattr__(obj, "__pydantic_fields_set__", set(_ALL_FIELDS_SET))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


def enrich(event: UsageEvent, fs: FactorSet, enriched_at: datetime) -> EnrichedUsage:
    """The enriched event, built without re-validation (the event is already validated and the footprint
    is computed from validated data), normalised exactly as validation would: floats are floats, reasons
    a list, `enriched_at` in UTC — so it serialises identically to a validated one (tested)."""
    if enriched_at.tzinfo is None or enriched_at.utcoffset() is None:
        raise ValueError("enriched_at must be timezone-aware")
    r = _resolve(fs, event.provider, event.model, event.region)
    energies = _energies(
        r,
        event.input_tokens_uncached,
        event.input_tokens_cached,
        event.input_tokens_cache_creation,
        event.output_tokens,
    )
    if type(event) is UsageEvent:  # its __dict__ is exactly its fields, in order
        values = event.__dict__.copy()
    else:
        values = {name: getattr(event, name) for name in _EVENT_FIELDS}  # field order, as EnrichedUsage
    values["labels"] = dict(event.labels)
    values.update(r.head)  # the footprint's head, in field order
    values["estimation_reasons"] = list(r.reasons)
    (
        values["energy_j"],
        values["energy_j_low"],
        values["energy_j_high"],
        values["co2_kg"],
        values["co2_kg_low"],
        values["co2_kg_high"],
        values["energy_cached_savings_j"],
        values["co2_cached_savings_kg"],
    ) = energies
    values["enriched_at"] = enriched_at.astimezone(UTC)
    return _construct(values)
