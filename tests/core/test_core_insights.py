"""core.insights: the savings formulas and rules, pure, against hand computations from core/factors/v2.0.yaml."""

from __future__ import annotations

import math

import pytest

from core.insights import (
    Usage,
    annualise,
    book_prices,
    caching_savings,
    cleanest_region,
    priority,
    projected_savings,
    run,
)
from core.methodology import load_factor_set

FS = load_factor_set("v2.0")
PRICES = book_prices(FS)
WINDOW = {"start": "s", "end": "e", "label": "30d", "days": 30.0}


def u(model: str, tier: str, routing: str, *, requests: int = 20, uncached: int = 10_000, output: int = 2_000,
      cached: int = 0, provider: str = "openai", region: str = "us", source: str = "gateway",
      estimated: int = 0, cost: float | None = None) -> Usage:  # fmt: skip
    return Usage("p1", provider, model, tier, region, routing, "wl", source, requests, requests, uncached, cached,
                 0, output, 0.0, cost, estimated)  # fmt: skip


def test_annualise_and_priority():
    assert annualise(30.0, 30.0) == 365.0
    assert annualise(1.0, 365.0) == 1.0
    assert priority(10_000.0) == "high" and priority(9_999.0) == "medium" and priority(999.0) == "low"


def test_projected_savings_by_hand():
    # 10,000 uncached input + 2,000 output tokens: gpt-4o (large 0.5 / 3.0 J) vs gpt-4o-mini (small 0.05 / 0.3 J),
    # openai PUE 1.18, grid us 0.3844 kg/kWh; prices 2.50/10.00 vs 0.15/0.60 USD per 1M
    g, usd = projected_savings(FS, (10_000, 0, 0, 2_000), ("openai", "gpt-4o", "us"),
                               ("openai", "gpt-4o-mini", "us"), PRICES)  # fmt: skip
    assert math.isclose(g, (11_000 - 1_100) * 1.18 / 3.6e6 * 0.3844 * 1000, rel_tol=1e-12)
    assert math.isclose(usd, (25_000 + 20_000 - 1_500 - 1_200) / 1e6, rel_tol=1e-12)
    back, _ = projected_savings(FS, (10_000, 0, 0, 2_000), ("openai", "gpt-4o-mini", "us"),
                                ("openai", "gpt-4o", "us"), PRICES)  # fmt: skip
    assert math.isclose(back, -g, rel_tol=1e-12)


def test_caching_savings_by_hand():
    moved, g, usd = caching_savings(FS, u("gpt-4o", "large", "L2", uncached=30_000, cached=4_000), PRICES)
    assert moved == 17_000 - 4_000
    assert math.isclose(g, 13_000 * (0.5 - 0.05) * 1.18 * 0.3844 / 3.6e6 * 1000, rel_tol=1e-12)
    assert math.isclose(usd, 13_000 * (2.50 - 1.25) / 1e6, rel_tol=1e-12)
    assert caching_savings(FS, u("gpt-4o", "large", "L2", uncached=1_000, cached=1_000), PRICES)[0] == 0


def test_cleanest_region():
    assert cleanest_region(FS, "azure") == ("swedencentral", 0.0353)
    assert cleanest_region(FS, "azure-openai") == ("swedencentral", 0.0353)  # an alias
    assert cleanest_region(FS, "acme-ai") is None


@pytest.mark.parametrize(
    ("usage", "types"),
    [
        ([u("gpt-4o", "large", "L0"), u("gpt-4o-mini", "small", "L2")], {"MODEL_RIGHTSIZING"}),
        ([u("gpt-4o", "large", "L0")], set()),  # no small model reached
        ([u("acme-1", "large", "L0", provider="acme-ai"), u("gpt-4o-mini", "small", "L2")], set()),  # unknown
        ([u("gpt-4o", "large", "L0", requests=9), u("gpt-4o-mini", "small", "L2")], set()),  # too few
        ([u("o3", "reasoning", "L1"), u("gpt-4o", "large", "L3")], {"REASONING_OVERUSE"}),
        ([u("gpt-4o", "large", "L2", requests=10, uncached=30_000)], {"PROMPT_CACHING"}),
        ([u("gpt-4o", "large", "L2", provider="azure", region="eastus")], {"REGION_SHIFT"}),
        ([u("gpt-4o-mini", "small", "", source="poller", cost=1.0)], {"BATCH_ELIGIBLE"}),
        ([u("gpt-4o-mini", "small", "", source="gateway", cost=1.0)], set()),
        ([u("gpt-4o-mini", "small", "L2", estimated=5)], {"DATA_QUALITY"}),
        ([u("gpt-4o-mini", "small", "L2", estimated=4)], set()),  # 4 of 20: under a quarter
    ],
)
def test_which_rules_fire(usage, types):
    assert {f.type for f in run(FS, usage, WINDOW, 30.0, PRICES)} == types


def test_measured_caching_and_region_shift_by_hand():
    from core.insights.measured import measured_savings

    ev = {"provider": "openai", "region": "us", "cached_share": 0.1}
    # after: 10,000 input tokens of which 6,000 cached; before 10 % cached → 5,000 tokens beyond
    after = [u("gpt-4o", "large", "L2", uncached=4_000, cached=6_000)]
    m = measured_savings(FS, "PROMPT_CACHING", "p1", "gpt-4o", ev, after, PRICES)
    assert math.isclose(m.co2e_grams, 5_000 * (0.5 - 0.05) * 1.18 * 0.3844 / 3.6e6 * 1000, rel_tol=1e-12)
    assert math.isclose(m.cost, 5_000 * (2.50 - 1.25) / 1e6, rel_tol=1e-12)
    worse = measured_savings(FS, "PROMPT_CACHING", "p1", "gpt-4o", {**ev, "cached_share": 0.9}, after, PRICES)
    assert worse.co2e_grams < 0  # fewer cached than before: a negative measured saving
    shift = {"provider": "azure", "region": "eastus", "alternative": {"region": "swedencentral"}}
    moved = [u("gpt-4o", "large", "L2", provider="azure", region="swedencentral")]
    moved = [x.__class__(**{**x.__dict__, "co2_g": (11_000 * 1.18 / 3.6e6 * 0.0353 * 1000)}) for x in moved]
    m = measured_savings(FS, "REGION_SHIFT", "p1", "gpt-4o", shift, moved, PRICES)
    assert math.isclose(m.co2e_grams, 11_000 * 1.18 / 3.6e6 * (0.3844 - 0.0353) * 1000, rel_tol=1e-9)
    assert measured_savings(FS, "BATCH_ELIGIBLE", "p1", "gpt-4o", shift, moved, PRICES) is None


def test_score_leaves_out_dimensions_without_data_and_rescales_weights():
    from core.insights.score import score

    assert score([], [], PRICES) == {"overall_score": None, "dimension_scores": {}, "weights": {}}
    # one unknown-provider L2 group: no low-tier traffic, no price (no cache dimension), no previous period
    x = u("acme-1", "large", "L2", provider="acme-ai", region="", estimated=5)
    x = x.__class__(**{**x.__dict__, "co2_g": 2.0, "energy_j": 3.6e6 / 100})  # 0.01 kWh → 200 g/kWh
    s = score([x], [], PRICES)
    assert set(s["dimension_scores"]) == {"grid_carbon", "data_quality"}
    assert s["weights"] == {"grid_carbon": 0.5, "data_quality": 0.5}
    grid, quality = 100 * (1 - 200 / 700), 100 * (1 - 5 / 20)
    assert math.isclose(s["dimension_scores"]["grid_carbon"]["score"], grid, rel_tol=1e-12)
    assert math.isclose(s["overall_score"], (grid + quality) / 2, rel_tol=1e-12)
    # the trend: 3x the previous intensity clamps at 0; a third of it scores 50 + 50 × 2/3
    before = x.__class__(**{**x.__dict__, "co2_g": 6.0})
    assert score([x], [before], PRICES)["dimension_scores"]["intensity_trend"]["score"] == pytest.approx(
        50 + 100 / 3
    )
    assert score([before], [x], PRICES)["dimension_scores"]["intensity_trend"]["score"] == 0.0


def test_measured_rightsizing_counts_only_the_traffic_that_moved():
    """s0 = the alternative's share before (evidence), s1 = its share since: f = (s1 − s0) / s1 of the
    alternative's counterfactual; a share that fell is a negative saving; no alternative traffic: 0."""
    from core.insights import measured

    ev = {"provider": "openai", "region": "us", "routing_tiers": ["L0"], "alternative_share": 0.5,
          "alternative": {"provider": "openai", "model": "gpt-4o-mini", "region": "us"}}  # fmt: skip
    alt = u("gpt-4o-mini", "small", "L0")  # 12,000 tokens, emitted 0 g in this fixture
    old = u("gpt-4o", "large", "L0")  # 12,000 tokens

    def saving(rows, share):
        return measured.measured_savings(FS, "MODEL_RIGHTSIZING", "p1", "gpt-4o",
                                         {**ev, "alternative_share": share}, rows, PRICES)  # fmt: skip

    full = saving([alt], 0.0)  # everything moved: the whole counterfactual
    assert full is not None and full.co2e_grams > 0 and full.events == 20
    assert math.isclose(saving([alt], 0.5).co2e_grams, 0.5 * full.co2e_grams)  # s1 = 1, s0 = 0.5
    assert saving([alt, old], 0.5).co2e_grams == 0  # s1 = 0.5 = s0: nothing moved
    assert math.isclose(saving([alt, old, old, old], 0.5).co2e_grams, -1.0 * full.co2e_grams)  # s1 = 0.25
    assert saving([old], 0.5).co2e_grams == 0  # no alternative traffic since
