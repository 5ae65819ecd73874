"""Factor sets: the data model of `core/factors/{version}.yaml`, its unit checks and loading.

v1.0 has tiers, model patterns, PUE and location-based grid intensity. v2.0 adds OPTIONAL sections —
embodied allocation, measurement defaults, region → country, market-based grid, on-site WUE, off-site water
per country and a price book. A set without them (v1.0) loads and computes exactly as before: the v2
figures are then None. The environmental v2 sections come together (all or none); the price book is
independent.
"""

from __future__ import annotations

import math
import re
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

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

from core.methodology.sections import (
    MAX_OFFSITE_WATER_L_PER_KWH,
    MAX_WUE_L_PER_KWH,
    CountryFactors,
    EmbodiedFactors,
    MeasurementFactors,
    ModalityFactors,
    PriceBook,
    UnitFactors,
)

FACTORS_DIR = Path(__file__).resolve().parent.parent / "factors"
J_PER_KWH = 3.6e6
# Grid intensity must lie in [MIN, MAX) kg CO2e/kWh. No real grid's annual average is above ~1.1 kg/kWh
# or below ~1 g/kWh, so 350 (g/kWh) and 0.00035 (t/kWh, Cloud Carbon Footprint's unit) are both caught.
MIN_GRID_KG_PER_KWH = 0.001
MAX_GRID_KG_PER_KWH = 2.0
# A market-based factor may be 0 (electricity fully matched by contractual instruments).
MIN_MARKET_GRID_KG_PER_KWH = 0.0
MAX_PUE = 3.0  # sanity ceiling; hyperscalers report 1.08-1.2, the worst enterprise averages are ~2
_VERSION_RE = re.compile(r"^v\d+(\.\d+)*$")
_COUNTRY_RE = re.compile(r"^[A-Z]{3}$")
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


# the environmental v2 sections: present together or not at all
V2_SECTIONS = (
    "embodied",
    "measurement",
    "region_country",
    "default_country",
    "countries",
    "grid_market",
    "default_grid_market_intensity",
    "wue_onsite",
    "default_wue_onsite",
)


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
    # ---- v2 (optional) ----
    embodied: EmbodiedFactors | None = None
    measurement: MeasurementFactors | None = None
    region_country: dict[str, dict[str, str]] | None = Field(
        default=None, description="provider -> region -> ISO 3166-1 alpha-3 (same keys as grid)"
    )
    default_country: str | None = Field(default=None, description="country of an unknown provider")
    countries: dict[str, CountryFactors] | None = None
    grid_market: dict[str, dict[str, float]] | None = Field(
        default=None, description="provider -> region -> market-based kg CO2e/kWh, [0, 2)"
    )
    default_grid_market_intensity: float | None = None
    wue_onsite: dict[str, float] | None = Field(
        default=None, description="provider -> L per kWh of IT energy"
    )
    default_wue_onsite: float | None = None
    price_book: PriceBook | None = None
    # ---- v2.0.1 (optional): audio/image tokens and non-token units (docs/methodology.md, "Modalities") ----
    modalities: ModalityFactors | None = None
    units: UnitFactors | None = None
    sources: dict[str, str] = Field(description="source key -> citation / URL")

    _cache: Any = PrivateAttr(default=None)

    @property
    def has_v2(self) -> bool:
        """True when the set carries the v2 environmental sections (embodied, market, water, measurement)."""
        return self.embodied is not None

    @field_validator("version")
    @classmethod
    def _version_format(cls, v: str) -> str:
        if not _VERSION_RE.match(v):
            raise ValueError(f"version {v!r} must look like v1.0")
        return v

    @field_validator("pue", "grid", "provider_aliases", "region_country", "grid_market", "wue_onsite")
    @classmethod
    def _lower_keys(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        for key in v or {}:
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
        problems += _grid_problems(
            self.grid, ("default_grid_intensity", self.default_grid_intensity), MIN_GRID_KG_PER_KWH, "grid"
        )
        if set(self.pue) != set(self.grid):
            problems.append(
                f"pue and grid must list the same providers; only in pue: {sorted(set(self.pue) - set(self.grid))}, "
                f"only in grid: {sorted(set(self.grid) - set(self.pue))}"
            )
        for alias, target in self.provider_aliases.items():
            if target not in self.pue:
                problems.append(f"provider alias {alias!r} points to unknown provider {target!r}")
        problems += self._v2_problems()
        if self.price_book is not None:
            for row in self.price_book.models:
                for src in row.source:
                    if src not in self.sources:
                        problems.append(f"price row {row.pattern!r} cites unknown source {src!r}")
        for section in (self.modalities, self.units):
            for src in section.sources if section is not None else ():
                if src not in self.sources:
                    problems.append(f"modalities/units cite unknown source {src!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _v2_problems(self) -> list[str]:
        present = [name for name in V2_SECTIONS if getattr(self, name) is not None]
        if not present:
            return []
        if len(present) != len(V2_SECTIONS):
            missing = [name for name in V2_SECTIONS if getattr(self, name) is None]
            return [f"v2 sections come together: {present} given, {missing} missing"]
        assert self.embodied and self.measurement and self.countries is not None  # for the type checker
        assert (
            self.region_country is not None and self.grid_market is not None and self.wue_onsite is not None
        )
        assert self.default_grid_market_intensity is not None and self.default_wue_onsite is not None
        problems: list[str] = []
        for src in [*self.embodied.sources, *self.measurement.sources]:
            if src not in self.sources:
                problems.append(f"embodied/measurement cites unknown source {src!r}")
        providers = set(self.pue)
        for name in ("region_country", "grid_market", "wue_onsite"):
            keys = set(getattr(self, name))
            if keys != providers:
                problems.append(
                    f"{name} must list the same providers as pue; missing {sorted(providers - keys)}, "
                    f"extra {sorted(keys - providers)}"
                )
        for provider, regions in self.region_country.items():
            if provider in self.grid and set(regions) != set(self.grid[provider]):
                problems.append(
                    f"region_country[{provider!r}] must list the same regions as grid[{provider!r}]"
                )
            for region, country in regions.items():
                if country not in self.countries:
                    problems.append(f"region {provider}/{region} maps to unknown country {country!r}")
        if self.default_country not in self.countries:
            problems.append(f"default_country {self.default_country!r} is not in countries")
        for code, cf in self.countries.items():
            if not _COUNTRY_RE.match(code):
                problems.append(f"country {code!r} must be an ISO 3166-1 alpha-3 code (upper case)")
            if not (math.isfinite(cf.gwp) and MIN_GRID_KG_PER_KWH <= cf.gwp < MAX_GRID_KG_PER_KWH):
                problems.append(f"countries.{code}.gwp = {cf.gwp} is not kg CO2e/kWh")
            if not (math.isfinite(cf.water_offsite) and 0 <= cf.water_offsite < MAX_OFFSITE_WATER_L_PER_KWH):
                problems.append(
                    f"countries.{code}.water_offsite = {cf.water_offsite} must be L/kWh in "
                    f"[0, {MAX_OFFSITE_WATER_L_PER_KWH})"
                )
        problems += _grid_problems(
            self.grid_market,
            ("default_grid_market_intensity", self.default_grid_market_intensity),
            MIN_MARKET_GRID_KG_PER_KWH,
            "grid_market",
        )
        for provider, regions in self.grid_market.items():
            extra = set(regions) - set(self.grid.get(provider, {}))
            if extra:
                problems.append(f"grid_market[{provider!r}] has regions not in grid: {sorted(extra)}")
        for provider, value in [*self.wue_onsite.items(), ("default_wue_onsite", self.default_wue_onsite)]:
            if not (math.isfinite(value) and 0 <= value < MAX_WUE_L_PER_KWH):
                problems.append(
                    f"on-site WUE for {provider!r} is {value}: must be L/kWh in [0, {MAX_WUE_L_PER_KWH})"
                )
        return problems

    def __eq__(self, other: object) -> bool:  # fields only: the private caches are not part of the value
        if not isinstance(other, FactorSet):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # dict fields: not hashable


def _grid_problems(
    grid: dict[str, dict[str, float]], default: tuple[str, float], minimum: float, name: str
) -> list[str]:
    problems = []
    values = [(default[0], "-", default[1])] + [
        (provider, region, value) for provider, regions in grid.items() for region, value in regions.items()
    ]
    for provider, region, value in values:
        if not (math.isfinite(value) and minimum <= value < MAX_GRID_KG_PER_KWH):
            problems.append(
                f"{'grid' if name == 'grid' else 'market-based grid'} intensity {provider}/{region} = {value} "
                "kg CO2e/kWh is outside "
                f"[{minimum}, {MAX_GRID_KG_PER_KWH}): grid values are kg CO2e per kWh "
                "(US average ~0.37); 0.00035 is t/kWh, 350 is g/kWh"
            )
    for provider, regions in grid.items():
        if "default" not in regions:
            problems.append(f"{name} for provider {provider!r} has no 'default' region")
        for region in regions:
            if region != region.strip().lower():
                problems.append(f"{name} region {provider}/{region!r} must be lower-case")
    return problems


# --------------------------------------------------------------------------------------------- loading


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml (in PyYAML's wheels): ~7x faster


@lru_cache(maxsize=8)
def parse_factor_set(text: str) -> FactorSet:
    """YAML text -> validated FactorSet. Raises FactorSetError with every problem found. Cached by text: every
    API app, gateway and worker parses the same published sets, and a FactorSet is immutable."""
    try:
        data = yaml.load(text, Loader=_YAML_LOADER)
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


def builtin_versions() -> list[str]:
    """The versions shipped in `core/factors/`, oldest first by version number."""
    found = [p.stem for p in FACTORS_DIR.glob("v*.yaml") if _VERSION_RE.match(p.stem)]
    return sorted(found, key=lambda v: tuple(int(x) for x in v[1:].split(".")))


# Shipped sets that are not the built-in default (yet): loadable by version and publishable
# (`joulestream factors publish core/factors/<v>.yaml`), but neither `load_factor_set()`'s default nor seeded into
# the control plane. v2.0.1 (issue 21: modality and non-token-unit treatments) waits for that decision; promoting
# it = removing it here and adding it to `controlplane.factors.SEED_VERSIONS`.
OPT_IN_VERSIONS = frozenset({"v2.0.1"})
LATEST_VERSION = [v for v in builtin_versions() if v not in OPT_IN_VERSIONS][-1]


def load_factor_set(version: str | None = None) -> FactorSet:
    """The published factor set `core/factors/{version}.yaml` (cached: one instance per version); None = the
    built-in default (`LATEST_VERSION`, the highest version number shipped that is not in OPT_IN_VERSIONS)."""
    return _load(LATEST_VERSION if version is None else version)


@lru_cache(maxsize=16)
def _load(version: str) -> FactorSet:
    if not _VERSION_RE.match(version):
        raise FactorSetError(f"bad factor set version {version!r}: must look like v1.0")
    path = FACTORS_DIR / f"{version}.yaml"
    if not path.is_file():
        raise FactorSetError(f"no factor set {version!r} (expected {path})")
    fs = parse_factor_set(path.read_text(encoding="utf-8"))
    if fs.version != version:
        raise FactorSetError(f"{path.name} declares version {fs.version!r}")
    return fs
