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
    assert [v["version"] for v in versions] == ["v1.0"]
    v1 = versions[0]
    assert set(v1) == {"version", "published_at", "description", "tier_count", "is_current", "created_at"}
    assert v1["is_current"] is True and v1["tier_count"] >= 1

    current = (await api.get(f"{CF}/current", headers=h)).json()
    assert current["version"] == "v1.0" and current["is_current"] is True
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

    same = (await api.get(f"{CF}/v1.0", headers=h)).json()
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
    assert [(v["version"], v["is_current"]) for v in versions] == [("v9.0", True), ("v1.0", False)]
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
    assert m["version"] == "v1.0"
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
