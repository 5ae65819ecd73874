"""Methodology v2 figures at the gateway: the headers and the signed receipt carry market-based and embodied
CO2e, water, cost and the energy source (X-Carbon-mg keeps meaning location-based), computed with the
factor set the request took and the org's price override; another org keeps the price book."""

from __future__ import annotations

import pytest

from controlplane.prices import PriceOverrides, as_prices
from core.methodology import compute_footprint, load_factor_set
from pipelines.gateway.booking import fmt
from tests.gateway.conftest import GatewayFactory

Q = [{"role": "user", "content": "What is the capital of France?"}]
V2 = load_factor_set("v2.0")


def _footprint(resp, prices=None):
    u = resp.usage
    cached = (u.prompt_tokens_details.cached_tokens or 0) if u.prompt_tokens_details else 0
    return compute_footprint(
        V2,
        provider="google",
        model=resp.model,
        region="europe-west1",
        input_tokens_uncached=u.prompt_tokens - cached,
        input_tokens_cached=cached,
        input_tokens_cache_creation=0,
        output_tokens=u.completion_tokens,
        prices=prices,
    )


@pytest.fixture
def v2_gateway(make_gateway: GatewayFactory):
    return make_gateway()  # v2.0 is the built-in current set


def test_headers_and_receipt_carry_the_v2_figures(v2_gateway, tenants, fresh_stubs):
    fresh_stubs.config("small", cached_tokens=6)
    override, _ = PriceOverrides(tenants.engine).put(
        tenants.org_a.id, "gemini-2.0-flash*", input=0.2, cached_input=0.05, cache_write=0.25, output=0.8
    )
    v2_gateway.app.state.gateway.prices.refresh()  # the gateway re-reads with its factor watch; now, here
    raw = v2_gateway.client().chat.completions.with_raw_response.create(model="auto", messages=Q)
    resp, h = raw.parse(), raw.headers
    fp = _footprint(resp, as_prices(override))
    assert fp.co2_kg_market is not None and fp.cost_usd is not None  # the v2 set prices and covers it
    assert h["x-factors-version"] == "v2.0"
    assert h["x-carbon-mg"] == fmt(fp.co2_kg * 1e6)  # location-based, as before
    assert h["x-carbon-market-mg"] == fmt(fp.co2_kg_market * 1e6)
    assert h["x-carbon-embodied-mg"] == fmt(fp.co2_kg_embodied * 1e6)
    assert h["x-water-ml"] == fmt(fp.water_l * 1e3)
    assert h["x-cost-usd"] == f"{fp.cost_usd:.10f}".rstrip("0").rstrip(".")
    assert h["x-energy-source"] == "estimated"
    p = v2_gateway.http("GET", f"/v1/receipts/{h['x-receipt-id']}").json()["payload"]
    assert p["energy_source"] == "estimated"
    assert (p["carbon_market_mg"], p["carbon_market_mg_low"], p["carbon_market_mg_high"]) == (
        fp.co2_kg_market * 1e6,
        fp.co2_kg_market_low * 1e6,
        fp.co2_kg_market_high * 1e6,
    )
    assert (p["carbon_embodied_mg"], p["carbon_embodied_mg_low"], p["carbon_embodied_mg_high"]) == (
        fp.co2_kg_embodied * 1e6,
        fp.co2_kg_embodied_low * 1e6,
        fp.co2_kg_embodied_high * 1e6,
    )
    assert (p["water_ml"], p["water_ml_low"], p["water_ml_high"]) == (
        fp.water_l * 1e3,
        fp.water_l_low * 1e3,
        fp.water_l_high * 1e3,
    )
    assert p["cost_usd_micros"] == fp.cost_usd * 1e6 and p["price_source"] == override.source
    f = p["factors"]
    assert f["grid_market_intensity_kg_per_kwh"] == fp.grid_market_intensity_kg_per_kwh
    assert f["embodied_kg_per_it_kwh"] == fp.embodied_kg_per_it_j * 3.6e6
    assert (f["wue_onsite_l_per_kwh"], f["water_offsite_l_per_kwh"]) == (
        fp.wue_onsite_l_per_kwh,
        fp.water_offsite_l_per_kwh,
    )
    assert (f["price_usd_per_1m_input"], f["price_usd_per_1m_output"]) == (0.2, 0.8)
    assert p["price_usd_micros"] > 0  # what the gateway charges stays the routing file's price

    # org B has no override: the price book
    raw_b = v2_gateway.client(key=tenants.key_b).chat.completions.with_raw_response.create(
        model="auto", messages=Q
    )
    fp_b = _footprint(raw_b.parse())
    pb = v2_gateway.http("GET", f"/v1/receipts/{raw_b.headers['x-receipt-id']}", key=tenants.key_b).json()[
        "payload"
    ]
    want_b = None if fp_b.cost_usd is None else fp_b.cost_usd * 1e6
    assert pb["cost_usd_micros"] == want_b and pb["price_source"] == fp_b.price_source
    assert pb["price_source"] is None or not pb["price_source"].startswith("org override")
