"""The calculation: tokens (or a measured energy) -> energy -> CO2e, embodied CO2e, water and cost.

Written out (docs/methodology.md has the derivations):

    IT J        = Σ tokens_phase × J/token_phase          (prefill, decode, cached, cache_creation)
    facility J  = IT J × PUE(provider)                     = energy_j
    kWh         = facility J / 3.6e6
    co2_kg          = kWh × grid(provider, region)                 location-based (meaning unchanged from v1)
    co2_kg_market   = kWh × grid_market(provider, region)          market-based                       (v2)
    co2_kg_embodied = IT J × embodied_kg_per_it_j                  hardware manufacturing, not × PUE  (v2)
    water_l         = IT kWh × (wue_onsite(provider) + PUE × water_offsite(country(region)))         (v2)
    cost_usd        = (uncached × p_input + cached × p_cached + cache_write × p_cache_write
                       + output × p_output) / 1e6                  (core.pricing.cost_usd)            (v2)

Bounds: energy, both CO2e bases and water use the tier's low / high J per token with the same PUE, grid and
water factors; embodied low / high use the low / high IT energy × the low / high k (the hardware numbers
are uncertain too). Cost has no band (list prices). The cached-token savings (what the cached input tokens
would have cost at the prefill price, minus what they cost at the cached price, at the same PUE and grid)
are `cached_savings`.

Measured energy (UsageEvent.measured_energy_j, v2 sets): the measurement replaces the token estimate.
Brought to the facility boundary by what its boundary lacks — gpu: × host factor (accelerators → whole
server incl. host CPU/DRAM and provisioned idle) × PUE; server: × PUE; facility: as measured — and IT J =
facility J / PUE. Band: ± the stated uncertainty (else the factor set's default for the meter; for a gpu
boundary also the host factor's low / high), and never wider, relative to the point, than the token
estimate's band. energy_source = measured; is_estimated only when the provider or region fell back (PUE and
grid are then defaults) — an unknown model does not make a measured figure an estimate.

Modalities and units (v2.0.1 sets, `Extra`): the audio/image parts of the token figures add
part × J/token(phase) × (multiplier − 1) (point multiplier 1.0, so only the band moves); images, seconds of
audio, characters of speech and web searches add count × J per unit (images scaled by pixels) to the IT J,
before PUE — so every figure derived from IT J (CO2e, embodied, water) includes them; cost does not (the price
book is per token). Sets without these sections say so in `estimation_reasons` (units are then not counted).
A producer's `usage_note` label is added to the reasons and flags the event estimated.

A factor set without the v2 sections (v1.0) computes exactly as before and leaves the v2 figures None.
Pure functions; `_resolve` (everything that does not depend on token counts) is cached per FactorSet.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, NamedTuple

from core.contracts import (
    IMAGE_SIZE_LABEL,
    MODALITY_FIELDS,
    UNIT_FIELDS,
    USAGE_NOTE_LABEL,
    EnergySource,
    EnrichedUsage,
    MeasuredBoundary,
    UsageEvent,
)
from core.methodology.factors import _CACHE_LIMIT, J_PER_KWH, FactorSet
from core.methodology.matching import Place, _caches, match_model, place, price_for
from core.pricing import Prices, cost_exact_micros


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
    """Everything EnrichedUsage needs beyond the raw event (same names, same order)."""

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
    co2_kg: float  # location-based
    co2_kg_low: float
    co2_kg_high: float
    energy_cached_savings_j: float
    co2_cached_savings_kg: float
    # v2 (None when the factor set has no v2 data, i.e. v1.0; cost/prices None without a price)
    energy_source: EnergySource = EnergySource.estimated
    co2_kg_market: float | None = None
    co2_kg_market_low: float | None = None
    co2_kg_market_high: float | None = None
    co2_kg_embodied: float | None = None
    co2_kg_embodied_low: float | None = None
    co2_kg_embodied_high: float | None = None
    water_l: float | None = None
    water_l_low: float | None = None
    water_l_high: float | None = None
    cost_usd: float | None = None
    grid_market_intensity_kg_per_kwh: float | None = None
    embodied_kg_per_it_j: float | None = None
    wue_onsite_l_per_kwh: float | None = None
    water_offsite_l_per_kwh: float | None = None
    price_usd_per_1m_input: float | None = None
    price_usd_per_1m_cached: float | None = None
    price_usd_per_1m_cache_write: float | None = None
    price_usd_per_1m_output: float | None = None
    price_source: str | None = None


_V1_FIELDS = Footprint._fields[: Footprint._fields.index("energy_source")]
_V2_FIELDS = Footprint._fields[len(_V1_FIELDS) :]
_NO_PRICE = (None, None, None, None, None)
_V1_TAIL = (EnergySource.estimated, *(None,) * (len(_V2_FIELDS) - 1))  # a v1 set, no price
_TAIL_FIELDS = _V1_FIELDS[10:] + _V2_FIELDS  # energy_j … price_source


class _Resolved(NamedTuple):
    """Everything about (provider, model, region) that does not depend on token counts."""

    tier: str
    pue: float
    grid: float
    is_estimated: bool
    reasons: tuple[str, ...]
    model_reason: str | None  # unknown model
    place: Place
    # J per (uncached, cached, cache-creation, output) token for point, low, high
    per_token: tuple[tuple[float, float, float, float], ...]
    # the footprint fields that do not depend on token counts, in EnrichedUsage field order
    head: dict[str, Any]
    k: tuple[float, float, float] | None  # embodied kg CO2e per IT J: point, low, high (v2 sets)
    book_prices: Prices | None
    # derived once for the hot path (see _v2): per IT joule, market kg and water L; the factor fields
    per_it_j: tuple[float, float] | None
    factor_fields: tuple[Any, ...]
    book_fields: tuple[Any, ...]  # the price fields of the book's prices (or all None)


def _resolve(fs: FactorSet, provider: str, model: str, region: str | None) -> _Resolved:
    key = (provider, model, region)
    cache = _caches(fs).resolve
    hit = cache.get(key)
    if hit is not None:
        return hit  # type: ignore[return-value]
    reasons: list[str] = []
    match = match_model(fs, model)
    if match.reason:
        reasons.append(match.reason)
    tier = fs.tiers[match.tier]
    where = place(fs, provider, region)
    reasons += where.reasons
    per_token = tuple(
        (float(f.prefill), float(f.cached), float(f.cache_creation), float(f.decode))
        for f in (tier.point, tier.low, tier.high)
    )
    point_j = per_token[0]
    head = dict(
        zip(
            _V1_FIELDS[:10],  # model_tier … grid_intensity_kg_per_kwh
            (match.tier, fs.version, bool(reasons), tuple(reasons), point_j[0], point_j[3], point_j[1])
            + (point_j[2], where.pue, where.grid),
            strict=True,
        )
    )
    k = None
    per_it_j = None
    factor_fields: tuple[Any, ...] = (None, None, None, None)
    if fs.embodied is not None:
        band = fs.embodied.k_kg_per_j_it
        k = (float(band.point), float(band.low), float(band.high))
        assert (
            where.grid_market is not None and where.wue_onsite is not None and where.water_offsite is not None
        )
        per_it_j = (
            where.pue * where.grid_market / J_PER_KWH,  # facility kWh × market grid, per IT joule
            (where.wue_onsite + where.pue * where.water_offsite)
            / J_PER_KWH,  # IT kWh × (on-site + PUE × off-site)
        )
        factor_fields = (where.grid_market, k[0], where.wue_onsite, where.water_offsite)
    book = price_for(fs, provider, model)
    resolved = _Resolved(
        tier=match.tier,
        pue=where.pue,
        grid=where.grid,
        is_estimated=bool(reasons),
        reasons=tuple(reasons),
        model_reason=match.reason,
        place=where,
        per_token=per_token,
        head=head,
        k=k,
        book_prices=book,
        per_it_j=per_it_j,
        factor_fields=factor_fields,
        book_fields=_price_fields(book),
    )
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = resolved
    return resolved


def _it_joules(
    r: _Resolved, uncached: int, cached: int, creation: int, output: int
) -> tuple[float, float, float]:
    """IT joules (point, low, high) of the tokens: Σ tokens_phase × J/token_phase."""
    if uncached < 0 or cached < 0 or creation < 0 or output < 0:
        raise ValueError(f"token counts must be >= 0, got {(uncached, cached, creation, output)}")
    (p0, c0, w0, d0), (p1, c1, w1, d1), (p2, c2, w2, d2) = r.per_token
    return (
        uncached * p0 + cached * c0 + creation * w0 + output * d0,
        uncached * p1 + cached * c1 + creation * w1 + output * d1,
        uncached * p2 + cached * c2 + creation * w2 + output * d2,
    )


def _energies(r: _Resolved, it: tuple[float, float, float], cached: int) -> tuple[float, ...]:
    """(energy_j, energy_j_low, energy_j_high, co2_kg, co2_kg_low, co2_kg_high, energy_cached_savings_j,
    co2_cached_savings_kg) from IT joules: × PUE, then × location grid intensity. The one place the v1
    formula lives (compute_footprint and enrich both call it)."""
    pue = r.pue
    kg_per_j = r.grid / J_PER_KWH
    energy, energy_low, energy_high = it[0] * pue, it[1] * pue, it[2] * pue
    p0, c0 = r.per_token[0][0], r.per_token[0][1]
    return (
        float(energy),
        float(energy_low),
        float(energy_high),
        float(energy * kg_per_j),
        float(energy_low * kg_per_j),
        float(energy_high * kg_per_j),
        *cached_savings(cached, p0, c0, pue, r.grid),
    )


def _price_fields(p: Prices | None) -> tuple[Any, ...]:
    if p is None:
        return _NO_PRICE
    return (float(p.input), float(p.cached), float(p.cache_write), float(p.output), p.source)


def _v2(
    r: _Resolved,
    it: tuple[float, float, float],
    tokens: tuple[int, int, int, int],
    prices: Prices | None,
    source: EnergySource,
) -> tuple[Any, ...]:
    """The v2 figures and factors, in Footprint / EnrichedUsage field order (energy_source … price_source):
    market = IT J × PUE × grid_market / 3.6e6; embodied = IT J × k; water = IT J / 3.6e6 × (WUE on-site +
    PUE × off-site); cost = core.pricing's formula at the override's or the book's prices."""
    if prices is None:
        p, price_fields = r.book_prices, r.book_fields
    else:
        p, price_fields = prices, _price_fields(prices)
    cost = (
        None
        if p is None
        else float(cost_exact_micros(*tokens, p.input, p.cached, p.cache_write, p.output) / 1e6)
    )
    if r.per_it_j is None or r.k is None:  # v1 set: no environmental v2 factors
        if cost is None and source is EnergySource.estimated:
            return _V1_TAIL
        return (source, *(None,) * 9, cost, *(None,) * 4, *price_fields)
    market, water = r.per_it_j
    k0, k1, k2 = r.k
    i0, i1, i2 = it
    return (
        source,
        float(i0 * market),
        float(i1 * market),
        float(i2 * market),
        float(i0 * k0),
        float(i1 * k1),
        float(i2 * k2),
        float(i0 * water),
        float(i1 * water),
        float(i2 * water),
        cost,
        *r.factor_fields,
        *price_fields,
    )


class Extra(NamedTuple):
    """What an event carries beyond its four token figures (issue 21)."""

    parts: tuple[int, ...] = (0,) * len(MODALITY_FIELDS)  # MODALITY_FIELDS order
    units: tuple[float, ...] = (0.0,) * len(UNIT_FIELDS)  # UNIT_FIELDS order
    image_size: str | None = None
    note: str | None = None


# (multiplier attribute, phase index in _Resolved.per_token) per MODALITY_FIELDS entry
_MODALITY_PHASES = (
    ("audio_input", 0),
    ("image_input", 0),
    ("audio_input", 1),
    ("image_input", 1),
    ("audio_output", 3),
    ("image_output", 3),
)
_UNIT_NAMES = ("images", "s of audio transcribed", "characters of speech", "web searches")
_SIZE_RE = re.compile(r"^(\d{1,5})x(\d{1,5})$")


def extra_of(event: UsageEvent) -> Extra | None:
    """The event's modality parts, units and note; None when it has none (the common, text-only case)."""
    e = event
    note = e.labels.get(USAGE_NOTE_LABEL) if e.labels else None
    if not (
        note
        or e.input_audio_tokens
        or e.input_image_tokens
        or e.input_cached_audio_tokens
        or e.input_cached_image_tokens
        or e.output_audio_tokens
        or e.output_image_tokens
        or e.images
        or e.audio_seconds
        or e.audio_characters
        or e.web_search_calls
    ):
        return None
    return Extra(
        tuple(getattr(e, f) for f in MODALITY_FIELDS),
        tuple(getattr(e, f) for f in UNIT_FIELDS),
        e.labels.get(IMAGE_SIZE_LABEL) if e.labels else None,
        note,
    )


def _extra_it(fs: FactorSet, r: _Resolved, x: Extra) -> tuple[tuple[float, float, float], list[str], bool]:
    """(extra IT J (point, low, high), reasons, estimated) of an event's modality parts, units and note."""
    extra = [0.0, 0.0, 0.0]
    reasons: list[str] = []
    estimated = False
    if any(x.parts):
        if fs.modalities is None:
            reasons.append(
                f"audio/image tokens priced as text: factor set {fs.version} has no modality factors"
            )
        else:
            for n, (attr, phase) in zip(x.parts, _MODALITY_PHASES, strict=True):
                if n:
                    band = getattr(fs.modalities, attr)
                    for b, m in enumerate((band.point, band.low, band.high)):
                        extra[b] += n * r.per_token[b][phase] * (m - 1.0)
            if fs.modalities.estimated:
                estimated = True
                reasons.append(f"audio/image tokens: modality multipliers of {fs.version} (estimated)")
    if any(x.units):
        counted = ", ".join(f"{v:g} {name}" for v, name in zip(x.units, _UNIT_NAMES, strict=True) if v)
        if fs.units is None:
            estimated = True
            reasons.append(f"{counted}: not counted, factor set {fs.version} has no per-unit energy")
        else:
            u = fs.units
            scale = 1.0
            if x.units[0]:
                m = _SIZE_RE.match(x.image_size or "")
                if m:
                    scale = int(m[1]) * int(m[2]) / u.reference_image_pixels
                elif x.image_size:
                    reasons.append(
                        f"image size {x.image_size[:40]!r} unknown: priced as {u.reference_image_pixels} px"
                    )
            bands = (u.image, u.audio_second, u.audio_character, u.web_search_call)
            for v, band, k in zip(x.units, bands, (scale, 1.0, 1.0, 1.0), strict=True):
                if v:
                    extra[0] += v * band.point * k
                    extra[1] += v * band.low * k
                    extra[2] += v * band.high * k
            if u.estimated:
                estimated = True
            reasons.append(f"{counted}: J per unit of {fs.version}" + (" (estimated)" if u.estimated else ""))
    if x.note:
        estimated = True
        reasons.append(f"provider usage: {x.note}")
    return (extra[0], extra[1], extra[2]), reasons, estimated


def _with_extra(
    fs: FactorSet, r: _Resolved, head: dict[str, Any], it: tuple[float, float, float], x: Extra
) -> tuple[dict[str, Any], tuple[float, float, float]]:
    add, reasons, estimated = _extra_it(fs, r, x)
    head = {
        **head,
        "is_estimated": head["is_estimated"] or estimated,
        "estimation_reasons": (*head["estimation_reasons"], *reasons),
    }
    return head, (it[0] + add[0], it[1] + add[1], it[2] + add[2])


class Measured(NamedTuple):
    """A measured energy figure as the raw event gives it."""

    energy_j: float
    by: str
    boundary: MeasuredBoundary
    uncertainty_pct: float | None = None


def _measured_it(
    fs: FactorSet, r: _Resolved, m: Measured, estimate: tuple[float, float, float]
) -> tuple[tuple[float, float, float], str]:
    """IT joules (point, low, high) of a measurement, and the reason text that says how they were obtained."""
    assert fs.measurement is not None
    pue = r.pue
    boundary = MeasuredBoundary(m.boundary)  # a plain "gpu" from a direct caller, too
    if boundary is MeasuredBoundary.gpu:
        host = fs.measurement.gpu_host_factor
        it = m.energy_j * host.point
        host_lo, host_hi = host.low / host.point, host.high / host.point
        how = (
            f"{m.energy_j:g} J at the gpu boundary × host factor {host.point:g} "
            f"({host.low:g}-{host.high:g}: accelerators → whole server) × PUE {pue:g}"
        )
    elif boundary is MeasuredBoundary.server:
        it, host_lo, host_hi = m.energy_j, 1.0, 1.0
        how = f"{m.energy_j:g} J at the server boundary × PUE {pue:g}"
    else:
        it, host_lo, host_hi = m.energy_j / pue, 1.0, 1.0
        how = f"{m.energy_j:g} J at the facility boundary (no PUE added; IT energy = ÷ PUE {pue:g})"
    if m.uncertainty_pct is not None:
        u, u_how = m.uncertainty_pct, "as stated"
    else:
        table = fs.measurement.uncertainty_pct
        u = table.get(m.by, table["default"])
        u_how = f"{fs.version} default for {m.by if m.by in table else 'an unlisted meter'}"
    lo_rel = (1.0 - u / 100.0) * host_lo
    hi_rel = (1.0 + u / 100.0) * host_hi
    capped = ""
    if estimate[0] > 0:
        est_lo, est_hi = estimate[1] / estimate[0], estimate[2] / estimate[0]
        if lo_rel < est_lo or hi_rel > est_hi:
            capped = "; band capped at the token estimate's"
        lo_rel, hi_rel = max(lo_rel, est_lo), min(hi_rel, est_hi)
    reason = f"energy measured by {m.by}: {how}; band ±{u:g}% ({u_how}){capped}"
    return (it, it * lo_rel, it * hi_rel), reason


def _footprint(
    fs: FactorSet,
    r: _Resolved,
    tokens: tuple[int, int, int, int],
    measured: Measured | None,
    prices: Prices | None,
    extra: Extra | None = None,
) -> tuple[dict[str, Any] | None, tuple[float, ...], tuple[Any, ...]]:
    """(head override or None, the 8 v1 figures, the 20 v2 values) of one event."""
    uncached, cached, creation, output = tokens
    it = _it_joules(r, uncached, cached, creation, output)
    extra_reasons: tuple[str, ...] = ()
    if extra is not None:  # modality parts, units, a producer's note: part of the estimate
        extra_head, it = _with_extra(fs, r, r.head, it, extra)
        if measured is None:
            return extra_head, _energies(r, it, cached), _v2(r, it, tokens, prices, EnergySource.estimated)
        extra_reasons = extra_head["estimation_reasons"][len(r.reasons) :]
        r = r._replace(head=extra_head)
    if measured is None:
        return None, _energies(r, it, cached), _v2(r, it, tokens, prices, EnergySource.estimated)
    if fs.measurement is None:  # a v1 set cannot bring a measurement to the facility boundary
        reasons = (
            *r.head["estimation_reasons"],
            f"measured energy ({measured.energy_j:g} J by {measured.by}) not used: factor set {fs.version} has "
            "no measurement factors; energy estimated from tokens",
        )
        head = {**r.head, "is_estimated": True, "estimation_reasons": reasons}
        return head, _energies(r, it, cached), _v2(r, it, tokens, prices, EnergySource.estimated)
    it_m, how = _measured_it(fs, r, measured, it)
    reasons_list = [how, *r.place.reasons]
    if r.model_reason:
        reasons_list.append(
            f"{r.model_reason} (measured energy: the tier sets only the per-token factors shown and the band cap)"
        )
    reasons_list += extra_reasons  # the estimate's modality/unit notes: the measurement replaced their energy
    head = {**r.head, "is_estimated": bool(r.place.reasons), "estimation_reasons": tuple(reasons_list)}
    energies = _energies(r, it_m, cached)[:6] + _energies(r, it, cached)[6:]  # savings stay token-based
    return head, energies, _v2(r, it_m, tokens, prices, EnergySource.measured)


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
    measured: Measured | None = None,
    prices: Prices | None = None,
    extra: Extra | None = None,
) -> Footprint:
    """The footprint of one bucket of usage. `measured` replaces the token estimate of the energy (v2 sets);
    `prices` (an org's override) replaces the factor set's price book; `extra` (`extra_of(event)`) adds the
    event's modality parts, non-token units and note."""
    r = _resolve(fs, provider, model, region)
    tokens = (input_tokens_uncached, input_tokens_cached, input_tokens_cache_creation, output_tokens)
    head, energies, v2 = _footprint(fs, r, tokens, measured, prices, extra)
    return Footprint._make((*(head or r.head).values(), *energies, *v2))


def measured_of(event: UsageEvent) -> Measured | None:
    if event.measured_energy_j is None or event.measured_by is None or event.measured_boundary is None:
        return None
    return Measured(
        float(event.measured_energy_j),
        event.measured_by,
        event.measured_boundary,
        event.measured_uncertainty_pct,
    )


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
assert len(_TAIL_FIELDS) == 8 + len(_V2_FIELDS) and len(_V1_TAIL) == len(_V2_FIELDS)


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


def enrich(
    event: UsageEvent, fs: FactorSet, enriched_at: datetime, prices: Prices | None = None
) -> EnrichedUsage:
    """The enriched event, built without re-validation (the event is already validated and the footprint
    is computed from validated data), normalised exactly as validation would: floats are floats, reasons
    a list, `enriched_at` in UTC — so it serialises identically to a validated one (tested). `prices` (an
    org's override) replaces the factor set's price book."""
    if enriched_at.tzinfo is None or enriched_at.utcoffset() is None:
        raise ValueError("enriched_at must be timezone-aware")
    r = _resolve(fs, event.provider, event.model, event.region)
    tokens = (
        event.input_tokens_uncached,
        event.input_tokens_cached,
        event.input_tokens_cache_creation,
        event.output_tokens,
    )
    extra = extra_of(event)
    if event.measured_energy_j is None and extra is None:  # the hot path: _footprint inlined
        head = r.head
        it = _it_joules(r, *tokens)
        tail = _energies(r, it, tokens[1]) + _v2(r, it, tokens, prices, EnergySource.estimated)
    else:
        measured_head, energies, v2 = _footprint(fs, r, tokens, measured_of(event), prices, extra)
        head = measured_head or r.head
        tail = energies + v2
    if type(event) is UsageEvent:  # its __dict__ is exactly its fields, in order
        values = event.__dict__.copy()
    else:
        values = {name: getattr(event, name) for name in _EVENT_FIELDS}  # field order, as EnrichedUsage
    values["labels"] = dict(event.labels)
    values.update(head)  # the footprint's head, in field order
    values["estimation_reasons"] = list(head["estimation_reasons"])
    values.update(zip(_TAIL_FIELDS, tail, strict=True))  # energy_j … price_source, in field order
    values["enriched_at"] = enriched_at.astimezone(UTC)
    return _construct(values)
