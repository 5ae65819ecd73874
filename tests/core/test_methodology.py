"""Tests of the carbon methodology: factor set v1.0, model matching, the calculation, enrichment.

Expected values are computed here from literal numbers (the factors published in v1.0.yaml), never
by calling the code under test.
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from core.contracts import EnrichedUsage, UsageEvent
from core.methodology import (
    FactorSet,
    FactorSetError,
    Footprint,
    cached_savings,
    compute_footprint,
    enrich,
    joules_to_kwh,
    load_factor_set,
    match_model,
    normalise_model,
    parse_factor_set,
)

FACTORS_YAML = Path(__file__).resolve().parents[2] / "core" / "factors" / "v1.0.yaml"


@pytest.fixture(scope="module")
def fs() -> FactorSet:
    return load_factor_set("v1.0")


def _fp(fs: FactorSet, provider: str, model: str, region: str | None = None, u=0, c=0, w=0, o=0) -> Footprint:
    return compute_footprint(
        fs,
        provider=provider,
        model=model,
        region=region,
        input_tokens_uncached=u,
        input_tokens_cached=c,
        input_tokens_cache_creation=w,
        output_tokens=o,
    )


# ----------------------------------------------------------------------------- hand-computed values


def test_joules_to_kwh() -> None:
    assert joules_to_kwh(3_600_000.0) == 1.0
    assert joules_to_kwh(0.0) == 0.0
    assert joules_to_kwh(1800.0) == pytest.approx(0.0005)


def test_large_tier_prefill_and_decode_on_openai(fs: FactorSet) -> None:
    # gpt-4o -> large: prefill 0.5 J, decode 3.0 J (low 0.1 / 1.0, high 2.5 / 10.0); openai PUE 1.18,
    # grid default 0.37 kg/kWh.
    it_j = 1000 * 0.5 + 500 * 3.0  # 2000 J
    facility_j = it_j * 1.18  # 2360 J
    kwh = facility_j / 3.6e6  # 6.5556e-4 kWh
    kg = kwh * 0.37  # 2.4256e-4 kg
    fp = _fp(fs, "openai", "gpt-4o", u=1000, o=500)
    assert fp.model_tier == "large"
    assert fp.factors_version == "v1.0"
    assert fp.is_estimated is False and fp.estimation_reasons == ()
    assert (fp.j_per_prefill_token, fp.j_per_decode_token) == (0.5, 3.0)
    assert (fp.j_per_cached_token, fp.j_per_cache_creation_token) == (0.05, 0.6)
    assert (fp.pue, fp.grid_intensity_kg_per_kwh) == (1.18, 0.37)
    assert fp.energy_j == pytest.approx(2360.0)
    assert joules_to_kwh(fp.energy_j) == pytest.approx(kwh)
    assert fp.co2_kg == pytest.approx(kg)
    assert fp.co2_kg == pytest.approx(2.4256e-4, rel=1e-4)
    assert fp.energy_j_low == pytest.approx((1000 * 0.1 + 500 * 1.0) * 1.18)  # 708 J
    assert fp.energy_j_high == pytest.approx((1000 * 2.5 + 500 * 10.0) * 1.18)  # 8850 J
    assert fp.co2_kg_low == pytest.approx(708 / 3.6e6 * 0.37)
    assert fp.co2_kg_high == pytest.approx(8850 / 3.6e6 * 0.37)


def test_all_four_phases_with_region(fs: FactorSet) -> None:
    # claude-sonnet-4 -> large; anthropic PUE 1.15; region us-east-1 -> 0.416 kg/kWh.
    it_j = 2000 * 0.5 + 10_000 * 0.05 + 3000 * 0.6 + 800 * 3.0  # 1000 + 500 + 1800 + 2400 = 5700 J
    facility_j = it_j * 1.15  # 6555 J
    kg = facility_j / 3.6e6 * 0.416  # 7.5747e-4 kg
    fp = _fp(fs, "anthropic", "claude-sonnet-4-20250514", "us-east-1", u=2000, c=10_000, w=3000, o=800)
    assert fp.model_tier == "large"
    assert fp.is_estimated is False
    assert fp.grid_intensity_kg_per_kwh == 0.416
    assert fp.energy_j == pytest.approx(6555.0)
    assert fp.co2_kg == pytest.approx(kg)
    assert fp.co2_kg == pytest.approx(7.5747e-4, rel=1e-4)
    low_it = 2000 * 0.1 + 10_000 * 0.01 + 3000 * 0.12 + 800 * 1.0  # 1460 J
    high_it = 2000 * 2.5 + 10_000 * 0.5 + 3000 * 3.0 + 800 * 10.0  # 27000 J
    assert fp.energy_j_low == pytest.approx(low_it * 1.15)
    assert fp.energy_j_high == pytest.approx(high_it * 1.15)


def test_cached_savings(fs: FactorSet) -> None:
    # claude-sonnet-4 -> large: prefill 0.5 J, cached 0.05 J; anthropic PUE 1.15; us-east-1 0.416 kg/kWh.
    saved_j = 10_000 * (0.5 - 0.05) * 1.15  # 5175 J
    fp = _fp(fs, "anthropic", "claude-sonnet-4-20250514", "us-east-1", u=2000, c=10_000, w=3000, o=800)
    assert fp.energy_cached_savings_j == pytest.approx(5175.0)
    assert fp.co2_cached_savings_kg == pytest.approx(saved_j / 3.6e6 * 0.416)  # 5.98e-4 kg
    assert cached_savings(10_000, 0.5, 0.05, 1.15, 0.416) == (
        fp.energy_cached_savings_j,
        fp.co2_cached_savings_kg,
    )
    assert _fp(fs, "anthropic", "claude-sonnet-4-20250514", u=2000, o=800).energy_cached_savings_j == 0.0
    e = enrich(_event(input_tokens_cached=10_000), fs, datetime.now(UTC))
    assert e.energy_cached_savings_j == pytest.approx(10_000 * (0.5 - 0.05) * 1.18)  # gpt-4o on openai
    assert e.co2_cached_savings_kg == pytest.approx(10_000 * 0.45 * 1.18 / 3.6e6 * 0.37)


def test_small_tier_on_google(fs: FactorSet) -> None:
    # gemini-2.5-flash -> small: prefill 0.05, decode 0.3; google PUE 1.09; europe-west4 0.474 kg/kWh.
    it_j = 4000 * 0.05 + 1000 * 0.3  # 200 + 300 = 500 J
    fp = _fp(fs, "google", "gemini-2.5-flash", "europe-west4", u=4000, o=1000)
    assert fp.model_tier == "small"
    assert fp.energy_j == pytest.approx(500 * 1.09)  # 545 J
    assert fp.co2_kg == pytest.approx(it_j * 1.09 / 3.6e6 * 0.474)  # 7.176e-5 kg


def test_reasoning_tier(fs: FactorSet) -> None:
    # o3 -> reasoning: prefill 0.5, decode 4.0; openai PUE 1.18.
    fp = _fp(fs, "openai", "o3-2025-04-16", u=1000, o=5000)
    assert fp.model_tier == "reasoning"
    assert fp.energy_j == pytest.approx((1000 * 0.5 + 5000 * 4.0) * 1.18)  # 24190 J
    assert fp.energy_j_high == pytest.approx((1000 * 2.5 + 5000 * 15.0) * 1.18)


def test_unknown_provider_and_model_fall_back_and_are_flagged(fs: FactorSet) -> None:
    # Unknown model -> fallback tier large; unknown provider -> default PUE 1.25 and world grid 0.481.
    fp = _fp(fs, "acme-cloud", "foo-1", u=100, o=100)
    assert fp.model_tier == "large"
    assert fp.is_estimated is True
    assert fp.pue == 1.25 and fp.grid_intensity_kg_per_kwh == 0.481
    assert fp.energy_j == pytest.approx((100 * 0.5 + 100 * 3.0) * 1.25)  # 437.5 J
    assert fp.co2_kg == pytest.approx(437.5 / 3.6e6 * 0.481)
    assert fp.estimation_reasons == (
        "unknown model 'foo-1': fell back to tier large",
        "unknown provider 'acme-cloud': used default PUE 1.25 and default grid intensity 0.481 kg CO2e/kWh",
    )


def test_unknown_region_uses_provider_default_and_is_flagged(fs: FactorSet) -> None:
    fp = _fp(fs, "aws", "claude-3-5-haiku-20241022", "mars-north-1", u=10, o=10)
    assert fp.grid_intensity_kg_per_kwh == 0.37
    assert fp.pue == 1.15
    assert fp.is_estimated is True
    assert len(fp.estimation_reasons) == 1
    assert "unknown region 'mars-north-1'" in fp.estimation_reasons[0]


def test_no_region_means_provider_default_and_is_not_estimated(fs: FactorSet) -> None:
    fp = _fp(fs, "openai", "gpt-4.1", None, u=1)
    assert fp.grid_intensity_kg_per_kwh == 0.37 and fp.is_estimated is False


def test_provider_alias_and_case_insensitivity(fs: FactorSet) -> None:
    fp = _fp(fs, "  Bedrock ", "US.ANTHROPIC.CLAUDE-3-7-SONNET-20250219-V1:0", "US-EAST-1", u=1, o=1)
    assert fp.model_tier == "large"
    assert fp.pue == 1.15 and fp.grid_intensity_kg_per_kwh == 0.416
    assert fp.is_estimated is False
    assert _fp(fs, "OpenAI", "GPT-4O", None, o=1).pue == 1.18
    assert _fp(fs, "vertex_ai", "gemini-2.5-pro", "us-central1", o=1).grid_intensity_kg_per_kwh == 0.479


def test_negative_tokens_rejected(fs: FactorSet) -> None:
    with pytest.raises(ValueError):
        _fp(fs, "openai", "gpt-4o", u=-1)


# ----------------------------------------------------------------------------- properties

PROVIDERS = [
    "openai",
    "anthropic",
    "google",
    "aws",
    "azure",
    "mistral",
    "deepseek",
    "openrouter",
    "meta",
    "acme",
]
MODELS = ["gpt-4o", "gpt-4o-mini", "o3", "claude-sonnet-4", "llama-3.3-70b", "text-embedding-3-small", "foo"]
REGIONS = [None, "us-east-1", "europe-west4", "swedencentral", "nowhere-1"]
counts = st.integers(min_value=0, max_value=10**9)
inputs = st.tuples(st.sampled_from(PROVIDERS), st.sampled_from(MODELS), st.sampled_from(REGIONS))


@settings(max_examples=300, deadline=None)
@given(inputs, counts, counts, counts, counts)
def test_low_le_point_le_high(where, u, c, w, o) -> None:
    fs = load_factor_set("v1.0")
    fp = _fp(fs, *where, u=u, c=c, w=w, o=o)
    assert 0.0 <= fp.energy_j_low <= fp.energy_j <= fp.energy_j_high
    assert 0.0 <= fp.co2_kg_low <= fp.co2_kg <= fp.co2_kg_high


@settings(max_examples=300, deadline=None)
@given(inputs, counts, counts, counts, counts, st.integers(0, 3), st.integers(min_value=0, max_value=10**9))
def test_monotonic_in_every_token_count(where, u, c, w, o, which, extra) -> None:
    fs = load_factor_set("v1.0")
    base = [u, c, w, o]
    more = list(base)
    more[which] += extra
    a, b = _fp(fs, *where, *base), _fp(fs, *where, *more)
    for field in ("energy_j", "energy_j_low", "energy_j_high", "co2_kg", "co2_kg_low", "co2_kg_high"):
        assert getattr(b, field) >= getattr(a, field), field


@settings(max_examples=100, deadline=None)
@given(inputs)
def test_zero_tokens_zero_energy(where) -> None:
    fp = _fp(load_factor_set("v1.0"), *where)
    assert fp.energy_j == fp.energy_j_low == fp.energy_j_high == 0.0
    assert fp.co2_kg == fp.co2_kg_low == fp.co2_kg_high == 0.0


@settings(max_examples=300, deadline=None)
@given(inputs, counts, counts, counts, counts)
def test_linear_in_tokens(where, u, c, w, o) -> None:
    fs = load_factor_set("v1.0")
    one, two = _fp(fs, *where, u, c, w, o), _fp(fs, *where, 2 * u, 2 * c, 2 * w, 2 * o)
    for field in ("energy_j", "energy_j_low", "energy_j_high", "co2_kg", "co2_kg_low", "co2_kg_high"):
        assert getattr(two, field) == pytest.approx(2 * getattr(one, field), rel=1e-12), field


# ----------------------------------------------------------------------------- model patterns

EXPECTED_TIERS = [
    # OpenAI
    ("gpt-4o", "large"),
    ("gpt-4o-2024-08-06", "large"),
    ("chatgpt-4o-latest", "large"),
    ("gpt-4o-mini", "small"),
    ("gpt-4o-mini-2024-07-18", "small"),
    ("gpt-4.1", "large"),
    ("gpt-4.1-2025-04-14", "large"),
    ("gpt-4.1-mini", "small"),
    ("gpt-4.1-nano-2025-04-14", "small"),
    ("gpt-5", "large"),
    ("gpt-5-2025-08-07", "large"),
    ("gpt-5-mini", "small"),
    ("gpt-5-nano", "small"),
    ("o1", "reasoning"),
    ("o1-mini", "reasoning"),
    ("o3", "reasoning"),
    ("o3-mini-2025-01-31", "reasoning"),
    ("o4-mini", "reasoning"),
    ("gpt-3.5-turbo", "small"),
    ("gpt-4-turbo", "large"),
    ("text-embedding-3-small", "embedding"),
    ("text-embedding-3-large", "embedding"),
    ("ft:gpt-4o-mini-2024-07-18:acme::9abc", "small"),
    # Anthropic
    ("claude-3-haiku-20240307", "small"),
    ("claude-3-5-haiku-20241022", "small"),
    ("claude-haiku-4-5", "small"),
    ("claude-3-5-sonnet-20241022", "large"),
    ("claude-3-7-sonnet-latest", "large"),
    ("claude-sonnet-4-20250514", "large"),
    ("claude-opus-4-1-20250805", "large"),
    ("claude-3-opus-20240229", "large"),
    ("claude-3-5-sonnet-v2@20241022", "large"),
    ("anthropic.claude-3-5-sonnet-20240620-v1:0", "large"),
    ("us.anthropic.claude-3-7-sonnet-20250219-v1:0", "large"),
    # Google
    ("gemini-2.5-flash", "small"),
    ("gemini-2.0-flash-lite-001", "small"),
    ("gemini-1.5-flash-8b", "small"),
    ("gemini-2.5-pro", "large"),
    ("gemini-1.5-pro-002", "large"),
    ("models/gemini-2.5-flash-lite", "small"),
    ("gemini-embedding-001", "embedding"),
    # Meta Llama
    ("llama-3.1-8b-instruct", "small"),
    ("llama3.1-8b", "small"),
    ("llama-3.3-70b-versatile", "medium"),
    ("llama3-70b-8192", "medium"),
    ("meta-llama-3.1-405b-instruct", "large"),
    ("llama-4-scout-17b-16e-instruct", "medium"),
    ("llama-4-maverick-17b-128e-instruct-fp8", "medium"),
    ("meta.llama3-1-70b-instruct-v1:0", "medium"),
    ("llama3.1:8b", "small"),
    # Mistral
    ("mistral-small-latest", "small"),
    ("mistral-medium-2505", "medium"),
    ("mistral-large-2411", "large"),
    ("ministral-8b-latest", "small"),
    ("codestral-2501", "small"),
    ("mistral-embed", "embedding"),
    ("magistral-medium-2506", "reasoning"),
    ("open-mixtral-8x22b", "medium"),
    # DeepSeek
    ("deepseek-chat", "large"),
    ("deepseek-v3-0324", "large"),
    ("deepseek-reasoner", "reasoning"),
    ("deepseek-r1", "reasoning"),
    ("deepseek-r1-distill-llama-70b", "medium"),
    # Qwen
    ("qwen2.5-7b-instruct", "small"),
    ("qwen2.5-32b-instruct", "medium"),
    ("qwen2.5-72b-instruct", "medium"),
    ("qwen3-235b-a22b", "medium"),
    ("qwen3-30b-a3b", "small"),
    ("qwq-32b", "reasoning"),
    ("qwen-max", "large"),
    # OpenRouter vendor/model ids
    ("openai/gpt-4o", "large"),
    ("openai/gpt-4o-mini", "small"),
    ("openai/o4-mini-high", "reasoning"),
    ("anthropic/claude-sonnet-4", "large"),
    ("anthropic/claude-3.5-haiku", "small"),
    ("anthropic/claude-3.7-sonnet:thinking", "large"),
    ("google/gemini-2.5-flash", "small"),
    ("meta-llama/llama-3.1-8b-instruct:free", "small"),
    ("meta-llama/llama-3.3-70b-instruct", "medium"),
    ("mistralai/mistral-large-2411", "large"),
    ("deepseek/deepseek-r1", "reasoning"),
    ("deepseek/deepseek-chat-v3-0324", "large"),
    ("qwen/qwen-2.5-72b-instruct", "medium"),
    ("qwen/qwq-32b", "reasoning"),
    ("Qwen/Qwen2.5-72B-Instruct-Turbo", "medium"),
]


@pytest.mark.parametrize(("model", "tier"), EXPECTED_TIERS)
def test_model_maps_to_intended_tier(fs: FactorSet, model: str, tier: str) -> None:
    m = match_model(fs, model)
    assert (m.tier, m.is_estimated, m.reason) == (tier, False, None), m
    assert m.pattern is not None


def test_pattern_list_covers_all_seven_vendors() -> None:
    assert len(EXPECTED_TIERS) >= 40
    vendors = ("gpt", "claude", "gemini", "llama", "mistral", "deepseek", "qwen")
    for vendor in vendors:
        assert any(vendor in m.lower() for m, _ in EXPECTED_TIERS), vendor


@pytest.mark.parametrize("model", ["foo", "my-custom-deployment", "grok-9000", "openai/unknown-thing"])
def test_unknown_model_falls_back_and_is_flagged(fs: FactorSet, model: str) -> None:
    m = match_model(fs, model)
    assert m.tier == fs.fallback_tier == "large"
    assert m.pattern is None and m.is_estimated is True
    assert m.reason == f"unknown model {model!r}: fell back to tier large"


def test_match_is_cached_and_case_insensitive(fs: FactorSet) -> None:
    assert match_model(fs, "GPT-4o-Mini") is match_model(fs, "GPT-4o-Mini")
    assert match_model(fs, "GPT-4o-Mini").tier == "small"


def test_copied_factor_set_gets_its_own_caches(fs: FactorSet) -> None:
    assert match_model(fs, "gpt-4o").tier == "large"
    copy = fs.model_copy(update={"model_patterns": [fs.model_patterns[0]], "version": "v1.1"})
    assert match_model(copy, "gpt-4o").is_estimated is True  # not served from the original's cache
    assert match_model(fs, "gpt-4o").tier == "large"


def test_normalise_model() -> None:
    assert normalise_model(" OpenAI/GPT-4o ") == "gpt-4o"
    assert (
        normalise_model("us.anthropic.claude-3-7-sonnet-20250219-v1:0") == "claude-3-7-sonnet-20250219-v1-0"
    )
    assert normalise_model("claude-3-5-sonnet-v2@20241022") == "claude-3-5-sonnet-v2-20241022"
    assert normalise_model("ft:gpt-4o-mini:org::x") == "gpt-4o-mini-org--x"


# ----------------------------------------------------------------------------- factor set validation


def _raw() -> dict:
    return yaml.safe_load(FACTORS_YAML.read_text(encoding="utf-8"))


def _parse(data: dict) -> FactorSet:
    return parse_factor_set(yaml.safe_dump(data, sort_keys=False))


def test_shipped_factor_set_is_sane(fs: FactorSet) -> None:
    assert fs.version == "v1.0"
    assert {"small", "medium", "large", "reasoning"} <= set(fs.tiers)
    assert 0.3 <= fs.grid["openai"]["default"] <= 0.45  # US average ~0.37 kg/kWh
    assert all(1.0 <= p <= 1.3 for p in fs.pue.values())
    assert fs.tiers["small"].point.decode < fs.tiers["medium"].point.decode < fs.tiers["large"].point.decode
    for tier in fs.tiers.values():  # prefill is cheaper than decode; cache reads cheaper than prefill
        assert tier.point.cached <= tier.point.prefill <= tier.point.decode


def test_round_trip_of_shipped_yaml() -> None:
    assert _parse(_raw()) == load_factor_set("v1.0")


def test_grid_unit_error_is_rejected() -> None:
    data = _raw()
    data["grid"]["aws"]["us-east-1"] = 0.00035  # t/kWh, not kg/kWh
    with pytest.raises(FactorSetError, match=r"aws/us-east-1 = 0\.00035 kg CO2e/kWh.*kg CO2e per kWh"):
        _parse(data)
    data = _raw()
    data["default_grid_intensity"] = 370.0  # g/kWh
    with pytest.raises(FactorSetError, match="default_grid_intensity"):
        _parse(data)


def test_low_above_point_is_rejected() -> None:
    data = _raw()
    data["tiers"]["small"]["low"]["decode"] = 0.5  # point is 0.3
    with pytest.raises(FactorSetError, match=r"tier 'small', phase 'decode': need low <= point <= high"):
        _parse(data)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["model_patterns"].append({"pattern": "x*", "tier": "huge"}), "unknown tier 'huge'"),
        (lambda d: d.__setitem__("fallback_tier", "huge"), "fallback_tier 'huge' is not a tier"),
        (lambda d: d["pue"].__setitem__("openai", 0.9), "PUE for 'openai' is 0.9"),
        (lambda d: d["grid"]["openai"].pop("default"), "no 'default' region"),
        (lambda d: d["tiers"]["large"]["sources"].append("nope"), "unknown source 'nope'"),
        (lambda d: d["provider_aliases"].__setitem__("x", "nobody"), "unknown provider 'nobody'"),
        (lambda d: d.__setitem__("version", "1.0"), "must look like v1.0"),
        (lambda d: d["pue"].pop("meta"), "same providers"),
    ],
)
def test_inconsistent_factor_sets_are_rejected(mutate, message) -> None:
    data = _raw()
    mutate(data)
    with pytest.raises(FactorSetError, match=message):
        _parse(data)


def test_bad_yaml_and_bad_versions() -> None:
    with pytest.raises(FactorSetError, match="YAML"):
        parse_factor_set("tiers: [unclosed")
    with pytest.raises(FactorSetError, match="mapping"):
        parse_factor_set("- a list")
    with pytest.raises(FactorSetError):
        load_factor_set("../../etc/passwd")
    with pytest.raises(FactorSetError, match="no factor set"):
        load_factor_set("v99.0")


def test_factor_set_is_frozen(fs: FactorSet) -> None:
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError for frozen instances
        fs.default_pue = 2.0  # type: ignore[misc]


# ----------------------------------------------------------------------------- enrich


def _event(**overrides) -> UsageEvent:
    t = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    fields = dict(
        event_id="evt-1",
        source="gateway",
        org_id="org-1",
        project_id="proj-1",
        workload_id="wl-1",
        provider="openai",
        model="gpt-4o",
        bucket_start=t,
        bucket_end=t,
        event_timestamp=t,
        input_tokens_uncached=1000,
        output_tokens=500,
        labels={"team": "search"},
    )
    fields.update(overrides)
    return UsageEvent(**fields)


def _assert_serialises_like_validated(e: EnrichedUsage) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pydantic serialisation warnings (wrong types) fail the test
        j = e.model_dump_json()
        again = EnrichedUsage.model_validate_json(j)
        assert again.model_dump_json() == j
        assert EnrichedUsage.model_validate(e.model_dump()).model_dump_json() == j
        assert again == EnrichedUsage.model_validate(e.model_dump())
        assert e == again
        assert e.model_fields_set == again.model_fields_set


def test_enrich_round_trips(fs: FactorSet) -> None:
    at = datetime(2026, 1, 5, 14, 30, tzinfo=timezone(timedelta(hours=2)))
    e = enrich(_event(), fs, at)
    _assert_serialises_like_validated(e)
    assert e.enriched_at == datetime(2026, 1, 5, 12, 30, tzinfo=UTC)
    assert e.enriched_at.tzinfo == UTC
    assert e.model_tier == "large" and e.factors_version == "v1.0"
    assert e.energy_j == pytest.approx((1000 * 0.5 + 500 * 3.0) * 1.18)
    assert e.event_id == "evt-1" and e.labels == {"team": "search"}
    assert e.estimation_reasons == [] and e.is_estimated is False


def test_enrich_estimated_event_and_zero_tokens(fs: FactorSet) -> None:
    e = enrich(
        _event(provider="acme", model="foo", region="x-1", input_tokens_uncached=0, output_tokens=0),
        fs,
        datetime.now(UTC),
    )
    _assert_serialises_like_validated(e)
    assert e.is_estimated is True and len(e.estimation_reasons) == 2
    assert e.energy_j == 0.0 and isinstance(e.energy_j, float)


@settings(max_examples=100, deadline=None)
@given(inputs, counts, counts, counts, counts)
def test_enrich_always_serialises_like_validated(where, u, c, w, o) -> None:
    provider, model, region = where
    ev = _event(
        provider=provider,
        model=model,
        region=region,
        input_tokens_uncached=u,
        input_tokens_cached=c,
        input_tokens_cache_creation=w,
        output_tokens=o,
    )
    _assert_serialises_like_validated(enrich(ev, load_factor_set("v1.0"), datetime(2026, 1, 6, tzinfo=UTC)))


def test_enrich_fast_path_is_active_and_matches_model_construct(fs: FactorSet, monkeypatch) -> None:
    import core.methodology as methodology

    assert methodology._FAST_CONSTRUCT, "EnrichedUsage changed: the fast construct path is disabled"
    at = datetime(2026, 1, 5, tzinfo=UTC)
    fast = enrich(_event(model="foo"), fs, at)
    monkeypatch.setattr(methodology, "_FAST_CONSTRUCT", False)
    slow = enrich(_event(model="foo"), fs, at)
    assert fast.model_dump_json() == slow.model_dump_json()
    _assert_serialises_like_validated(slow)


def test_enrich_requires_aware_timestamp(fs: FactorSet) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        enrich(_event(), fs, datetime(2026, 1, 5, 12, 0))
