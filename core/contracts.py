"""Event contracts: the raw usage event and the enriched event (the public Kafka contract).

`usage.raw.v1` carries `UsageEvent` JSON, `usage.enriched.v1` carries `EnrichedUsage` JSON and
`usage.dlq.v1` carries `DeadLetter` JSON. The JSON Schema files in `core/schemas/` are generated from
these models (`python -m core.schemas`) and a test fails when they drift. The enriched topic is a public
contract: changes are additive only (new optional fields), never renames or removals.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

SCHEMA_VERSION = 1
MAX_TOKENS = 10**12  # a per-event ceiling far above any real bucket; larger values are input errors
EARLIEST_EVENT = datetime(2015, 1, 1, tzinfo=UTC)  # before any LLM API existed: an impossible timestamp
MAX_CLOCK_SKEW = timedelta(days=1)  # an event stamped further in the future than this is rejected

# Issue 21: the modality parts and non-token units on UsageEvent, and the labels enrichment reads
MODALITY_FIELDS = (
    "input_audio_tokens",
    "input_image_tokens",
    "input_cached_audio_tokens",
    "input_cached_image_tokens",
    "output_audio_tokens",
    "output_image_tokens",
)
UNIT_FIELDS = ("images", "audio_seconds", "audio_characters", "web_search_calls")
IMAGE_SIZE_LABEL = "image_size"  # WxH of the `images` (default 1024x1024)
USAGE_NOTE_LABEL = "usage_note"  # a producer's note on the figures; enrichment adds it to estimation_reasons

_ZERO = timedelta(0)
_TIME_FIELDS = ("bucket_start", "bucket_end", "event_timestamp")
TokenCount = Annotated[int, Field(ge=0, le=MAX_TOKENS)]
# "impossible timestamp" when before EARLIEST_EVENT (checked in Rust); the future bound is in _timestamps
Timestamp = Annotated[AwareDatetime, Field(ge=EARLIEST_EVENT)]
Id = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:/@+\-]+$")]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class Source(StrEnum):
    gateway = "gateway"
    poller = "poller"
    import_ = "import"
    simulated = "simulated"
    telemetry = "telemetry"  # measured GPU energy (pipelines/telemetry)


class EnergySource(StrEnum):
    """How an event's energy was obtained."""

    estimated = "estimated"  # from its tokens and the factor set's per-token energies
    measured = "measured"  # from a meter (measured_energy_j on the raw event)


class MeasuredBoundary(StrEnum):
    """What a measured energy figure covers; enrichment applies PUE only where the boundary needs it."""

    gpu = "gpu"  # the accelerators alone (DCGM, NVML): host share and PUE are added
    server = "server"  # the whole server (IPMI, RAPL + GPU): PUE is added
    facility = "facility"  # at the facility meter: already includes cooling and losses


class RoutingTier(StrEnum):
    """Routing class of a request: what kind of work it asked for."""

    L0 = "L0"  # lookup: short factual answer, classification
    L1 = "L1"  # extraction: structured output from given text, tool / JSON-schema use
    L2 = "L2"  # aggregation: summarising, rewriting, multi-document synthesis
    L3 = "L3"  # reasoning: multi-step reasoning, planning, code, long outputs


# Labels the gateway puts on its events (read by the sustainability score, core/insights/score.py):
ROUTING_LABEL = "routing"  # "auto": the caller asked for model "auto"; "pinned": it named a model
FAILED_ATTEMPTS_LABEL = "failed_attempts"  # upstream attempts that failed before the one that served it


class UsageEvent(BaseModel):
    """One bucket of LLM usage: a single gateway request, or a provider's hourly usage bucket."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = Field(default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)
    event_id: Id = Field(
        description="Stable id: UUIDv7 for gateway requests, deterministic for poller buckets"
    )
    revision: int = Field(
        default=0, ge=0, description="Higher revision of the same event_id replaces the lower"
    )
    source: Source
    org_id: Id
    project_id: Id
    workload_id: Id
    connection_id: Id | None = None
    provider: Name = Field(description="openai, anthropic, google, openrouter, mistral, …")
    model: Name
    region: Name | None = Field(
        default=None, description="Provider region, e.g. us-east-1; None = provider default"
    )
    routing_tier: RoutingTier | None = None
    bucket_start: Timestamp
    bucket_end: Timestamp
    event_timestamp: Timestamp
    input_tokens_uncached: TokenCount = 0
    input_tokens_cached: TokenCount = 0
    input_tokens_cache_creation: TokenCount = 0
    output_tokens: TokenCount = 0
    request_count: int = Field(default=1, ge=0, le=MAX_TOKENS)
    # Modalities (issue 21; additive): the audio and image parts of the token figures above — text is the rest.
    # Units other than tokens (OpenAI's images / audio / web-search usage); docs/methodology.md, "Modalities".
    input_audio_tokens: TokenCount = Field(default=0, description="Part of input_tokens_uncached")
    input_image_tokens: TokenCount = Field(default=0, description="Part of input_tokens_uncached")
    input_cached_audio_tokens: TokenCount = Field(default=0, description="Part of input_tokens_cached")
    input_cached_image_tokens: TokenCount = Field(default=0, description="Part of input_tokens_cached")
    output_audio_tokens: TokenCount = Field(default=0, description="Part of output_tokens")
    output_image_tokens: TokenCount = Field(default=0, description="Part of output_tokens")
    images: TokenCount = Field(default=0, description="Images generated (size: label image_size, WxH)")
    audio_seconds: float = Field(
        default=0, ge=0, le=1e12, allow_inf_nan=False, description="Audio transcribed"
    )
    audio_characters: TokenCount = Field(default=0, description="Characters synthesised to speech")
    web_search_calls: TokenCount = Field(default=0, description="Web searches run by a model's search tool")
    measured_energy_j: float | None = Field(
        default=None,
        ge=0,
        le=1e15,
        allow_inf_nan=False,
        description="Energy measured for this usage (joules, at measured_boundary); replaces the token estimate",
    )
    measured_by: Annotated[str, Field(pattern=r"^[a-z0-9_.\-]{1,32}$")] | None = Field(
        default=None, description="The meter: dcgm, nvml, rapl, ipmi, …"
    )
    measured_boundary: MeasuredBoundary | None = None
    measured_uncertainty_pct: float | None = Field(
        default=None,
        ge=0,
        le=100,
        description="The measurement's stated uncertainty (± %); None → the factor set's default for the meter",
    )
    labels: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=200)]] = Field(
        default_factory=dict, max_length=32, description="Free-form labels, e.g. {'synthetic': 'true'}"
    )

    @model_validator(mode="after")
    def _timestamps(self) -> UsageEvent:
        """Timestamps in UTC, not in the future (beyond the allowed skew), and the bucket in order. The
        lower bound is checked by the field type, in Rust; this runs on the enrich hot path, so it is one
        validator for all three fields and as few aware-datetime operations as the rules need."""
        for name in _TIME_FIELDS:
            v = getattr(self, name)
            if v.utcoffset() != _ZERO:
                object.__setattr__(self, name, v.astimezone(UTC))  # frozen model: normalise while validating
        latest = datetime.now(UTC) + MAX_CLOCK_SKEW
        for name in ("bucket_end", "event_timestamp"):  # bucket_start <= bucket_end is checked below
            if getattr(self, name) > latest:
                raise ValueError(
                    f"{name}: impossible timestamp {getattr(self, name).isoformat()}: "
                    f"more than {MAX_CLOCK_SKEW} in the future"
                )
        if self.bucket_end < self.bucket_start:
            raise ValueError("bucket_end is before bucket_start")
        if (
            self.input_audio_tokens + self.input_image_tokens > self.input_tokens_uncached
            or self.input_cached_audio_tokens + self.input_cached_image_tokens > self.input_tokens_cached
            or self.output_audio_tokens + self.output_image_tokens > self.output_tokens
        ):
            raise ValueError(
                "audio and image tokens are parts of the token figures: their sum exceeds the total"
            )
        if self.measured_energy_j is not None and (
            self.measured_by is None or self.measured_boundary is None
        ):
            raise ValueError("measured_energy_j needs measured_by and measured_boundary")
        return self

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens_uncached
            + self.input_tokens_cached
            + self.input_tokens_cache_creation
            + self.output_tokens
        )


class EnrichedUsage(UsageEvent):
    """A usage event with its energy and carbon, and every factor needed to recompute them."""

    model_tier: str = Field(description="Tier the model matched in the factor set (small, medium, …)")
    factors_version: str
    is_estimated: bool = Field(description="True when the model or region fell back to a default")
    estimation_reasons: list[str] = Field(default_factory=list)
    j_per_prefill_token: float = Field(ge=0)
    j_per_decode_token: float = Field(ge=0)
    j_per_cached_token: float = Field(ge=0)
    j_per_cache_creation_token: float = Field(ge=0)
    pue: float = Field(ge=1)
    grid_intensity_kg_per_kwh: float = Field(ge=0)
    energy_j: float = Field(ge=0, description="Facility energy (IT energy × PUE), joules")
    energy_j_low: float = Field(ge=0)
    energy_j_high: float = Field(ge=0)
    co2_kg: float = Field(ge=0, description="Location-based CO2e, kg")
    co2_kg_low: float = Field(ge=0)
    co2_kg_high: float = Field(ge=0)
    energy_cached_savings_j: float | None = Field(
        default=None,
        description="Facility J the cached input tokens saved compared with paying the prefill price "
        "(input_tokens_cached × (j_per_prefill_token − j_per_cached_token) × pue); None when the producer "
        "predates the field (the warehouse then computes it from the recorded factors)",
    )
    co2_cached_savings_kg: float | None = Field(
        default=None,
        description="CO2e of energy_cached_savings_j at the event's grid intensity, kg (None: as above)",
    )
    # Methodology v2 (additive: None when the producer or the factor set predates them)
    energy_source: EnergySource = EnergySource.estimated
    co2_kg_market: float | None = Field(default=None, ge=0, description="Market-based Scope 2 CO2e, kg")
    co2_kg_market_low: float | None = Field(default=None, ge=0)
    co2_kg_market_high: float | None = Field(default=None, ge=0)
    co2_kg_embodied: float | None = Field(
        default=None, ge=0, description="Embodied (Scope 3: hardware manufacturing) CO2e allocated to it, kg"
    )
    co2_kg_embodied_low: float | None = Field(default=None, ge=0)
    co2_kg_embodied_high: float | None = Field(default=None, ge=0)
    water_l: float | None = Field(default=None, ge=0, description="Water consumed on and off site, litres")
    water_l_low: float | None = Field(default=None, ge=0)
    water_l_high: float | None = Field(default=None, ge=0)
    cost_usd: float | None = Field(default=None, ge=0, description="Price of the tokens, USD")
    grid_market_intensity_kg_per_kwh: float | None = Field(default=None, ge=0)
    embodied_kg_per_it_j: float | None = Field(
        default=None, ge=0, description="Embodied CO2e per joule of IT energy (the hardware-time allocation)"
    )
    wue_onsite_l_per_kwh: float | None = Field(default=None, ge=0)
    water_offsite_l_per_kwh: float | None = Field(default=None, ge=0)
    price_usd_per_1m_input: float | None = Field(default=None, ge=0)
    price_usd_per_1m_cached: float | None = Field(default=None, ge=0)
    price_usd_per_1m_cache_write: float | None = Field(default=None, ge=0)
    price_usd_per_1m_output: float | None = Field(default=None, ge=0)
    price_source: str | None = Field(
        default=None,
        description="Where the prices came from: the factor set's price book, or an org override",
    )
    enriched_at: AwareDatetime

    @field_validator("enriched_at")
    @classmethod
    def _enriched_utc(cls, v: datetime) -> datetime:
        return v.astimezone(UTC)


class DeadLetter(BaseModel):
    """What `usage.dlq.v1` carries: the original bytes (base64) and why they were rejected."""

    model_config = ConfigDict(extra="forbid")

    stage: str = Field(description="decode | validate | enrich | sink")
    error: str = Field(description="Short, human-readable reason")
    errors: list[dict] = Field(default_factory=list, description="Field errors (pydantic), if any")
    original_b64: str = Field(description="The original message value, base64")
    original_key: str | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    failed_at: AwareDatetime
