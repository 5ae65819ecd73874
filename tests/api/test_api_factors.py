"""/api/v1/carbon-factors and the public /api/v1/methodology."""

from __future__ import annotations

import pytest

from controlplane import FactorVersions
from tests.fixtures_api import bearer
from tests.fixtures_controlplane import tiny_factors

pytestmark = pytest.mark.anyio

CF = "/api/v1/carbon-factors"


async def test_list_current_and_by_version(api, engine, tenants):
    h = bearer(tenants[0].read)
    r = await api.get(CF, headers=h)
    assert r.status_code == 200
    versions = r.json()["versions"]
    assert [v["version"] for v in versions] == ["v2.0", "v1.0"]  # the built-in sets, newest first
    v1 = versions[0]
    assert set(v1) == {"version", "published_at", "description", "tier_count", "is_current", "created_at"}
    assert v1["is_current"] is True and v1["tier_count"] >= 1

    current = (await api.get(f"{CF}/current", headers=h)).json()
    assert current["version"] == "v2.0" and current["is_current"] is True
    assert len(current["tiers"]) == v1["tier_count"]
    tier = current["tiers"][0]
    for field in (
        "model_tier",
        "model_patterns",
        "energy_per_token_prefill_j",
        "energy_per_token_decode_j",
        "energy_per_token_cached_j",
        "energy_per_token_cache_creation_j",
        "low",
        "high",
        "sources",
    ):
        assert field in tier
    assert tier["low"]["decode"] <= tier["energy_per_token_decode_j"] <= tier["high"]["decode"]
    assert 1.0 <= current["pue"]["default"] <= 3.0
    grid = current["grid_intensity_kg_per_kwh"]
    assert grid["unit"] == "kg CO2e/kWh"
    values = [grid["default"], *(v for regions in grid["providers"].values() for v in regions.values())]
    assert all(0.001 < v < 2.0 for v in values)  # kg/kWh, not t/kWh or g/kWh
    assert set(tier["sources"]) <= set(current["sources"])

    same = (await api.get(f"{CF}/v2.0", headers=h)).json()
    assert same == current


async def test_unknown_version_404(api, tenants):
    h = bearer(tenants[0].read)
    r = await api.get(f"{CF}/v7.7", headers=h)
    assert r.status_code == 404 and r.json() == {"detail": "no carbon factor version 'v7.7'"}
    assert (await api.get(f"{CF}/{'x' * 33}", headers=h)).status_code == 422


async def test_new_version_becomes_current(api, engine, tenants):
    h = bearer(tenants[0].read)
    FactorVersions(engine).publish(tiny_factors("v9.0", "2030-01-01"))
    versions = (await api.get(CF, headers=h)).json()["versions"]
    assert [(v["version"], v["is_current"]) for v in versions] == [
        ("v9.0", True),
        ("v2.0", False),
        ("v1.0", False),
    ]
    current = (await api.get(f"{CF}/current", headers=h)).json()
    assert current["version"] == "v9.0" and current["published_at"] == "2030-01-01"
    assert [t["model_tier"] for t in current["tiers"]] == ["small", "large"]
    assert current["tiers"][0]["model_patterns"] == ["gpt-4o-mini*"]
    assert current["grid_intensity_kg_per_kwh"]["providers"] == {
        "openai": {"default": 0.37, "us-east-1": 0.416}
    }
    assert current["pue"] == {"providers": {"openai": 1.2}, "default": 1.3}
    assert (await api.get(f"{CF}/v1.0", headers=h)).json()["is_current"] is False


async def test_factors_need_auth(api):
    for path in (CF, f"{CF}/current", f"{CF}/v1.0"):
        assert (await api.get(path)).status_code == 401


async def test_methodology_is_public(api, engine):
    r = await api.get("/api/v1/methodology")
    assert r.status_code == 200
    m = r.json()
    assert m["version"] == "v2.0"
    assert "kWh" in m["pipeline"] and "PUE" in m["pipeline"]
    assert [p["name"] for p in m["phases"]] == ["prefill", "decode", "cached", "cache_creation"]
    assert {p["tokens"] for p in m["phases"]} == {
        "input_tokens_uncached",
        "output_tokens",
        "input_tokens_cached",
        "input_tokens_cache_creation",
    }
    assert m["pue_values"]["default"] >= 1.0 and m["pue_values"]["providers"]
    assert m["grid_intensity"]["unit"] == "kg CO2e/kWh" and 0.1 < m["grid_intensity"]["default"] < 1.5
    assert m["uncertainty"]["basis"]
    keys = {s["key"] for s in m["sources"]}
    assert keys and all(set(t["sources"]) <= keys for t in m["tiers"])
    assert all(set(t["j_per_token"]) == {"point", "low", "high"} for t in m["tiers"])
    # follows the current version
    FactorVersions(engine).publish(tiny_factors("v9.0", "2030-01-01"))
    m = (await api.get("/api/v1/methodology")).json()
    assert m["version"] == "v9.0" and m["grid_intensity"]["default"] == 0.481
    assert m["sources"] == [{"key": "s1", "citation": "A test citation"}]


async def test_seed_contract_fields(api, tenants):
    """The fields the seed's API contract documents: per-tier `pue`, `grid_intensity_kg_per_kwh`,
    `uncertainty_pct`; the methodology's `known_hyperscalers` / `unknown_providers` PUE and default figures."""
    current = (await api.get(f"{CF}/current", headers=bearer(tenants[0].read))).json()
    for tier in current["tiers"]:
        assert tier["pue"] == current["pue"]["default"]
        assert tier["grid_intensity_kg_per_kwh"] == current["grid_intensity_kg_per_kwh"]["default"]
        assert 0.001 < tier["grid_intensity_kg_per_kwh"] < 2.0  # kg/kWh, not the seed's t/kWh example
        point, low, high = tier["energy_per_token_decode_j"], tier["low"]["decode"], tier["high"]["decode"]
        assert tier["uncertainty_pct"] >= round(max(high - point, point - low) / point * 100, 1)
    small = next(t for t in current["tiers"] if t["model_tier"] == "small")
    assert small["uncertainty_pct"] == 900.0  # v1.0 small: cached 0.005 J, high 0.05 J → +900 %
    m = (await api.get("/api/v1/methodology")).json()
    pue = m["pue_values"]
    assert pue["unknown_providers"] == pue["default"] == current["pue"]["default"]
    assert min(pue["providers"].values()) <= pue["known_hyperscalers"] <= max(pue["providers"].values())
    assert m["grid_intensity"]["value_kg_per_kwh"] == m["grid_intensity"]["default"]
    assert m["uncertainty"]["default_pct"] == next(
        t["uncertainty_pct"] for t in current["tiers"] if t["model_tier"] == m["fallback_tier"]
    )


async def test_v2_sections_are_published(api, tenants):
    """v2.0 publishes market-based grid intensity, the embodied allocation, water, measured-energy handling and
    the price book (each with its sources); v1.0 has none of them; the methodology says what each figure is."""
    h = bearer(tenants[0].read)
    v2 = (await api.get(f"{CF}/v2.0", headers=h)).json()
    market = v2["grid_market_intensity_kg_per_kwh"]
    assert market["unit"] == "kg CO2e/kWh" and set(market["providers"]) <= set(
        v2["grid_intensity_kg_per_kwh"]["providers"]
    )
    assert all(0 <= x < 2.0 for regions in market["providers"].values() for x in regions.values())
    k = v2["embodied"]["k_kg_per_j_it"]
    assert (
        k["low"] <= k["point"] <= k["high"] and 1e-10 < k["point"] < 1e-6
    )  # kg per J (0.05 kg/kWh ≈ 1.4e-8)
    assert set(v2["embodied"]["sources"]) <= set(v2["sources"])
    water = v2["water"]
    assert water["wue_onsite_l_per_kwh"]["default"] > 0 and water["water_offsite_l_per_kwh"]["USA"] > 0
    assert water["region_country"]["aws"]["eu-north-1"] == "SWE"
    assert v2["measurement"]["uncertainty_pct"]["default"] >= 0
    book = v2["price_book"]
    assert book["currency"] == "USD" and book["per_tokens"] == 1_000_000 and book["models"]
    row = book["models"][0]
    assert set(row) == {
        "pattern",
        "provider",
        "input",
        "cached_input",
        "cache_write",
        "output",
        "as_of",
        "source",
    }
    assert "price-overrides" in book["overrides"]
    v1 = (await api.get(f"{CF}/v1.0", headers=h)).json()
    for section in ("grid_market_intensity_kg_per_kwh", "embodied", "water", "measurement", "price_book"):
        assert v1[section] is None, section

    m = (await api.get("/api/v1/methodology")).json()
    assert m["version"] == "v2.0"
    assert {f["field"] for f in m["figures"]} == {
        "energy_j",
        "co2_kg",
        "co2_kg_market",
        "co2_kg_embodied",
        "water_l",
        "cost_usd",
    }
    assert any("location-based" in f["meaning"] for f in m["figures"] if f["field"] == "co2_kg")
    assert any(line.startswith("co2_kg_market") for line in m["formula"])
    assert (
        m["embodied"] == v2["embodied"] and m["price_book"] == v2["price_book"] and m["water"] == v2["water"]
    )
    # the seed contract's fields are still there
    assert {"known_hyperscalers", "unknown_providers"} <= set(m["pue_values"])
    assert all({"pue", "grid_intensity_kg_per_kwh", "uncertainty_pct"} <= set(t) for t in v2["tiers"])
