"""/api/v1/export/telemetry: formats, columns, filters, the 90-day rule, tenancy, errors — and that the body
is streamed: bounded chunks, other requests served while an export is open, clean-up when the client
goes away (real HTTP: uvicorn on loopback)."""

from __future__ import annotations

import csv
import io
import json
import math
import socket
import threading
import time
import tracemalloc
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import httpx
import pyarrow.parquet as pq
import pytest
import uvicorn

from bench.load_warehouse import Shape, load
from tests.api.telemetry_data import FACTORS, Dataset
from warehouse.export import EXPORT_COLUMNS, ExportStream, iter_export
from warehouse.telemetry import Scope

pytestmark = pytest.mark.anyio

E = "/api/v1/export/telemetry"
INTS = EXPORT_COLUMNS[4:8]
FLOATS = EXPORT_COLUMNS[8:12]


def _names(ds: Dataset) -> dict[str, str]:
    return {p.id: n for n, p in ds.projects.items()}


def _check_rows(ds: Dataset, rows: list[dict], start: date, end: date, **filters) -> None:
    """Export rows (values as parsed: str or numbers) == the expected daily rows."""
    names = _names(ds)
    by_name = {n: pid for pid, n in names.items()}
    want = ds.daily_rows(ds.a.org.id, start, end, **filters)
    got = {}
    for r in rows:
        key = (str(r["date"]), by_name[r["project_name"]], r["provider"], r["model"])
        assert key not in got, key
        got[key] = r
        assert r["factors_version"] == FACTORS.version
    assert set(got) == set(want)
    for key, w in want.items():
        g = got[key]
        for f in INTS:
            assert int(g[f]) == w[f], (key, f)
        for f in FLOATS:
            assert math.isclose(float(g[f]), w[f], rel_tol=1e-9, abs_tol=1e-15), (key, f)
    dates = [str(r["date"]) for r in rows]
    assert dates == sorted(dates)


async def test_csv(c, ds):
    start, end = ds.today - timedelta(days=44), ds.today
    r = await c.get(E, params={"format": "csv", "start_date": start.isoformat()}, headers=ds.a.h)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"] == f'attachment; filename="telemetry-{end.isoformat()}.csv"'
    lines = r.text.splitlines()
    assert lines[0] == ",".join(EXPORT_COLUMNS)
    rows = list(csv.DictReader(io.StringIO(r.text)))
    _check_rows(ds, rows, start, end)
    assert "Gamma" in {row["project_name"] for row in rows}  # a deleted project keeps its name


async def test_json(c, ds):
    end = ds.today - timedelta(days=1)
    start = end - timedelta(days=30)
    params = {"format": "json", "end_date": end.isoformat()}
    r = await c.get(E, params=params, headers=ds.a.h)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.headers["content-disposition"] == f'attachment; filename="telemetry-{end.isoformat()}.json"'
    body = r.json()
    assert set(body) == {"data", "export_metadata"}
    meta = body["export_metadata"]
    assert meta["total_records"] == len(body["data"]) > 0
    assert meta["filters_applied"] == {
        "start_date": start.isoformat(),
        "end_date": end.isoformat(),
        "format": "json",
    }
    assert abs(datetime.fromisoformat(meta["exported_at"]).timestamp() - time.time()) < 60
    for row in body["data"]:
        assert list(row) == list(EXPORT_COLUMNS)
        assert all(isinstance(row[f], int) for f in INTS) and all(
            isinstance(row[f], int | float) for f in FLOATS
        )
    _check_rows(ds, body["data"], start, end)


async def test_parquet(c, ds):
    start = ds.today - timedelta(days=30)
    r = await c.get(E, params={"format": "parquet"}, headers=ds.a.h)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/vnd.apache.parquet"
    assert r.headers["content-disposition"].endswith('.parquet"')
    table = pq.read_table(io.BytesIO(r.content))
    assert table.column_names == list(EXPORT_COLUMNS)
    assert str(table.schema.field("date").type) == "date32[day]"
    _check_rows(ds, table.to_pylist(), start, ds.today)


async def test_formats_agree_and_filters(c, ds):
    beta = ds.projects["Beta"].id
    start = ds.today - timedelta(days=44)
    for filters, params in (
        ({"project_id": beta}, {"project_id": beta}),
        ({"model": "gpt-4o"}, {"model": "gpt-4o"}),
        (
            {"project_id": beta, "model": "claude-sonnet-4-20250514"},
            {"project_id": beta, "model": "claude-sonnet-4-20250514"},
        ),
    ):
        q = {"start_date": start.isoformat(), **params}
        rows_csv = list(
            csv.DictReader(io.StringIO((await c.get(E, params={**q, "format": "csv"}, headers=ds.a.h)).text))
        )
        body = (await c.get(E, params={**q, "format": "json"}, headers=ds.a.h)).json()
        table = pq.read_table(
            io.BytesIO((await c.get(E, params={**q, "format": "parquet"}, headers=ds.a.h)).content)
        )
        _check_rows(ds, rows_csv, start, ds.today, **filters)
        _check_rows(ds, body["data"], start, ds.today, **filters)
        _check_rows(ds, table.to_pylist(), start, ds.today, **filters)
        assert len(rows_csv) == len(body["data"]) == table.num_rows
        assert body["export_metadata"]["filters_applied"] == {
            "start_date": start.isoformat(),
            "end_date": ds.today.isoformat(),
            "format": "json",
            **params,
        }
    empty = await c.get(E, params={"format": "csv", "model": "nothing-like-this"}, headers=ds.a.h)
    assert empty.status_code == 200 and empty.text == ",".join(EXPORT_COLUMNS) + "\n"
    j = (await c.get(E, params={"format": "json", "model": "nothing-like-this"}, headers=ds.a.h)).json()
    assert j["data"] == [] and j["export_metadata"]["total_records"] == 0
    p = await c.get(E, params={"format": "parquet", "model": "nothing-like-this"}, headers=ds.a.h)
    assert pq.read_table(io.BytesIO(p.content)).num_rows == 0


async def test_window_rule_and_validation(c, ds):
    h = ds.a.h
    ok = await c.get(
        E, params={"format": "csv", "start_date": "2026-01-01", "end_date": "2026-04-01"}, headers=h
    )
    assert ok.status_code == 200  # exactly 90 days
    r = await c.get(
        E, params={"format": "csv", "start_date": "2026-01-01", "end_date": "2026-04-02"}, headers=h
    )
    assert r.status_code == 400
    assert r.json() == {
        "detail": "the export window is at most 90 days: 2026-01-01 to 2026-04-02 spans 91 days; "
        "split the export into smaller windows"
    }
    r = await c.get(
        E, params={"format": "json", "start_date": "0001-01-01", "end_date": "9999-12-31"}, headers=h
    )
    assert r.status_code == 400
    r = await c.get(E, headers=h)
    assert r.status_code == 200 and r.headers["content-type"] == "text/csv; charset=utf-8"
    for params in (
        {"format": "xml"},
        {"format": "CSV"},
        {"format": "csv", "start_date": "2026-04-02", "end_date": "2026-04-01"},
        {"format": "csv", "start_date": "not-a-date"},
        {"format": "csv", "project_id": ""},
        {"format": "csv", "model": "m" * 201},
    ):
        r = await c.get(E, params=params, headers=h)
        assert r.status_code == 422, params
        assert isinstance(r.json()["detail"], list)


async def test_tenancy(c, ds):
    a_names = {n for n in ("Default", "Alpha", "Beta", "Gamma")}
    for fmt in ("csv", "json"):
        r = await c.get(E, params={"format": fmt}, headers=ds.b.h)
        assert r.status_code == 200
        for p in (ds.projects[n] for n in a_names if n != "Default"):
            assert p.id not in r.text and p.name not in r.text
    rows = list(csv.DictReader(io.StringIO((await c.get(E, params={"format": "csv"}, headers=ds.b.h)).text)))
    assert {r["project_name"] for r in rows} == {"Bravo"}
    for pid in (ds.projects["Alpha"].id, ds.projects["Gamma"].id, "unknown"):
        r = await c.get(E, params={"format": "csv", "project_id": pid}, headers=ds.b.h)
        assert r.status_code == 404 and r.json() == {"detail": "project not found"}


async def test_without_a_warehouse_the_export_is_empty(api, tenants):
    h = tenants[0].h
    r = await api.get(E, params={"format": "csv"}, headers=h)
    assert r.status_code == 200 and r.text == ",".join(EXPORT_COLUMNS) + "\n"
    j = (await api.get(E, params={"format": "json"}, headers=h)).json()
    assert j["data"] == [] and j["export_metadata"]["total_records"] == 0
    p = await api.get(E, params={"format": "parquet"}, headers=h)
    assert pq.read_table(io.BytesIO(p.content)).column_names == list(EXPORT_COLUMNS)


# --------------------------------------------------------------------------------------------- streaming


@dataclass(frozen=True)
class TenantShape(Shape):
    """The bench generator's data, for the tenants' org ids."""

    org_ids: tuple[str, ...] = ()

    def org_id(self, i: int) -> str:
        return self.org_ids[i]


def _load_for(wh, tenants, events: int, projects: int) -> tuple:
    a, b = tenants
    shape = TenantShape(
        events=events,
        days=10,
        orgs=2,
        projects=projects,
        other_projects=5,
        main_share=0.95,
        org_ids=(a.org.id, b.org.id),
    )
    load(wh, shape, log=None)
    where, params = Scope(a.org.id).where("daily")
    n_rows = wh.query(
        "SELECT count() FROM (SELECT day, project_id, provider, model, factors_version FROM usage_daily "
        f"WHERE {where} GROUP BY ALL HAVING sum(events) != 0)",
        parameters=params,
    ).result_rows[0][0]
    return a, n_rows


@pytest.fixture
def big(wh, tenants):
    """~60k events over 10 days in org A (300 projects × 12 models): ~25k export rows, ~4 MB of CSV."""
    return _load_for(wh, tenants, 60_000, 300)


@pytest.fixture
def bigger(wh, tenants):
    """~250k events over 10 days in org A (1000 projects): ~90k export rows, ~35 MB of JSON — more than
    loopback socket buffers hold, so an unread export stays open on the server."""
    return _load_for(wh, tenants, 250_000, 1000)


@pytest.fixture
def bulk(wh):
    """~300k events over 10 days (bench generator, org `bench-org-0`, 1000 projects): ~120k export rows."""
    load(wh, Shape(events=300_000, days=10, orgs=1, projects=1000), log=None)
    return "bench-org-0"


def test_export_memory_does_not_grow_with_rows(wh, bulk):
    """The export is produced chunk by chunk: the Python memory it needs stays far below its size."""
    today = date.today()
    scope = Scope(bulk, today - timedelta(days=30), today)
    for fmt in ("csv", "json", "parquet"):
        tracemalloc.start()
        total = biggest = chunks = 0
        for chunk in iter_export(wh, scope, fmt, {}):
            total += len(chunk)
            biggest = max(biggest, len(chunk))
            chunks += 1
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert chunks > (1 if fmt == "parquet" else 3), fmt
        assert peak < 32 << 20, (fmt, peak, total)
        if fmt != "parquet":
            assert peak < total / 2 and biggest <= (1 << 20) + 4096, (fmt, peak, total, biggest)


def test_export_runs_and_row_groups(wh, big):
    a, n_rows = big
    today = date.today()
    scope = Scope(a.org.id, today - timedelta(days=30), today)
    # many small runs (one query each) give the same body as a few big ones: same rows, same order
    for fmt in ("csv", "json"):
        bodies = []
        for query_rows in (1000, 1 << 20):
            stream = ExportStream(wh, fmt, scope, {}, json_metadata={"x": 1}, query_rows=query_rows)
            body = b""
            while chunk := stream.next_chunk():
                body += chunk
            assert stream.rows == n_rows
            bodies.append(body)
        assert bodies[0] == bodies[1], fmt
    rows = json.loads(bodies[1])["data"]
    assert len(rows) == n_rows
    keys = [(r["date"], r["project_name"], r["provider"], r["model"]) for r in rows]
    assert keys == sorted(keys)
    # parquet: small row groups → several, same rows
    stream = ExportStream(wh, "parquet", scope, {}, row_group_rows=5000, query_rows=3000)
    body = b""
    while chunk := stream.next_chunk():
        body += chunk
    f = pq.ParquetFile(io.BytesIO(body))
    assert f.metadata.num_rows == n_rows == stream.rows and f.num_row_groups >= n_rows // 5000
    assert f.read().to_pylist()[:50] == [{**r, "date": date.fromisoformat(r["date"])} for r in rows[:50]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tapp):
    """The app on uvicorn, loopback, in a thread of this process (which holds the test warehouse)."""
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(tapp, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", tapp.state.ctx.telemetry
    server.should_exit = True
    thread.join(20)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the control-plane DB plays no part here
def test_other_requests_are_served_while_an_export_streams(served, bigger):
    base, provider = served
    a, n_rows = bigger
    h = a.h
    with httpx.Client(base_url=base, headers=h, timeout=30) as http:
        with http.stream("GET", E, params={"format": "json"}) as r:
            assert r.status_code == 200
            chunks = r.iter_bytes()
            first = next(chunks)
            assert provider.active_exports == 1
            # the export is open (its query holds a stream); the warehouse still answers other requests
            for url in ("/api/v1/telemetry/summary", "/api/v1/telemetry/events", "/api/v1/telemetry/models"):
                t = time.monotonic()
                other = httpx.get(base + url, headers=h, timeout=30)
                assert other.status_code == 200, other.text
                assert time.monotonic() - t < 10
            assert provider.active_exports == 1
            body = [first, *chunks]
        assert len(json.loads(b"".join(body))["data"]) == n_rows
        _wait(lambda: provider.active_exports == 0)

        # a client that goes away mid-export: the query is closed, the next export works
        with http.stream("GET", E, params={"format": "json"}) as r:
            next(r.iter_bytes())
        _wait(lambda: provider.active_exports == 0)
        again = http.get(E, params={"format": "json"})
        assert again.status_code == 200 and again.json()["export_metadata"]["total_records"] == n_rows
        assert json.loads(again.content)["data"][0]["project_name"].startswith("bench-org-0-p")


def _wait(predicate, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)
