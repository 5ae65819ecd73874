"""/api/v1/metrics/*: rows, summary, series, by-project, top-N and the KPI cache, over telemetry written through
the pipeline's own code path (tests/api/telemetry_data.py: the enrich step, the sink's decoding and write,
revisions and re-sends), checked against the signed ledger and against the events themselves."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta

import pytest

from core.windows import Window
from tests.api.telemetry_data import Dataset, push
from tests.fixtures_api import client_for
from warehouse import reporting

pytestmark = pytest.mark.anyio

M = "/api/v1/metrics"
# figure → (rollup measure, scale): the figures checked against the ledger
CHECKED = {
    "events": ("events", 1),
    "requests": ("request_count", 1),
    "input_tokens": ("input_tokens_uncached", 1),
    "cached_input_tokens": ("input_tokens_cached", 1),
    "output_tokens": ("output_tokens", 1),
    "joules": ("energy_j", 1),
    "joules_low": ("energy_j_low", 1),
    "joules_high": ("energy_j_high", 1),
    "co2e_grams": ("co2_kg", 1000),
    "co2e_grams_low": ("co2_kg_low", 1000),
    "co2e_grams_high": ("co2_kg_high", 1000),
    "co2e_market_grams": ("co2_kg_market", 1000),
    "embodied_co2e_grams": ("co2_kg_embodied", 1000),
    "water_ml": ("water_l", 1000),
    "total_cost": ("cost_usd", 1),
}
SERIES_FIELDS = ",".join(CHECKED)


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def same(got: dict, want: dict) -> None:
    """`got` (figures) equals `want` (ledger sums): integers exactly, floats to the last few bits."""
    for name, (measure, scale) in CHECKED.items():
        g, w = got[name], want[measure] * scale
        if isinstance(want[measure], int):
            assert g == w, name
        else:
            assert close(g or 0.0, w), (name, g, w)


def _window(ds: Dataset) -> tuple[str, str, Window]:
    start, end = ds.today - timedelta(days=40), ds.today
    w = Window(
        datetime(start.year, start.month, start.day, tzinfo=UTC),
        datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1),
        "",
    )
    return start.isoformat(), end.isoformat(), w


def _sum_points(series: list[dict]) -> dict:
    acc: dict = {}
    for s in series:
        for p in s["points"]:
            for k in CHECKED:
                acc[k] = acc.get(k, 0) + (p[k] or 0)
    return acc


async def test_series_summary_and_ledger_agree_at_every_granularity(c, ds, wh):
    start, end, w = _window(ds)
    ledger = reporting.ledger_sums(wh, reporting.Query(ds.a.org.id, w))
    assert ledger["events"] == len(ds.events(ds.a.org.id, start=ds.today - timedelta(days=40), end=ds.today))
    assert ledger["co2_kg_market"] > 0 and ledger["water_l"] > 0 and ledger["cost_usd"] > 0  # v2 figures
    summary = (await c.get(f"{M}/summary", params={"start": start, "end": end}, headers=ds.a.h)).json()
    same(summary, ledger)
    assert summary["co2e_grams_low"] < summary["co2e_grams"] < summary["co2e_grams_high"]
    assert close(summary["total_co2e_all_scopes"], summary["co2e_grams"] + summary["embodied_co2e_grams"])
    assert summary["factors_versions"] == ["v2.0"]
    for g in ("hour", "day", "week", "month", "year"):
        r = await c.get(
            f"{M}/timeseries",
            params={"start": start, "end": end, "granularity": g, "fields": SERIES_FIELDS},
            headers=ds.a.h,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        (series,) = body["series"]
        assert len(series["points"]) == len(w.buckets(g))  # every bucket, empty ones as zeros
        same(_sum_points(body["series"]), ledger)
        if g == "hour":  # most hours have no event: present, as zeros
            assert any(p["events"] == 0 and p["co2e_grams"] == 0 for p in series["points"])


async def test_grouped_series_by_project_and_top_models_add_up(c, ds, wh):
    start, end, w = _window(ds)
    ledger = reporting.ledger_sums(wh, reporting.Query(ds.a.org.id, w))
    p = {"start": start, "end": end}
    for group in ("model", "project", "provider", "routing_tier", "workload", "region"):
        r = await c.get(
            f"{M}/timeseries",
            params={**p, "group_by": group, "granularity": "week", "fields": SERIES_FIELDS},
            headers=ds.a.h,
        )
        assert r.status_code == 200, r.text
        same(_sum_points(r.json()["series"]), ledger)
    models = (await c.get(f"{M}/timeseries", params={**p, "group_by": "model"}, headers=ds.a.h)).json()
    assert {s["key"]["model"] for s in models["series"]} == {
        e.model for e in ds.events(ds.a.org.id, start=ds.today - timedelta(days=40))
    }
    folded = (
        await c.get(
            f"{M}/timeseries",
            params={**p, "group_by": "model", "max_series": 2, "fields": SERIES_FIELDS},
            headers=ds.a.h,
        )
    ).json()
    assert [s["key"]["model"] for s in folded["series"]][-1] == "other" and len(folded["series"]) == 3
    same(_sum_points(folded["series"]), ledger)

    by_project = (await c.get(f"{M}/by-project", params=p, headers=ds.a.h)).json()["projects"]
    names = {x["project"] for x in by_project}
    assert names <= {"Default", "Alpha", "Beta", "Gamma"} and len(names) >= 3
    for pr in by_project:
        want = reporting.ledger_sums(wh, reporting.Query(ds.a.org.id, w, project_id=pr["project_id"]))
        same(pr, want)
    top = (
        await c.get(f"{M}/top-models", params={**p, "limit": 2, "metric": "energy"}, headers=ds.a.h)
    ).json()
    assert len(top["models"]) == 2
    all_models = (await c.get(f"{M}/top-models", params={**p, "limit": 100}, headers=ds.a.h)).json()["models"]
    energies = sorted((m["joules"] for m in all_models), reverse=True)
    assert [m["joules"] for m in top["models"]] == energies[:2]
    co2 = [m["co2e_grams"] for m in all_models]
    assert co2 == sorted(co2, reverse=True)


async def test_rows_paginate_and_say_how_they_were_estimated(c, ds, wh):
    start, end, w = _window(ds)
    ledger = reporting.ledger_sums(wh, reporting.Query(ds.a.org.id, w))
    p = {"start": start, "end": end, "granularity": "day"}
    first = (await c.get(M, params={**p, "limit": 1000}, headers=ds.a.h)).json()
    rows = first["metrics"]
    assert first["total"] == len(rows) > 10
    acc = {k: sum(r[k] or 0 for r in rows) for k in CHECKED}
    same(acc, ledger)
    keys = [(r["timestamp"], r["project_id"], r["workload_id"], r["provider"], r["model"]) for r in rows]
    assert len(set(keys)) == len(keys)
    assert [r["timestamp"] for r in rows] == sorted((r["timestamp"] for r in rows), reverse=True)
    pages = []
    for offset in range(0, first["total"], 7):
        pages += (await c.get(M, params={**p, "limit": 7, "offset": offset}, headers=ds.a.h)).json()[
            "metrics"
        ]
    assert pages == rows
    acme = [r for r in rows if r["model"] == "acme-experimental-1"]
    assert acme and all(r["is_estimated"] and r["estimation_reasons"] for r in acme)
    known = [r for r in rows if r["model"] == "gpt-4o"]
    assert known and all(r["grid_intensity"] > 0 and r["pue"] >= 1 for r in known)
    for r in known:  # energy-weighted intensity: CO2e / kWh
        assert close(r["grid_intensity"], r["co2e_grams"] / r["energy_kwh"])


async def test_last_windows_and_granularity_defaults(c, ds):
    day = (await c.get(f"{M}/summary", params={"last": "7d"}, headers=ds.a.h)).json()
    want = ds.events(ds.a.org.id, start=ds.today - timedelta(days=6), end=ds.today)
    assert day["events"] == len(want)
    r = (await c.get(f"{M}/timeseries", params={"last": "24h"}, headers=ds.a.h)).json()
    assert r["granularity"] == "hour" and len(r["series"][0]["points"]) == 24
    r = (await c.get(f"{M}/timeseries", params={"last": "30d"}, headers=ds.a.h)).json()
    assert r["granularity"] == "day" and len(r["series"][0]["points"]) == 30
    ytd = (await c.get(f"{M}/summary", params={"last": "ytd"}, headers=ds.a.h)).json()
    assert ytd["window"]["start"].startswith(f"{ds.today.year}-01-01")


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/summary", {"last": "7 days"}, "last"),
        ("/summary", {"last": "0d"}, "last"),
        ("/summary", {"last": "11y"}, "last"),
        ("/timeseries", {"granularity": "minute"}, "granularity"),
        ("/summary", {"start": "2026-02-01", "end": "2026-01-01"}, "end"),
        ("/summary", {"start": "2001-01-01", "end": "2015-01-01"}, "end"),
        ("/summary", {"start": "1999-12-31"}, "start"),
        ("/summary", {"start": "2026-01-01T10:30:00"}, "start"),
        ("/summary", {"start": "soon"}, "start"),
        ("/summary", {"end": "2026-01-01"}, "start"),
        ("/summary", {"last": "7d", "start": "2026-01-01"}, "last"),
        ("", {"limit": 1001}, "limit"),
        ("/top-models", {"metric": "water"}, "metric"),
        ("/timeseries", {"group_by": "pod"}, "group_by"),
        ("/timeseries", {"fields": "co2e_grams,nope"}, "fields"),
        ("/timeseries", {"last": "2y", "granularity": "hour"}, "granularity"),
        ("/dashboard-timeseries/2d", {}, "window_slug"),
    ],
)
async def test_bad_parameters_are_422_with_field_errors(c, tenants, path, params, field):
    r = await c.get(f"{M}{path}", params=params, headers=tenants[0].h)
    assert r.status_code == 422, r.text
    assert field in {e["loc"][-1] for e in r.json()["detail"]}


async def test_another_orgs_project_is_404(c, ds):
    r = await c.get(f"{M}/summary", params={"project": ds.projects["Bravo"].id}, headers=ds.a.h)
    assert r.status_code == 404


# --------------------------------------------------------------------------------------------- KPI cache


async def test_dashboard_cache_changes_only_when_refreshed(c, ds, wh, tapp):
    first = (await c.get(f"{M}/dashboard-summary", headers=ds.a.h)).json()
    assert set(first["windows"]) == {"24h", "7d", "30d", "1y", "ytd"}
    thirty = first["windows"]["30d"]
    live = (await c.get(f"{M}/summary", params={"last": "30d"}, headers=ds.a.h)).json()
    assert thirty["events"] == live["events"] and close(thirty["co2e_grams"], live["co2e_grams"])
    series = (await c.get(f"{M}/dashboard-timeseries/30d", headers=ds.a.h)).json()
    assert len(series["points"]) == 30
    assert close(sum(p["co2e_grams"] for p in series["points"]), thirty["co2e_grams"])

    # a late revision of a recent event (a provider's correction): 10x the output tokens
    recent = max(ds.events(ds.a.org.id), key=lambda e: e.bucket_start)
    push(wh, [recent.model_copy(update={"revision": recent.revision + 5, "output_tokens": 50_000})])
    live2 = (await c.get(f"{M}/summary", params={"last": "30d"}, headers=ds.a.h)).json()
    assert live2["output_tokens"] == live["output_tokens"] - recent.output_tokens + 50_000
    assert live2["events"] == live["events"]
    cached = (await c.get(f"{M}/dashboard-summary", headers=ds.a.h)).json()
    assert cached["windows"]["30d"]["output_tokens"] == thirty["output_tokens"]  # the cache, not the ledger

    r = await c.post(f"{M}/dashboard-summary/refresh", headers=ds.a.h)
    assert r.status_code == 202
    after = (await c.get(f"{M}/dashboard-summary", headers=ds.a.h)).json()
    assert after["windows"]["30d"]["output_tokens"] == live2["output_tokens"]
    assert after["computed_at"] > first["computed_at"]
    series2 = (await c.get(f"{M}/dashboard-timeseries/30d", headers=ds.a.h)).json()
    assert close(sum(p["co2e_grams"] for p in series2["points"]), live2["co2e_grams"])
    assert series2["points"] != series["points"]


async def test_the_scheduled_refresh_picks_up_new_data(c, ds, wh, tapp):
    from api.kpis import KpiRefresher

    before = (await c.get(f"{M}/dashboard-summary", headers=ds.a.h)).json()
    recent = max(ds.events(ds.a.org.id), key=lambda e: e.bucket_start)
    extra = recent.model_copy(update={"event_id": "late-arrival-1", "revision": 0})
    push(wh, [extra])
    refresher = KpiRefresher(tapp.state.ctx, 0.05)
    refresher.start()
    try:
        for _ in range(200):
            now = (await c.get(f"{M}/dashboard-summary", headers=ds.a.h)).json()
            if (
                now["windows"]["24h"]["computed_at"] > before["windows"]["24h"]["computed_at"]
                and refresher.runs
            ):
                break
            await asyncio.sleep(0.05)
    finally:
        await refresher.stop()
    assert now["windows"]["30d"]["events"] == before["windows"]["30d"]["events"] + 1
    # org B is refreshed too, and sees only its own events
    async with client_for(tapp) as cb:
        b = (await cb.get(f"{M}/dashboard-summary", headers=ds.b.h)).json()
    assert b["windows"]["30d"]["events"] == len(ds.events(ds.b.org.id, start=ds.today - timedelta(days=29)))
