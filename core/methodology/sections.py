"""The optional v2 sections of a factor set: embodied allocation, measurement defaults, countries (off-site
water), the price book — each with its unit checks."""

from __future__ import annotations

import math
from datetime import date

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SECONDS_PER_YEAR = 365 * 24 * 3600
BOUNDS = ("point", "low", "high")
MAX_WUE_L_PER_KWH = 10.0  # on-site WUE: hyperscalers 0.1-1.2, industry ~1.8; 1,000+ would be mL/kWh
MAX_OFFSITE_WATER_L_PER_KWH = 50.0  # WRI country averages 1-20 L/kWh (hydro-heavy grids highest)
# Embodied kg CO2e per J of IT energy: 1e-10 .. 1e-6 is 0.00036 .. 3.6 kg per kWh of IT energy; EcoLogits'
# hardware data gives ~0.05 kg/kWh. Values per kWh (1e4 x larger) or per g are caught.
MIN_EMBODIED_KG_PER_J = 1e-10
MAX_EMBODIED_KG_PER_J = 1e-6
MAX_PRICE_USD_PER_1M = (
    10_000.0  # the dearest list prices are ~600 USD/1M; per-token or per-1k units are caught
)


def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise ValueError("must be a finite number")
    return v


class Band(BaseModel):
    """A point value with its low and high bounds (low <= point <= high)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    point: float
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> Band:
        for v in (self.point, self.low, self.high):
            _finite(v)
        if not self.low <= self.point <= self.high:
            raise ValueError(f"need low <= point <= high, got {self.low} / {self.point} / {self.high}")
        return self


class BoundValues(BaseModel):
    """The input values that give a quantity's point, low and high bound (not themselves ordered: a LONG
    lifetime gives the LOW embodied bound)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    point: float = Field(gt=0, allow_inf_nan=False)
    low: float = Field(gt=0, allow_inf_nan=False)
    high: float = Field(gt=0, allow_inf_nan=False)


class EmbodiedFactors(BaseModel):
    """Embodied (hardware manufacturing) CO2e allocated per joule of IT energy:
    k = E_slot / (L x P) with E_slot = server_excl_gpu_kg / server_gpus + gpu_kg (one accelerator slot),
    L the hardware lifetime (s) and P the average IT power of a slot (W). The loader checks that the
    stated k matches its inputs (within 1%), so the published number cannot drift from its derivation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    server_excl_gpu_kg: float = Field(gt=0)
    server_gpus: int = Field(ge=1)
    gpu_kg: BoundValues
    lifetime_years: BoundValues
    slot_power_kw: BoundValues
    k_kg_per_j_it: Band
    sources: list[str] = Field(min_length=1)

    def derived_k(self, bound: str) -> float:
        """E_slot / (L x P) from the inputs listed for one bound (kg CO2e per J of IT energy)."""
        e_slot = self.server_excl_gpu_kg / self.server_gpus + getattr(self.gpu_kg, bound)
        seconds = getattr(self.lifetime_years, bound) * SECONDS_PER_YEAR
        watts = getattr(self.slot_power_kw, bound) * 1000.0
        return e_slot / (seconds * watts)

    @model_validator(mode="after")
    def _consistent(self) -> EmbodiedFactors:
        problems = []
        for bound in BOUNDS:
            k = getattr(self.k_kg_per_j_it, bound)
            if not MIN_EMBODIED_KG_PER_J <= k <= MAX_EMBODIED_KG_PER_J:
                problems.append(
                    f"k_kg_per_j_it.{bound} = {k} is outside [{MIN_EMBODIED_KG_PER_J}, {MAX_EMBODIED_KG_PER_J}] "
                    "kg CO2e per J of IT energy (0.05 kg/kWh is 1.39e-8 kg/J)"
                )
                continue
            expected = self.derived_k(bound)
            if abs(k - expected) > 0.01 * expected:
                problems.append(
                    f"k_kg_per_j_it.{bound} = {k} does not match its derivation E_slot / (L x P) = {expected:.4g}"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self


class MeasurementFactors(BaseModel):
    """How a measured energy figure is brought to the facility boundary, and its default uncertainty.

    gpu boundary: server J = measured J x host_factor (accelerators -> whole server incl. host and
    provisioned idle), then x PUE; server boundary: x PUE; facility boundary: as measured."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu_host_factor: Band
    uncertainty_pct: dict[str, float] = Field(description="meter -> default ± %; 'default' required")
    sources: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _valid(self) -> MeasurementFactors:
        problems = []
        if not (1.0 <= self.gpu_host_factor.low and self.gpu_host_factor.high <= 5.0):
            problems.append("gpu_host_factor must lie in [1, 5]")
        if "default" not in self.uncertainty_pct:
            problems.append("uncertainty_pct needs a 'default' meter")
        for meter, pct in self.uncertainty_pct.items():
            if not (math.isfinite(pct) and 0 <= pct <= 100):
                problems.append(f"uncertainty_pct[{meter!r}] = {pct}: must be a percentage in [0, 100]")
            if meter != meter.strip().lower():
                problems.append(f"meter {meter!r} must be lower-case")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class CountryFactors(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    gwp: float = Field(description="lifecycle grid intensity, kg CO2e/kWh (audit copy of the grid value)")
    water_offsite: float = Field(description="water consumed per kWh generated, L/kWh")


class PriceRow(BaseModel):
    """List prices of the models matching `pattern` (optionally only at `provider`), USD per 1M tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pattern: str = Field(min_length=1)
    provider: str | None = None
    input: float = Field(description="uncached input token")
    cached_input: float = Field(description="prompt-cache read")
    cache_write: float = Field(description="prompt-cache write (5-minute TTL); = input without a premium")
    output: float = Field(description="output token, incl. reasoning tokens")
    as_of: date
    source: list[str] = Field(min_length=1)

    @field_validator("input", "cached_input", "cache_write", "output")
    @classmethod
    def _price(cls, v: float) -> float:
        if not (math.isfinite(v) and 0 <= v <= MAX_PRICE_USD_PER_1M):
            raise ValueError(
                f"price {v} must be USD per 1,000,000 tokens in [0, {MAX_PRICE_USD_PER_1M}] (gpt-4o input is 2.50)"
            )
        return v


class PriceBook(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1)
    currency: str
    per_tokens: int
    models: list[PriceRow] = Field(min_length=1)

    @model_validator(mode="after")
    def _units(self) -> PriceBook:
        if self.currency != "USD":
            raise ValueError(f"price_book.currency must be USD, got {self.currency!r}")
        if self.per_tokens != 1_000_000:
            raise ValueError(f"price_book.per_tokens must be 1000000, got {self.per_tokens}")
        return self


# ------------------------------------------------------------------------------------- modalities (v2.0.1)

MAX_MODALITY_MULTIPLIER = 10.0
# IT joules per unit: a 1-megapixel image ~1e2-1e5 J (Luccioni et al. 2023 measured 0.06-11.5 Wh); a second of
# audio or a character of speech well under 1e4 J; a web search ~1e2-1e4 J. Values in Wh or kWh are caught.
MAX_J_PER_UNIT = {"image": 1e6, "audio_second": 1e4, "audio_character": 1e4, "web_search_call": 1e5}


class ModalityFactors(BaseModel):
    """Audio and image tokens: multipliers on the J per token of the same phase of the model's tier (a text
    token is 1). Applied to the modality parts of a UsageEvent's token figures."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    audio_input: Band
    image_input: Band
    audio_output: Band
    image_output: Band
    estimated: bool = Field(description="True: events with these tokens are flagged is_estimated")
    sources: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _range(self) -> ModalityFactors:
        for name in ("audio_input", "image_input", "audio_output", "image_output"):
            band: Band = getattr(self, name)
            if not (0 < band.low and band.high <= MAX_MODALITY_MULTIPLIER):
                raise ValueError(f"modalities.{name}: multipliers must be in (0, {MAX_MODALITY_MULTIPLIER}]")
        return self


class UnitFactors(BaseModel):
    """IT joules (before PUE) per unit of usage that is not counted in tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: Band = Field(description="J per image of reference_image_pixels; other sizes scale by pixel count")
    reference_image_pixels: int = Field(gt=0, le=100_000_000)
    audio_second: Band = Field(description="J per second of audio transcribed")
    audio_character: Band = Field(description="J per character synthesised to speech")
    web_search_call: Band = Field(description="J per web search")
    estimated: bool = Field(description="True: events with these units are flagged is_estimated")
    sources: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _range(self) -> UnitFactors:
        for name, limit in MAX_J_PER_UNIT.items():
            band: Band = getattr(self, name)
            if not (0 < band.low and band.high <= limit):
                raise ValueError(f"units.{name}: J per unit must be in (0, {limit:g}]")
        return self
