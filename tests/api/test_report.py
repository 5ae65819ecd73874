"""/api/v1/report/summary and /report/export over telemetry written through the pipeline's own code path: the
totals equal /metrics/summary and the signed ledger; CSV and Parquet read back (pandas, pyarrow) equal the
JSON; the file name names the org, window and granularity."""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime, timedelta

import orjson
import pandas as pd
import pyarrow.parquet as pq
import pytest

from core.windows import Window, year_windows
from tests.api.telemetry_data import Dataset
from tests.api.test_metrics import CHECKED, close, same
from tests.fixtures_api import client_for
from warehouse import reporting

pytestmark = pytest.mark.anyio

R = "/api/v1/report"


def _years(ds: Dataset) -> list[int]:
    return [ds.today.year - 1, ds.today.year]  # the data spans the last 45 days


def _ledger(wh, org_id: str, windows: list[Window], project_id: str | None = None) -> dict:
    acc: dict = {}
    for w in windows:
        for k, v in reporting.ledger_sums(wh, reporting.Query(org_id, w, project_id=project_id)).items():
            acc[k] = acc.get(k, 0) + v
    return acc


async def test_report_totals_equal_metrics_and_the_ledger_at_every_granularity(c, ds, wh):
    start, end = (ds.today - timedelta(days=40)).isoformat(), ds.today.isoformat()
    metrics = (
        await c.get("/api/v1/metrics/summary", params={"start": start, "end": end}, headers=ds.a.h)
    ).json()
    w = Window(
        datetime.fromisoformat(start).replace(tzinfo=UTC), datetime.fromisoformat(end).replace(tzinfo=UTC), ""
    )
    w = Window(w.start, w.end + timedelta(days=1), "")
    ledger = _ledger(wh, ds.a.org.id, [w])
    for g in ("hourly", "daily", "weekly", "monthly", "yearly"):
        r = await c.get(f"{R}/summary", params={"start": start, "end": end, "granularity": g}, headers=ds.a.h)
        assert r.status_code == 200, r.text
        s = r.json()
        same(s["totals"], ledger)
        for k in CHECKED:
            assert close(s["totals"][k] or 0, metrics[k] or 0), k
        assert s["row_count"] == len(
            w.buckets(
                {"hourly": "hour", "daily": "day", "weekly": "week", "monthly": "month", "yearly": "year"}[g]
            )
        )
        assert s["factors_versions"] == ["v2.0"]


async def test_exports_read_back_and_match_the_json(c, ds, wh):
    years = _years(ds)
    params = [("years", y) for y in years] + [("granularity", "monthly")]
    files = {}
    for fmt in ("json", "csv", "parquet"):
        r = await c.get(f"{R}/export", params=[*params, ("format", fmt)], headers=ds.a.h)
        assert r.status_code == 200, r.text
        want = f'attachment; filename="joulestream-{ds.a.org.slug}-{years[0]}-{years[1]}-monthly.{fmt}"'
        assert r.headers["content-disposition"] == want
        files[fmt] = r.content
    report = orjson.loads(files["json"])
    rows = report["rows"]
    assert len(rows) == 24 and report["totals"]["row_count"] == 24  # 12 months × 2 years, empty ones as zeros
    assert [r["period_start"][:7] for r in rows] == [f"{y}-{m:02d}" for y in years for m in range(1, 13)]
    same(report["totals"], _ledger(wh, ds.a.org.id, year_windows(years)))
    acc = {k: sum((r[k] or 0) for r in rows) for k in CHECKED}
    same(acc, _ledger(wh, ds.a.org.id, year_windows(years)))
    m = report["methodology"]
    assert m["factors_versions"] == ["v2.0"] and m["sources"] and m["boundary"]["excluded"]

    frames = {
        "csv": pd.read_csv(io.BytesIO(files["csv"])),
        "parquet": pq.read_table(io.BytesIO(files["parquet"])).to_pandas(),
    }
    for fmt, df in frames.items():
        assert list(df.columns) == report["report"]["columns"], fmt
        assert len(df) == len(rows), fmt
        for i, row in enumerate(rows):
            for col, want in row.items():
                got = df[col].iloc[i]
                if col.startswith("period_"):
                    assert pd.Timestamp(got) == pd.Timestamp(want), (fmt, col)
                elif col == "factors_versions":
                    assert (got if isinstance(got, str) else "") == want, (fmt, col)
                elif want is None:
                    assert pd.isna(got), (fmt, col)
                else:
                    assert math.isclose(float(got), float(want), rel_tol=1e-12, abs_tol=1e-12), (fmt, col)


async def test_a_report_by_project(c, ds, wh):
    start = (ds.today - timedelta(days=40)).isoformat()
    r = await c.get(
        f"{R}/export",
        params={
            "start": start,
            "end": ds.today.isoformat(),
            "granularity": "yearly",
            "group_by_project": "true",
            "format": "json",
        },
        headers=ds.a.h,
    )
    body = r.json()
    projects = {row["project"] for row in body["rows"]}
    assert {"Default", "Alpha", "Beta"} <= projects and "Bravo" not in projects
    for row in body["rows"]:
        assert row["events"] > 0 and row["project_id"]
    one = ds.projects["Alpha"].id
    alpha = (
        await c.get(
            f"{R}/summary",
            params={"start": start, "end": ds.today.isoformat(), "project": one},
            headers=ds.a.h,
        )
    ).json()["totals"]
    rows = [row for row in body["rows"] if row["project_id"] == one]
    assert close(sum(row["co2e_grams"] for row in rows), alpha["co2e_grams"])
    assert sum(row["events"] for row in rows) == alpha["events"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"years": 1999}, "years"),
        ({"years": 2101}, "years"),
        ({"years": "twenty"}, "years"),
        ({"years": 2025, "last": "7d"}, "years"),
        ({"granularity": "minutely"}, "granularity"),
        ({"format": "xml"}, "format"),
        ({"last": "30d", "granularity": "hourly", "start": "2026-01-01"}, "last"),
        ({"start": "2020-01-01", "end": "2022-01-01", "granularity": "hourly"}, "granularity"),
        ({"start": "2001-01-01", "end": "2015-01-01"}, "end"),
    ],
)
async def test_bad_report_parameters_are_422(c, tenants, params, field):
    r = await c.get(f"{R}/export", params=params, headers=tenants[0].h)
    assert r.status_code == 422, r.text
    assert any(field in e["loc"] for e in r.json()["detail"]), r.json()


async def test_no_warehouse_gives_empty_periods(make_app, tenants):
    app = make_app()
    async with client_for(app) as c:
        r = await c.get(f"{R}/summary", params={"years": 2025}, headers=tenants[0].h)
        assert r.status_code == 200
        assert r.json()["row_count"] == 12 and r.json()["totals"]["events"] == 0
