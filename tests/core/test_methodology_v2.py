"""Methodology v2 (factor set v2.0): market-based and embodied CO2e, water, cost, measured energy, the v2
loader checks, and properties of the formulas.

Expected values are computed here by hand from literal numbers published in core/factors/v2.0.yaml (quoted
next to each), never by calling the code under test.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from core.contracts import EnergySource, EnrichedUsage
from core.methodology import (
    FactorSet,
    FactorSetError,
    Footprint,
    Measured,
    Prices,
    compute_footprint,
    enrich,
    load_factor_set,
    parse_factor_set,
    price_for,
)
from core.pricing import cost_usd, price_exact_micros, price_micros
from tests.core.test_methodology import _assert_serialises_like_validated, _event

V2_YAML = Path(__file__).resolve().parents[2] / "core" / "factors" / "v2.0.yaml"
REL = 1e-12

# v2.0 literals
PUE_OPENAI, GRID_USA, MARKET_US_AZURE, WUE_MS, OFFSITE_USA = 1.18, 0.3844, 0.0133, 0.27, 3.132
K_POINT, K_LOW, K_HIGH = 1.389e-8, 4.632e-9, 2.083e-8


@pytest.fixture(scope="module")
def fs() -> FactorSet:
    return load_factor_set("v2.0")


def fp_of(
    fs: FactorSet, provider: str, model: str, region: str | None = None, *, u=0, c=0, w=0, o=0, **kw
) -> Footprint:
    return compute_footprint(
        fs,
        provider=provider,
        model=model,
        region=region,
        input_tokens_uncached=u,
        input_tokens_cached=c,
        input_tokens_cache_creation=w,
        output_tokens=o,
        **kw,
    )


def test_default_is_v2_and_v1_stays_loadable() -> None:
    assert load_factor_set().version == "v2.0"
    v1 = load_factor_set("v1.0")
    assert not v1.has_v2 and v1.price_book is None and v1.embodied is None


# --------------------------------------------------------------------------------------------- formulas


def test_frontier_chat_by_hand(fs: FactorSet) -> None:
    """gpt-4o (large: prefill 0.5, decode 3.0 J; low 0.1 / 1.0; high 3.75 / 15.0), openai (PUE 1.18, USA),
    500 in / 300 out."""
    fp = fp_of(fs, "openai", "gpt-4o", u=500, o=300)
    it, it_low, it_high = 500 * 0.5 + 300 * 3.0, 500 * 0.1 + 300 * 1.0, 500 * 3.75 + 300 * 15.0
    assert (it, it_low, it_high) == (1150.0, 350.0, 6375.0)
    facility = it * PUE_OPENAI
    assert fp.energy_j == pytest.approx(1357.0, rel=REL)
    # location-based (meaning unchanged): facility kWh × Ember USA 0.3844
    assert fp.co2_kg == pytest.approx(facility / 3.6e6 * GRID_USA, rel=REL)
    # market-based: facility kWh × (USA 0.3844 × Microsoft MB/LB 0.0345 = 0.0133)
    assert fp.grid_market_intensity_kg_per_kwh == MARKET_US_AZURE
    assert fp.co2_kg_market == pytest.approx(1357.0 / 3.6e6 * 0.0133, rel=REL)
    assert fp.co2_kg_market == pytest.approx(5.0133611e-6, rel=1e-7)
    assert fp.co2_kg_market_low == pytest.approx(350 * 1.18 / 3.6e6 * 0.0133, rel=REL)
    assert fp.co2_kg_market_high == pytest.approx(6375 * 1.18 / 3.6e6 * 0.0133, rel=REL)
    # embodied: IT J × k, bounds low IT × low k .. high IT × high k
    assert fp.embodied_kg_per_it_j == K_POINT
    assert fp.co2_kg_embodied == pytest.approx(1150 * 1.389e-8, rel=REL)  # 1.597e-5 kg = 0.016 g
    assert fp.co2_kg_embodied_low == pytest.approx(350 * 4.632e-9, rel=REL)
    assert fp.co2_kg_embodied_high == pytest.approx(6375 * 2.083e-8, rel=REL)
    # water: IT kWh × (on-site 0.27 + PUE 1.18 × off-site USA 3.132)
    assert (fp.wue_onsite_l_per_kwh, fp.water_offsite_l_per_kwh) == (WUE_MS, OFFSITE_USA)
    assert fp.water_l == pytest.approx(1150 / 3.6e6 * (0.27 + 1.18 * 3.132), rel=REL)
    assert fp.water_l == pytest.approx(1.26684e-3, rel=1e-5)
    assert fp.water_l_low == pytest.approx(350 / 3.6e6 * (0.27 + 1.18 * 3.132), rel=REL)
    assert fp.water_l_high == pytest.approx(6375 / 3.6e6 * (0.27 + 1.18 * 3.132), rel=REL)
    # cost: gpt-4o 2.50 / 10.00 USD per 1M
    assert fp.cost_usd == pytest.approx(500 * 2.50 / 1e6 + 300 * 10.00 / 1e6, rel=REL)
    assert (fp.price_usd_per_1m_input, fp.price_usd_per_1m_output) == (2.5, 10.0)
    assert fp.price_source is not None and "pb-2026-12-03" in fp.price_source and "gpt-4o*" in fp.price_source
    assert fp.energy_source is EnergySource.estimated and not fp.is_estimated


def test_cost_prices_all_four_token_classes(fs: FactorSet) -> None:
    """claude-sonnet-4-5: 3.00 input, 0.30 cache read, 3.75 cache write, 15.00 output (USD per 1M)."""
    fp = fp_of(fs, "anthropic", "claude-sonnet-4-5", u=1000, c=2000, w=500, o=400)
    assert fp.cost_usd == pytest.approx((1000 * 3.0 + 2000 * 0.3 + 500 * 3.75 + 400 * 15.0) / 1e6, rel=REL)
    assert fp.cost_usd == pytest.approx(0.011475, rel=REL)
    assert (
        fp.price_usd_per_1m_input,
        fp.price_usd_per_1m_cached,
        fp.price_usd_per_1m_cache_write,
        fp.price_usd_per_1m_output,
    ) == (3.0, 0.3, 3.75, 15.0)


def test_google_market_and_water(fs: FactorSet) -> None:
    """google: PUE 1.09, market 0.096 (Gemini paper), on-site WUE 1.18; europe-west1 → BEL (0.1498, off-site
    2.62). gemini-2.5-pro is large: 1,000 output tokens = 3,000 J IT."""
    fp = fp_of(fs, "google", "gemini-2.5-pro", "europe-west1", o=1000)
    assert fp.co2_kg == pytest.approx(3000 * 1.09 / 3.6e6 * 0.1498, rel=REL)
    assert fp.co2_kg_market == pytest.approx(3000 * 1.09 / 3.6e6 * 0.096, rel=REL)
    assert fp.water_l == pytest.approx(3000 / 3.6e6 * (1.18 + 1.09 * 2.62), rel=REL)
    assert fp.cost_usd == pytest.approx(1000 * 10.0 / 1e6, rel=REL)


def test_location_fallback_market_equals_location(fs: FactorSet) -> None:
    """AWS has no published market-based factor: the location value stands in (documented, not flagged)."""
    fp = fp_of(fs, "bedrock", "anthropic.claude-3-5-haiku-20241022-v1:0", "eu-central-1", u=100, o=100)
    assert fp.grid_market_intensity_kg_per_kwh == fp.grid_intensity_kg_per_kwh == 0.3296  # DEU
    assert fp.co2_kg_market == fp.co2_kg
    assert fp.water_offsite_l_per_kwh == 1.947 and fp.wue_onsite_l_per_kwh == 0.12
    assert not fp.is_estimated


def test_unknown_provider_takes_the_world_defaults(fs: FactorSet) -> None:
    fp = fp_of(fs, "someco", "gpt-4o", o=1000)
    assert fp.is_estimated and "unknown provider" in fp.estimation_reasons[0]
    assert (fp.pue, fp.grid_intensity_kg_per_kwh, fp.grid_market_intensity_kg_per_kwh) == (
        1.25,
        0.4583,
        0.4583,
    )
    assert (fp.wue_onsite_l_per_kwh, fp.water_offsite_l_per_kwh) == (1.8, 3.908)  # industry WUE, WRI world
    assert fp.water_l == pytest.approx(3000 / 3.6e6 * (1.8 + 1.25 * 3.908), rel=REL)


def test_no_price_leaves_cost_none_without_flagging(fs: FactorSet) -> None:
    fp = fp_of(fs, "openai", "gpt-9-experimental", o=10)
    assert fp.cost_usd is None and fp.price_source is None and fp.price_usd_per_1m_input is None
    assert fp.co2_kg_embodied is not None  # the other v2 figures do not depend on a price
    assert fp.estimation_reasons == ("unknown model 'gpt-9-experimental': fell back to tier large",)


def test_price_rows_restricted_to_a_provider(fs: FactorSet) -> None:
    aws = price_for(fs, "bedrock", "meta.llama3-1-70b-instruct-v1:0")
    together = price_for(fs, "together", "meta-llama/llama-3.1-70b-instruct")
    assert aws is not None and (aws.input, aws.output) == (0.72, 0.72) and "at aws" in aws.source
    assert together is not None and (together.input, together.output) == (0.88, 0.88)
    assert price_for(fs, "openrouter", "meta-llama/llama-3.1-70b-instruct") is None
    assert price_for(load_factor_set("v1.0"), "openai", "gpt-4o") is None


def test_org_override_replaces_the_price_book(fs: FactorSet) -> None:
    override = Prices(1.0, 0.5, 2.0, 4.0, "org override acme (2026-12-01)")
    fp = fp_of(fs, "openai", "gpt-4o", u=1000, c=1000, w=1000, o=1000, prices=override)
    assert fp.cost_usd == pytest.approx((1000 * 1.0 + 1000 * 0.5 + 1000 * 2.0 + 1000 * 4.0) / 1e6, rel=REL)
    assert fp.price_source == "org override acme (2026-12-01)"
    # with a v1.0 set an override still prices the event; the environmental v2 figures stay None
    v1 = fp_of(load_factor_set("v1.0"), "openai", "gpt-4o", u=1000, o=1000, prices=override)
    assert v1.cost_usd == pytest.approx(0.005, rel=REL) and v1.co2_kg_market is None and v1.water_l is None


def test_v1_set_leaves_every_v2_figure_none() -> None:
    fp = fp_of(load_factor_set("v1.0"), "openai", "gpt-4o", u=500, o=300)
    v2 = fp._asdict()
    assert v2.pop("energy_source") is EnergySource.estimated
    assert all(v2[name] is None for name in Footprint._fields[Footprint._fields.index("co2_kg_market") :])
    assert fp.energy_j == pytest.approx(1150 * 1.18, rel=REL) and fp.grid_intensity_kg_per_kwh == 0.37


def test_one_cost_formula_for_gateway_and_enrichment() -> None:
    """The gateway's price (one input price for every input token) is the same formula as cost_usd."""
    p = Prices(2.5, 2.5, 2.5, 10.0, "x")
    assert price_exact_micros(1234, 567, 2.5, 10.0) == cost_usd(1234, 0, 0, 567, p) * 1e6
    assert price_micros(1234, 567, 2.5, 10.0) == 8755  # ceil(1234 × 2.5 + 567 × 10) = ceil(8755.0)
    with pytest.raises(ValueError, match="token counts"):
        cost_usd(-1, 0, 0, 0, p)


def test_reasoning_minis_are_reasoning_small(fs: FactorSet) -> None:
    """The tier decision (docs/methodology.md, "Reasoning minis"): decode 0.3 × 2.5 = 0.75 J."""
    for model in ("o4-mini", "o3-mini-2025-01-31", "openai/o1-mini", "magistral-small-2506"):
        assert fp_of(fs, "openai", model, o=1).model_tier == "reasoning-small", model
    assert fp_of(fs, "openai", "o4-mini", o=1000).energy_j == pytest.approx(750 * 1.18, rel=REL)
    assert fp_of(fs, "openai", "o3", o=1).model_tier == "reasoning"
    assert (
        fp_of(load_factor_set("v1.0"), "openai", "o4-mini", o=1).model_tier == "reasoning"
    )  # v1.0 as published


# --------------------------------------------------------------------------------------------- measured


def test_measured_at_server_boundary(fs: FactorSet) -> None:
    """1,000 J at the server → × PUE 1.18; dcgm default ±5%; IT energy 1,000 J drives embodied and water."""
    fp = fp_of(fs, "openai", "gpt-4o", u=500, o=300, measured=Measured(1000.0, "dcgm", "server"))
    assert fp.energy_source is EnergySource.measured and not fp.is_estimated
    assert fp.energy_j == pytest.approx(1180.0, rel=REL)
    assert (fp.energy_j_low, fp.energy_j_high) == (
        pytest.approx(1121.0, rel=REL),
        pytest.approx(1239.0, rel=REL),
    )
    assert fp.co2_kg == pytest.approx(1180 / 3.6e6 * 0.3844, rel=REL)
    assert fp.co2_kg_embodied == pytest.approx(1000 * 1.389e-8, rel=REL)
    assert fp.water_l == pytest.approx(1000 / 3.6e6 * (0.27 + 1.18 * 3.132), rel=REL)
    assert "energy measured by dcgm" in fp.estimation_reasons[0] and "±5%" in fp.estimation_reasons[0]
    # the cached-token savings stay the token counterfactual; cost is still from the tokens
    assert fp.cost_usd == pytest.approx(0.00425, rel=REL)


def test_measured_at_gpu_boundary_adds_host_share(fs: FactorSet) -> None:
    """gpu: × host factor 1.60 (low 1.21, high 2.2), × PUE; band = ±5% × the host factor's range."""
    fp = fp_of(fs, "openai", "gpt-4o", u=500, o=300, measured=Measured(1000.0, "dcgm", "gpu"))
    assert fp.energy_j == pytest.approx(1000 * 1.60 * 1.18, rel=REL)
    assert fp.energy_j_low == pytest.approx(1000 * 0.95 * 1.21 * 1.18, rel=REL)
    assert fp.energy_j_high == pytest.approx(1000 * 1.05 * 2.2 * 1.18, rel=REL)
    assert fp.co2_kg_embodied == pytest.approx(1600 * 1.389e-8, rel=REL)


def test_measured_at_facility_boundary_adds_nothing(fs: FactorSet) -> None:
    fp = fp_of(fs, "openai", "gpt-4o", o=300, measured=Measured(1000.0, "ipmi", "facility", 2.0))
    assert fp.energy_j == 1000.0 and fp.pue == 1.18
    assert (fp.energy_j_low, fp.energy_j_high) == (pytest.approx(980.0), pytest.approx(1020.0))  # stated ±2%
    assert fp.co2_kg_embodied == pytest.approx(1000 / 1.18 * 1.389e-8, rel=REL)  # IT J = facility ÷ PUE
    assert "as stated" in fp.estimation_reasons[0]


def test_measured_band_never_wider_than_the_estimate(fs: FactorSet) -> None:
    """A ±100% meter: the low bound is capped at the token estimate's relative one (large 350 / 1,150); the
    high (+100% = ×2) is inside the estimate's (6,375 / 1,150 = ×5.5) and stays."""
    fp = fp_of(fs, "openai", "gpt-4o", u=500, o=300, measured=Measured(1000.0, "x", "server", 100.0))
    assert fp.energy_j_low == pytest.approx(1180 * 350 / 1150, rel=REL)
    assert fp.energy_j_high == pytest.approx(1180 * 2.0, rel=REL)
    assert "capped" in fp.estimation_reasons[0]
    unlisted = fp_of(fs, "openai", "gpt-4o", u=500, o=300, measured=Measured(1000.0, "shelly", "server"))
    assert unlisted.energy_j_low == pytest.approx(1180 * 0.8, rel=REL)  # default 20% for an unlisted meter


def test_measured_fallbacks(fs: FactorSet) -> None:
    unknown_model = fp_of(fs, "openai", "gpt-9", o=10, measured=Measured(50.0, "nvml", "server"))
    assert not unknown_model.is_estimated  # the energy does not depend on the tier
    assert any("unknown model 'gpt-9'" in r for r in unknown_model.estimation_reasons)
    unknown_region = fp_of(fs, "aws", "gpt-4o", "mars-1", o=10, measured=Measured(50.0, "nvml", "server"))
    assert unknown_region.is_estimated  # PUE and grid are the provider's defaults
    v1 = fp_of(load_factor_set("v1.0"), "openai", "gpt-4o", o=300, measured=Measured(50.0, "nvml", "server"))
    assert v1.energy_source is EnergySource.estimated and v1.is_estimated
    assert v1.energy_j == pytest.approx(900 * 1.18, rel=REL)
    assert "not used: factor set v1.0 has no measurement factors" in v1.estimation_reasons[-1]


def test_enrich_v2_and_measured_serialise_like_validated(fs: FactorSet) -> None:
    at = datetime(2026, 1, 6, tzinfo=UTC)
    plain = enrich(_event(), fs, at)
    assert plain.co2_kg_market is not None and plain.cost_usd is not None
    _assert_serialises_like_validated(plain)
    measured = enrich(
        _event(measured_energy_j=500.0, measured_by="dcgm", measured_boundary="gpu"),
        fs,
        at,
        prices=Prices(1, 1, 1, 1, "org override"),
    )
    assert measured.energy_source is EnergySource.measured and measured.price_source == "org override"
    assert measured.energy_j == pytest.approx(500 * 1.6 * 1.18, rel=REL)
    _assert_serialises_like_validated(measured)
    again = EnrichedUsage.model_validate_json(measured.model_dump_json())
    assert again.energy_source is EnergySource.measured


# --------------------------------------------------------------------------------------------- loader


def _raw() -> dict:
    return yaml.safe_load(V2_YAML.read_text(encoding="utf-8"))


def _parse(data: dict) -> FactorSet:
    return parse_factor_set(yaml.safe_dump(data, sort_keys=False))


def test_round_trip_of_shipped_v2() -> None:
    assert _parse(_raw()) == load_factor_set("v2.0")


def test_market_grid_may_be_zero_but_not_a_unit_slip() -> None:
    data = _raw()
    data["grid_market"]["aws"]["default"] = 0.0  # 100% matched: allowed
    fs0 = _parse(data)
    assert fp_of(fs0, "aws", "gpt-4o", o=1000).co2_kg_market == 0.0
    data["grid_market"]["aws"]["default"] = 384.4  # g/kWh
    with pytest.raises(FactorSetError, match=r"market-based grid intensity aws/default = 384\.4"):
        _parse(data)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("wue_onsite", "google"), 1180.0, "on-site WUE for 'google' is 1180.0"),  # mL/kWh
        (("countries", "USA", "water_offsite"), -1.0, r"countries\.USA\.water_offsite"),
        (
            ("embodied", "k_kg_per_j_it"),
            {"point": 0.05, "low": 0.0167, "high": 0.075},
            r"point = 0\.05 is outside",
        ),
        (("embodied", "k_kg_per_j_it", "high"), 3.0e-8, "does not match its derivation"),
        (("region_country", "aws", "eu-west-1"), "XXX", "unknown country 'XXX'"),
        (("price_book", "per_tokens"), 1000, "per_tokens must be 1000000"),
        (("measurement", "uncertainty_pct", "dcgm"), 500.0, "must be a percentage"),
    ],
)
def test_v2_unit_and_reference_errors_are_rejected(path: tuple, value: object, message: str) -> None:
    data = _raw()
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(FactorSetError, match=message):
        _parse(data)


def test_price_units_and_sources_are_checked() -> None:
    data = _raw()
    data["price_book"]["models"][0]["input"] = 150_000.0  # USD per 1B tokens
    with pytest.raises(FactorSetError, match="USD per 1,000,000 tokens"):
        _parse(data)
    data = _raw()
    data["price_book"]["models"][0]["source"] = ["nowhere"]
    with pytest.raises(FactorSetError, match="cites unknown source 'nowhere'"):
        _parse(data)


def test_v2_sections_come_together() -> None:
    data = _raw()
    del data["wue_onsite"]
    with pytest.raises(FactorSetError, match="v2 sections come together"):
        _parse(data)


# --------------------------------------------------------------------------------------------- properties

MODELS = [
    "gpt-4o",
    "gpt-4o-mini",
    "o4-mini",
    "o3",
    "claude-sonnet-4-5",
    "text-embedding-3-small",
    "mystery-1",
]
PLACES = [
    ("openai", None),
    ("google", "europe-west1"),
    ("aws", "eu-north-1"),
    ("mistral", None),
    ("acme", None),
]
tokens = st.integers(min_value=0, max_value=10**7)
BANDED = ("energy_j", "co2_kg", "co2_kg_market", "co2_kg_embodied", "water_l")
FIGURES = (*BANDED, "cost_usd")


@settings(max_examples=150, deadline=None)
@given(
    model=st.sampled_from(MODELS),
    where=st.sampled_from(PLACES),
    t=st.tuples(tokens, tokens, tokens, tokens),
)
def test_bounds_contain_the_point(model: str, where: tuple, t: tuple) -> None:
    fp = fp_of(load_factor_set("v2.0"), where[0], model, where[1], u=t[0], c=t[1], w=t[2], o=t[3])
    for name in BANDED:
        lo, pt, hi = getattr(fp, f"{name}_low"), getattr(fp, name), getattr(fp, f"{name}_high")
        assert lo <= pt * (1 + 1e-12) and pt <= hi * (1 + 1e-12), name


@settings(max_examples=150, deadline=None)
@given(
    model=st.sampled_from(MODELS),
    where=st.sampled_from(PLACES),
    t=st.tuples(tokens, tokens, tokens, tokens),
    phase=st.integers(min_value=0, max_value=3),
    more=st.integers(min_value=1, max_value=10**6),
)
def test_monotonic_in_tokens(model: str, where: tuple, t: tuple, phase: int, more: int) -> None:
    fs = load_factor_set("v2.0")
    bigger = list(t)
    bigger[phase] += more
    a = fp_of(fs, where[0], model, where[1], u=t[0], c=t[1], w=t[2], o=t[3])
    b = fp_of(fs, where[0], model, where[1], u=bigger[0], c=bigger[1], w=bigger[2], o=bigger[3])
    for name in FIGURES:
        if getattr(a, name) is not None:
            assert getattr(b, name) >= getattr(a, name), name


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("where", PLACES)
def test_zero_tokens_zero_footprint(model: str, where: tuple) -> None:
    fp = fp_of(load_factor_set("v2.0"), where[0], model, where[1])
    for name in BANDED:
        assert getattr(fp, name) == getattr(fp, f"{name}_low") == getattr(fp, f"{name}_high") == 0.0
    assert fp.cost_usd in (0.0, None)


@settings(max_examples=150, deadline=None)
@given(
    model=st.sampled_from(MODELS),
    where=st.sampled_from(PLACES),
    t=st.tuples(tokens, tokens, tokens, tokens),
    # zero, or at least a microjoule: subnormal floats (1e-323 J) underflow the band to 0, which means nothing
    joules=st.one_of(st.just(0.0), st.floats(min_value=1e-6, max_value=1e9)),
    boundary=st.sampled_from(["gpu", "server", "facility"]),
    pct=st.one_of(st.none(), st.floats(min_value=0, max_value=100)),
)
def test_measured_overrides_and_only_narrows(
    model: str, where: tuple, t: tuple, joules: float, boundary: str, pct: float | None
) -> None:
    fs = load_factor_set("v2.0")
    est = fp_of(fs, where[0], model, where[1], u=t[0], c=t[1], w=t[2], o=t[3])
    m = fp_of(
        fs,
        where[0],
        model,
        where[1],
        u=t[0],
        c=t[1],
        w=t[2],
        o=t[3],
        measured=Measured(joules, "dcgm", boundary, pct),
    )
    factor = {"gpu": 1.60 * m.pue, "server": m.pue, "facility": 1.0}[boundary]
    assert m.energy_j == pytest.approx(joules * factor, rel=1e-9)  # from the meter, not the tokens
    assert m.energy_source is EnergySource.measured
    assert m.energy_j_low <= m.energy_j * (1 + 1e-12) and m.energy_j <= m.energy_j_high * (1 + 1e-12)
    if est.energy_j > 0 and m.energy_j > 0:  # relative band never wider than the estimate's
        assert m.energy_j_low / m.energy_j >= est.energy_j_low / est.energy_j * (1 - 1e-9)
        assert m.energy_j_high / m.energy_j <= est.energy_j_high / est.energy_j * (1 + 1e-9)
    assert m.cost_usd == est.cost_usd  # cost comes from the tokens either way


def test_latest_is_one_cached_instance() -> None:
    assert load_factor_set() is load_factor_set("v2.0")
    assert load_factor_set("v1.0") is load_factor_set("v1.0")
    with pytest.raises(FactorSetError, match="no factor set 'v9.9'"):
        load_factor_set("v9.9")
