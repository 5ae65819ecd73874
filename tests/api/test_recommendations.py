"""/api/v1/recommendations: the insights engine on crafted traffic written through the pipeline's own code path
(tests/api/telemetry_data.push: Enricher → parse_enriched → write_enriched), with savings checked against a
hand computation from the factor set's published numbers (core/factors/v2.0.yaml: tier J/token, PUE, grid,
price book); re-run idempotence, stale, ignore/restore, apply and tenancy."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from api.savings import SETTLE, record_due
from controlplane.recommendations import Recommendations
from core.contracts import UsageEvent
from core.metrics import exposition
from tests import prom
from tests.api.telemetry_data import push
from tests.fixtures_api import bearer, client_for

pytestmark = pytest.mark.anyio

R = "/api/v1/recommendations"
# v2.0 numbers, copied from core/factors/v2.0.yaml by hand (J/token IT, PUE, kg CO2e/kWh, USD per 1M)
LARGE = {"prefill": 0.5, "decode": 3.0, "cached": 0.05}
SMALL = {"prefill": 0.05, "decode": 0.3, "cached": 0.005}
REASONING = {"prefill": 0.5, "decode": 4.0}
PUE_OPENAI, GRID_OPENAI_US = 1.18, 0.3844
GPT_4O = {"input": 2.50, "cached": 1.25, "output": 10.00}
GPT_4O_MINI = {"input": 0.15, "output": 0.60}
O3 = {"input": 2.00, "output": 8.00}
YEAR = 365 / 30  # last=30d: a 30-day window


def grams(it_joules: float) -> float:
    """IT J → facility J (× PUE) → kWh → g CO2e at openai/us."""
    return it_joules * PUE_OPENAI / 3.6e6 * GRID_OPENAI_US * 1000


def close(a: float | None, b: float) -> bool:
    return a is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def ev(org: str, project: str, model: str, *, tier: str | None, uncached: int, output: int, cached: int = 0,
       provider: str = "openai", region: str | None = "us", days_ago: int = 2, source: str = "gateway",
       workload: str | None = None, requests: int = 1, labels: dict | None = None) -> UsageEvent:  # fmt: skip
    t = (datetime.now(UTC) - timedelta(days=days_ago)).replace(microsecond=0)
    return UsageEvent(
        event_id=str(uuid.uuid4()),
        source=source,
        org_id=org,
        project_id=project,
        workload_id=workload or f"{project}-wl",
        provider=provider,
        model=model,
        region=region,
        routing_tier=tier,
        bucket_start=t,
        bucket_end=t,
        event_timestamp=t,
        input_tokens_uncached=uncached,
        input_tokens_cached=cached,
        output_tokens=output,
        request_count=requests,
        labels=labels or {},
    )


def of_type(body: dict, kind: str) -> list[dict]:
    return [r for r in body["recommendations"] if r["type"] == kind]


@pytest.fixture
def org(tenants):
    return tenants[0]


@pytest.fixture
def project(org, engine):
    from controlplane import Projects

    return Projects(engine).ensure_default_project(org.org.id).id


async def run(c, org, **params) -> dict:
    r = await c.get(R, params={"last": "30d", **params}, headers=org.h)
    assert r.status_code == 200, r.text
    return r.json()


# ------------------------------------------------------------------------------------------ the rules


async def test_rightsizing_appears_with_the_hand_computed_savings(c, wh, org, project):
    o = org.org.id
    push(wh, [ev(o, project, "gpt-4o", tier="L0", uncached=500, output=100) for _ in range(20)])
    push(wh, [ev(o, project, "gpt-4o-mini", tier="L2", uncached=500, output=400) for _ in range(10)])
    body = await run(c, org)
    [rec] = of_type(body, "MODEL_RIGHTSIZING")
    # 20 requests: 10,000 uncached input and 2,000 output tokens, on gpt-4o (large) vs gpt-4o-mini (small)
    g = grams(10_000 * LARGE["prefill"] + 2_000 * LARGE["decode"]) - grams(
        10_000 * SMALL["prefill"] + 2_000 * SMALL["decode"]
    )
    usd = (10_000 * GPT_4O["input"] + 2_000 * GPT_4O["output"]) / 1e6 - (
        10_000 * GPT_4O_MINI["input"] + 2_000 * GPT_4O_MINI["output"]
    ) / 1e6
    assert close(rec["potential_savings_co2e_grams"], g * YEAR)
    assert close(rec["potential_savings_cost"], usd * YEAR)
    assert rec["status"] == "active" and rec["scope"] == "model" and rec["model"] == "gpt-4o"
    assert rec["project_id"] == project
    ev_ = rec["evidence"]
    assert (ev_["events"], ev_["requests"], ev_["input_tokens"], ev_["output_tokens"]) == (
        20,
        20,
        10_000,
        2_000,
    )
    assert ev_["alternative"]["model"] == "gpt-4o-mini" and ev_["window"]["days"] == 30
    assert "gpt-4o-mini" in rec["description"] and f"{g * YEAR:.1f} g" in rec["description"]
    assert of_type(body, "REASONING_OVERUSE") == of_type(body, "PROMPT_CACHING") == []
    assert of_type(body, "DATA_QUALITY") == []


async def test_no_rightsizing_for_hard_requests_or_without_a_small_model(c, wh, org, project):
    o = org.org.id
    push(wh, [ev(o, project, "gpt-4o", tier="L0", uncached=500, output=100) for _ in range(20)])
    assert of_type(await run(c, org), "MODEL_RIGHTSIZING") == []  # no small model the org reaches
    push(wh, [ev(o, project, "gpt-4o-mini", tier="L2", uncached=500, output=400) for _ in range(10)])
    assert len(of_type(await run(c, org), "MODEL_RIGHTSIZING")) == 1  # the same traffic, now it does
    # L3 and long-output unclassified traffic on the large model: nothing to right-size
    other = "p-" + uuid.uuid4().hex[:8]
    push(wh, [ev(o, other, "gpt-4o", tier="L3", uncached=500, output=100) for _ in range(20)])
    push(wh, [ev(o, other, "gpt-4o", tier=None, uncached=500, output=900) for _ in range(20)])
    recs = of_type(await run(c, org), "MODEL_RIGHTSIZING")
    assert [r["project_id"] for r in recs] == [project]


async def test_reasoning_overuse_appears_and_not_for_long_reasoning(c, wh, org, project):
    o = org.org.id
    push(wh, [ev(o, project, "gpt-4o-mini", tier="L2", uncached=500, output=400) for _ in range(10)])
    push(wh, [ev(o, project, "o3", tier="L3", uncached=400, output=2_000) for _ in range(15)])
    assert of_type(await run(c, org), "REASONING_OVERUSE") == []  # long reasoning: what o3 is for
    push(wh, [ev(o, project, "o3", tier="L0", uncached=400, output=50) for _ in range(15)])
    body = await run(c, org)
    [rec] = of_type(body, "REASONING_OVERUSE")
    g = grams(6_000 * REASONING["prefill"] + 750 * REASONING["decode"]) - grams(
        6_000 * SMALL["prefill"] + 750 * SMALL["decode"]
    )
    usd = (
        6_000 * O3["input"] + 750 * O3["output"] - 6_000 * GPT_4O_MINI["input"] - 750 * GPT_4O_MINI["output"]
    ) / 1e6
    assert close(rec["potential_savings_co2e_grams"], g * YEAR)
    assert close(rec["potential_savings_cost"], usd * YEAR)
    assert rec["evidence"]["routing_tiers"] == ["L0"] and rec["evidence"]["requests"] == 15
    assert of_type(body, "MODEL_RIGHTSIZING") == []  # reasoning models are REASONING_OVERUSE's


async def test_prompt_caching_appears_and_not_when_already_cached(c, wh, org, project):
    o = org.org.id
    other = "p-" + uuid.uuid4().hex[:8]
    push(wh, [ev(o, other, "gpt-4o", tier="L2", uncached=1_800, cached=1_200, output=400) for _ in range(12)])
    assert of_type(await run(c, org), "PROMPT_CACHING") == []  # 40% cached already
    push(wh, [ev(o, project, "gpt-4o", tier="L2", uncached=3_000, output=400) for _ in range(12)])
    [rec] = of_type(await run(c, org), "PROMPT_CACHING")
    moved = 18_000  # half of 36,000 input tokens, none cached yet
    g = grams(moved * (LARGE["prefill"] - LARGE["cached"]))
    usd = moved * (GPT_4O["input"] - GPT_4O["cached"]) / 1e6
    assert rec["project_id"] == project
    assert close(rec["potential_savings_co2e_grams"], g * YEAR)
    assert close(rec["potential_savings_cost"], usd * YEAR)
    assert rec["evidence"]["tokens_to_cache"] == moved and rec["evidence"]["cached_share"] == 0


async def test_data_quality_appears_for_many_estimates_only(c, wh, org, project):
    o = org.org.id
    push(wh, [ev(o, project, "gpt-4o-mini", tier="L2", uncached=500, output=400) for _ in range(10)])
    assert of_type(await run(c, org), "DATA_QUALITY") == []
    push(wh, [ev(o, project, "acme-experimental-1", tier=None, provider="acme-ai", region=None,
                 uncached=500, output=100) for _ in range(5)])  # fmt: skip
    [rec] = of_type(await run(c, org), "DATA_QUALITY")
    assert rec["scope"] == "org" and rec["potential_savings_co2e_grams"] == 0
    assert rec["evidence"]["estimated_events"] == 5 and rec["evidence"]["events"] == 15
    assert "5 of 15 events (33%)" in rec["description"]
    assert any("acme-experimental-1" in r["reason"] for r in rec["evidence"]["reasons"])


async def test_region_shift_appears_for_a_dirty_region_only(c, wh, org, project):
    o = org.org.id
    # gpt-4o at azure swedencentral (35.3 g/kWh, the cleanest azure region in v2.0): nothing to shift
    push(wh, [ev(o, project, "gpt-4o", tier="L2", provider="azure", region="swedencentral", uncached=800,
                 output=400) for _ in range(12)])  # fmt: skip
    assert of_type(await run(c, org), "REGION_SHIFT") == []
    # openai/us: every openai region in v2.0 has the same grid
    push(wh, [ev(o, project, "gpt-4o", tier="L2", uncached=800, output=400) for _ in range(12)])
    assert of_type(await run(c, org), "REGION_SHIFT") == []
    push(wh, [ev(o, project, "gpt-4o", tier="L2", provider="azure", region="eastus", uncached=800,
                 output=400) for _ in range(12)])  # fmt: skip
    [rec] = of_type(await run(c, org), "REGION_SHIFT")
    it = 12 * (800 * LARGE["prefill"] + 400 * LARGE["decode"])
    g = it * 1.18 / 3.6e6 * (0.3844 - 0.0353) * 1000  # azure PUE 1.18; eastus 0.3844, swedencentral 0.0353
    assert close(rec["potential_savings_co2e_grams"], g * YEAR)
    assert rec["potential_savings_cost"] == 0.0  # same model, same price
    assert (
        rec["evidence"]["alternative"]["region"] == "swedencentral" and rec["evidence"]["region"] == "eastus"
    )


async def test_batch_eligible_for_poller_only_workloads(c, wh, org, project):
    o = org.org.id
    hourly = dict(tier=None, uncached=40_000, output=8_000, requests=20, source="poller")
    push(wh, [ev(o, project, "gpt-4o-mini", workload="mixed", **hourly)])
    push(wh, [ev(o, project, "gpt-4o-mini", workload="mixed", tier="L2", uncached=500, output=400)])
    push(wh, [ev(o, project, "gpt-4o-mini", workload="chatbot", tier="L2", uncached=500, output=400)
              for _ in range(12)])  # fmt: skip
    assert of_type(await run(c, org), "BATCH_ELIGIBLE") == []  # the gateway serves part of "mixed"
    push(wh, [ev(o, project, "gpt-4o-mini", workload="nightly", days_ago=d, **hourly) for d in (1, 2, 3)])
    [rec] = of_type(await run(c, org), "BATCH_ELIGIBLE")
    cost = 3 * (40_000 * GPT_4O_MINI["input"] + 8_000 * GPT_4O_MINI["output"]) / 1e6
    assert close(rec["potential_savings_cost"], cost * 0.5 * YEAR)
    assert rec["potential_savings_co2e_grams"] == 0.0
    assert rec["scope"] == "workload" and rec["subject"] == f"{project}/nightly"
    assert rec["evidence"]["requests"] == 60 and rec["evidence"]["events"] == 3


# ------------------------------------------------------------------------------------------ state


async def test_rerun_updates_never_twins_and_goes_stale(c, wh, org, project, engine):
    o = org.org.id
    push(wh, [ev(o, project, "gpt-4o", tier="L0", uncached=500, output=100, days_ago=10) for _ in range(20)])
    push(
        wh,
        [ev(o, project, "gpt-4o-mini", tier="L2", uncached=500, output=400, days_ago=10) for _ in range(10)],
    )
    first = of_type(await run(c, org), "MODEL_RIGHTSIZING")
    second = of_type(await run(c, org), "MODEL_RIGHTSIZING")
    assert [r["id"] for r in first] == [r["id"] for r in second] and len(first) == 1
    assert len(Recommendations(engine).list(o)) == 1
    rid = first[0]["id"]
    # the last 7 days hold none of that traffic: the condition no longer holds
    assert of_type(await run(c, org, last="7d"), "MODEL_RIGHTSIZING") == []
    stale = Recommendations(engine).get(o, rid)
    assert stale.status == "stale" and stale.status_changed_by == "engine"
    active = (await c.get(f"{R}/active", headers=org.h)).json()["recommendations"]
    assert rid not in [r["id"] for r in active]
    # the 30-day window holds it again: the same row comes back active
    refreshed = (await c.get(f"{R}/active", params={"refresh": "true"}, headers=org.h)).json()
    assert [r["id"] for r in refreshed["recommendations"]] == [rid]
    hist = (await c.get(f"{R}/history", headers=org.h)).json()["history"]
    assert [(h["from_status"], h["to_status"]) for h in hist] == [(None, "active"), ("active", "stale"),
                                                                   ("stale", "active")]  # fmt: skip


async def test_ignore_restore_apply_and_conflicts(c, wh, org, project, tenants):
    o = org.org.id
    push(wh, [ev(o, project, "gpt-4o", tier="L0", uncached=500, output=100) for _ in range(20)])
    push(wh, [ev(o, project, "gpt-4o-mini", tier="L2", uncached=500, output=400) for _ in range(10)])
    [rec] = of_type(await run(c, org), "MODEL_RIGHTSIZING")
    rid = rec["id"]
    assert (await c.patch(f"{R}/{rid}/ignore", headers=bearer(org.read))).status_code == 403
    r = await c.patch(f"{R}/{rid}/ignore", headers=org.h)
    assert r.status_code == 200 and r.json()["status"] == "ignored"
    assert r.json()["status_changed_by"].startswith("api_key:")
    r = await c.patch(f"{R}/{rid}/ignore", headers=org.h)
    assert r.status_code == 409 and "ignored" in r.json()["detail"]
    assert [x["id"] for x in (await c.get(f"{R}/ignored", headers=org.h)).json()["recommendations"]] == [rid]
    await run(c, org)  # a re-run keeps it ignored
    assert (await c.get(f"{R}/active", headers=org.h)).json()["recommendations"] == []
    assert (await c.patch(f"{R}/{rid}/apply", headers=org.h)).status_code == 409
    r = await c.delete(f"{R}/{rid}/ignore", headers=org.h)
    assert r.status_code == 200 and r.json()["status"] == "active"
    assert (await c.delete(f"{R}/{rid}/ignore", headers=org.h)).status_code == 409
    top = (await c.get(f"{R}/top", params={"limit": 1, "metric": "cost"}, headers=org.h)).json()
    assert [x["id"] for x in top["recommendations"]] == [rid]
    # negative realized savings only with a reason
    r = await c.patch(f"{R}/{rid}/apply", json={"realized_savings_co2e_grams": -5}, headers=org.h)
    assert r.status_code == 422
    body = {"realized_savings_co2e_grams": -5.0, "realized_savings_cost": 0.5, "reason": "longer answers"}
    r = await c.patch(f"{R}/{rid}/apply", json=body, headers=org.h)
    assert r.status_code == 200 and r.json()["status"] == "applied"
    assert r.json()["realized_savings_co2e_grams"] == -5.0 and r.json()["realized_reason"] == "longer answers"
    assert (await c.patch(f"{R}/{rid}/apply", headers=org.h)).status_code == 409
    assert (await c.patch(f"{R}/{rid}/ignore", headers=org.h)).status_code == 409
    applied = (await c.get(f"{R}/applied", headers=org.h)).json()["recommendations"]
    assert [x["id"] for x in applied] == [rid]
    savings = (await c.get(f"{R}/savings", headers=org.h)).json()
    [t] = savings["by_type"]
    assert t["type"] == "MODEL_RIGHTSIZING" and t["applied"] == 1
    assert close(t["claimed_co2e_grams_per_year"], rec["potential_savings_co2e_grams"])
    assert t["reported_co2e_grams"] == -5.0 and t["reported_cost"] == 0.5
    # unknown id and another org's id: 404, nothing changes
    b = tenants[1]
    for method in ("patch", "delete"):
        suffix = "ignore"
        assert (await getattr(c, method)(f"{R}/{uuid.uuid4()}/{suffix}", headers=org.h)).status_code == 404
        assert (await getattr(c, method)(f"{R}/{rid}/{suffix}", headers=b.h)).status_code == 404
    assert (await c.patch(f"{R}/{rid}/apply", headers=b.h)).status_code == 404
    assert (await c.get(f"{R}/applied", headers=b.h)).json()["recommendations"] == []
    hist = (await c.get(f"{R}/history", headers=org.h)).json()["history"]
    assert [h["to_status"] for h in hist] == ["active", "ignored", "active", "applied"]
    assert hist[-1]["note"] == "longer answers"
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert (await c.get(f"{R}/history", params={"start": later}, headers=org.h)).json()["history"] == []
    assert (await c.get(f"{R}/history", params={"start": "yesterday"}, headers=org.h)).status_code == 422


async def test_bad_parameters_are_422(c, org):
    assert (await c.get(R, params={"last": "forever"}, headers=org.h)).status_code == 422
    assert (await c.get(f"{R}/top", params={"metric": "water"}, headers=org.h)).status_code == 422
    assert (await c.get(f"{R}/top", params={"limit": 0}, headers=org.h)).status_code == 422
    empty = await run(c, org)
    assert empty["recommendations"] == []


async def test_measured_savings_move_when_the_traffic_changes(c, wh, org, project, tapp):
    o = org.org.id
    push(wh, [ev(o, project, "gpt-4o", tier="L0", uncached=500, output=100) for _ in range(20)])
    push(wh, [ev(o, project, "gpt-4o-mini", tier="L2", uncached=500, output=400) for _ in range(10)])
    # gpt-4o-mini already served a fifth of the L0 tokens: 3,000 of 15,000
    push(wh, [ev(o, project, "gpt-4o-mini", tier="L0", uncached=500, output=100) for _ in range(5)])
    [rec] = of_type(await run(c, org), "MODEL_RIGHTSIZING")
    assert close(rec["evidence"]["alternative_share"], 0.2)
    assert (await c.patch(f"{R}/{rec['id']}/apply", headers=org.h)).status_code == 200
    before = (await c.get(f"{R}/savings", headers=org.h)).json()
    [item] = before["recommendations"]
    assert item["measured"]["co2e_grams"] == 0 and item["measured"]["events"] == 0
    assert close(item["claimed_co2e_grams_per_year"], rec["potential_savings_co2e_grams"])
    # the L0 traffic moves to gpt-4o-mini; its L2 traffic is not what the recommendation was about
    push(
        wh,
        [ev(o, project, "gpt-4o-mini", tier="L0", uncached=500, output=100, days_ago=0) for _ in range(10)],
    )
    push(
        wh,
        [ev(o, project, "gpt-4o-mini", tier="L2", uncached=500, output=400, days_ago=0) for _ in range(10)],
    )
    after = (await c.get(f"{R}/savings", headers=org.h)).json()
    m = after["recommendations"][0]["measured"]
    g = grams(5_000 * LARGE["prefill"] + 1_000 * LARGE["decode"]) - grams(
        5_000 * SMALL["prefill"] + 1_000 * SMALL["decode"]
    )
    usd = (5_000 * GPT_4O["input"] + 1_000 * GPT_4O["output"] - 5_000 * GPT_4O_MINI["input"]
           - 1_000 * GPT_4O_MINI["output"]) / 1e6  # fmt: skip
    # all of the L0 traffic is on gpt-4o-mini now (share 1 against 0.2 before): (1 − 0.2) / 1 of it moved
    g, usd = 0.8 * g, 0.8 * usd
    assert m["events"] == 10 and m["requests"] == 10
    assert close(m["co2e_grams"], g) and close(m["cost"], usd)
    [t] = after["by_type"]
    assert close(t["measured_co2e_grams"], g) and close(after["total"]["measured_cost"], usd)
    assert after["recommendations"][0]["ledger"] is None and t["ledger_co2e_grams"] == 0

    # the daily ledger: today is recorded once it is over (and settled), with the same figures, once
    ledger = tapp.state.ctx
    counter = "joulestream_co2e_savings_attributed_grams_total"
    attributed = prom.value(prom.parse(exposition()[0].decode()), counter, type="MODEL_RIGHTSIZING")
    today = datetime.now(UTC).date()
    assert await record_due(ledger, datetime.now(UTC)) == []  # today is not over
    tomorrow = datetime.combine(today + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    [day] = await record_due(ledger, tomorrow + SETTLE)
    assert day.day == today and day.events == 10 and day.requests == 10
    assert close(day.co2e_grams, g) and close(day.cost, usd) and day.factors_version == "v2.0"
    assert await record_due(ledger, tomorrow + timedelta(days=1, hours=3)) != []  # the next day: 0, recorded
    assert await record_due(ledger, tomorrow + timedelta(days=1, hours=3)) == []  # written once
    grown = prom.value(prom.parse(exposition()[0].decode()), counter, type="MODEL_RIGHTSIZING")
    assert close(grown - attributed, g)
    body = (await c.get(f"{R}/savings", headers=org.h)).json()
    book = body["recommendations"][0]["ledger"]
    assert book["days"] == 2 and book["first_day"] == today.isoformat() and close(book["co2e_grams"], g)
    assert close(body["total"]["ledger_co2e_grams"], g) and close(body["total"]["ledger_cost"], usd)
    # on request (admin): nothing is due now
    r = await c.post(f"{R}/savings/record", headers=org.h)
    assert r.status_code == 200 and r.json() == {"recorded_days": 0}


async def test_sustainability_score_by_hand(c, wh, org, project):
    o = org.org.id
    empty = (await c.get("/api/v1/sustainability", headers=org.h)).json()
    assert empty["overall_score"] is None and empty["dimension_scores"] == {}
    # 20 requests pinned to gpt-4o, 2 of them after a failed upstream attempt; 10 through model "auto"
    pinned = [{"routing": "pinned", "failed_attempts": "1" if i < 2 else "0"} for i in range(20)]
    push(wh, [ev(o, project, "gpt-4o", tier="L0", uncached=500, output=100, labels=lb) for lb in pinned])
    auto = {"routing": "auto", "failed_attempts": "0"}
    push(
        wh,
        [
            ev(o, project, "gpt-4o-mini", tier="L0", uncached=400, cached=100, output=100, labels=auto)
            for _ in range(10)
        ],
    )
    push(wh, [ev(o, project, "gpt-4o", tier="L2", uncached=500, output=100, days_ago=40) for _ in range(10)])
    r = await c.get("/api/v1/sustainability", params={"last": "30d"}, headers=org.h)
    assert r.status_code == 200, r.text
    body = r.json()
    d = body["dimension_scores"]
    model = 100 * 6_000 / 18_000  # low-tier tokens: 12,000 on gpt-4o (large), 6,000 on gpt-4o-mini
    cache = 100 * (1_000 / 15_000) / 0.5  # 1,000 of 15,000 input tokens cached, against a 50 % target
    grid = 100 * (1 - 384.4 / 700)  # everything at openai/us, 384.4 g/kWh
    # g CO2e per 1M tokens: gpt-4o-mini reads its cached tokens at the small tier's 0.005 J/token
    now_per_1m = (
        (20 * grams(500 * 0.5 + 100 * 3.0) + 10 * grams(400 * 0.05 + 100 * 0.005 + 100 * 0.3)) / 18_000 * 1e6
    )
    before_per_1m = grams(500 * 0.5 + 100 * 3.0) / 600 * 1e6
    trend = 50 + 50 * (before_per_1m - now_per_1m) / before_per_1m
    routing = 100 * 10 / 30  # 10 of the 30 labelled requests asked for "auto"
    waste = 100 * (1 - 2 / 32)  # 2 failed attempts of 32
    assert close(d["model_efficiency"]["score"], model)
    assert close(d["cache_efficiency"]["score"], cache)
    assert math.isclose(d["grid_carbon"]["score"], grid, rel_tol=1e-9)
    assert math.isclose(d["intensity_trend"]["score"], trend, rel_tol=1e-9)
    assert d["data_quality"]["score"] == 100
    assert close(d["routing"]["score"], routing) and close(d["waste"]["score"], waste)
    assert d["routing"]["drivers"] == {"labelled_requests": 30, "auto_requests": 10}
    assert d["waste"]["drivers"] == {"upstream_attempts": 32, "failed_attempts": 2}
    overall = (
        0.20 * model + 0.15 * cache + 0.20 * grid + 0.10 * trend + 0.20 * 100 + 0.10 * routing + 0.05 * waste
    )
    assert math.isclose(body["overall_score"], overall, rel_tol=1e-9) and 0 < overall < 100
    assert d["model_efficiency"]["drivers"] == {
        "low_tier_tokens": 18_000,
        "on_large_or_reasoning_models": 12_000,
    }
    # the earlier window's requests carry no labels: no routing or waste dimension, weights scaled to sum to 1
    before = await c.get("/api/v1/sustainability", params={"start": _day(45), "end": _day(31)}, headers=org.h)
    dims = before.json()["dimension_scores"]
    assert "routing" not in dims and "waste" not in dims
    assert math.isclose(sum(x["weight"] for x in dims.values()), 1.0)


def _day(days_ago: int) -> str:
    return (datetime.now(UTC) - timedelta(days=days_ago)).date().isoformat()


async def test_the_demo_traffic_gets_three_kinds_and_a_middling_score(c, wh, org, project):
    """`make run`'s simulated traffic (pipelines/simulate.py), for one org, through the pipeline's code path."""
    from pipelines.simulate import generate

    traffic = generate(1_500, tenants={org.org.id: [project]}, days=7, seed=11)
    push(wh, traffic.expected_events)
    kinds = {r["type"] for r in (await run(c, org))["recommendations"]}
    assert len(kinds) >= 3, kinds
    assert {"MODEL_RIGHTSIZING", "PROMPT_CACHING", "DATA_QUALITY"} <= kinds
    score = (await c.get("/api/v1/sustainability", headers=org.h)).json()["overall_score"]
    assert 0 < score < 100


async def test_the_default_window_is_a_setting(make_app, settings, wh, org):
    app = make_app(settings=settings.replace(insights_window="7d"), warehouse_client_factory=lambda: wh)
    async with client_for(app) as c:
        assert (await c.get(R, headers=org.h)).json()["window"]["label"] == "7d"
        assert (await c.get(R, params={"last": "2d"}, headers=org.h)).json()["window"]["label"] == "2d"
        assert (await c.get("/api/v1/sustainability", headers=org.h)).json()["window"]["label"] == "7d"
    app.state.ctx.telemetry.close()
    with pytest.raises(ValueError):
        settings.replace(insights_window="forever")
