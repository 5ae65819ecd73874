"""/api/v1/telemetry/summary, /events, /models over warehouse data written by the pipeline's own code path
(tests/api/telemetry_data.py: Enricher → parse_enriched → write_enriched), on SQLite and PostgreSQL.

Plus one end-to-end test (slow): the real worker subprocess fed through Kafka; its runtime HTTP serves the
API over the warehouse it holds, whose figures must equal the runtime's own totals.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest

from tests.api.telemetry_data import FACTORS
from tests.e2e.expectations import FLOAT_FIELDS, TOKEN_FIELDS
from tests.fixtures_api import bearer, client_for
from tests.stack import publish

pytestmark = pytest.mark.anyio

T = "/api/v1/telemetry"


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def tokens(e) -> int:
    return sum(getattr(e, f) for f in TOKEN_FIELDS)


# --------------------------------------------------------------------------------------------- summary


async def test_summary_default_period_matches_the_events(c, ds):
    r = await c.get(f"{T}/summary", headers=ds.a.h)
    assert r.status_code == 200, r.text
    s = r.json()
    start, end = ds.today - timedelta(days=30), ds.today
    assert s["period"] == {"start": start.isoformat(), "end": end.isoformat()}
    events = ds.events(ds.a.org.id, start=start, end=end)
    assert events and len(events) < len(ds.events(ds.a.org.id))  # the window excludes older events
    want = ds.expected(events)[""]
    assert close(s["total_co2_kg"], want["co2_kg"])
    assert close(s["total_co2_lower_bound_kg"], want["co2_kg_low"])
    assert close(s["total_co2_upper_bound_kg"], want["co2_kg_high"])
    assert s["total_co2_lower_bound_kg"] < s["total_co2_kg"] < s["total_co2_upper_bound_kg"]
    assert s["total_tokens"] == sum(int(want[f]) for f in TOKEN_FIELDS)
    assert s["output_tokens"] == want["output_tokens"]
    assert s["event_count"] == len(events)
    assert close(s["total_energy_kwh"], want["energy_j"] / 3.6e6)
    cache = s["cached_vs_uncached"]
    assert cache["uncached_tokens"] == want["input_tokens_uncached"]
    assert cache["cached_tokens"] == want["input_tokens_cached"] > 0
    assert cache["cache_creation_tokens"] == want["input_tokens_cache_creation"] > 0
    assert close(cache["cached_co2_savings_kg"], ds.savings(events)) and cache["cached_co2_savings_kg"] > 0
    assert s["factors_version"] == FACTORS.version and s["factors_versions"] == [FACTORS.version]

    # per model: every model, CO2 shares summing to 100 %, largest first
    by_model = ds.expected(events, "model")
    got = {m["model"]: m for m in s["per_model"]}
    assert set(got) == set(by_model)
    for name, w in by_model.items():
        assert close(got[name]["co2_kg"], w["co2_kg"])
        assert got[name]["total_tokens"] == sum(int(w[f]) for f in TOKEN_FIELDS)
        assert got[name]["event_count"] == w["events"]
        assert abs(got[name]["percentage"] - 100 * w["co2_kg"] / want["co2_kg"]) < 0.01
    assert abs(sum(m["percentage"] for m in s["per_model"]) - 100) < 0.1
    co2s = [m["co2_kg"] for m in s["per_model"]]
    assert co2s == sorted(co2s, reverse=True)

    # daily chart: every day of the period, zeros included
    chart = s["daily_chart"]
    assert [p["date"] for p in chart] == [(start + timedelta(days=i)).isoformat() for i in range(31)]
    by_day = ds.expected(events, "day")
    for p in chart:
        w = by_day.get(p["date"])
        assert close(p["co2_kg"], w["co2_kg"] if w else 0.0)
        assert p["tokens"] == (sum(int(w[f]) for f in TOKEN_FIELDS) if w else 0)


async def test_summary_filters_and_the_projects_router_share_the_figures(c, ds):
    alpha = ds.projects["Alpha"].id
    start, end = ds.today - timedelta(days=44), ds.today
    q = {"start_date": start.isoformat(), "end_date": end.isoformat()}
    s = (await c.get(f"{T}/summary", params={**q, "project_id": alpha}, headers=ds.a.h)).json()
    events = ds.events(ds.a.org.id, start=start, end=end, project_id=alpha)
    assert close(s["total_co2_kg"], ds.expected(events)[""]["co2_kg"])
    assert len(s["daily_chart"]) == 45

    # GET /projects/{id} and GET /projects use this provider
    detail = (await c.get(f"/api/v1/projects/{alpha}", params=q, headers=ds.a.h)).json()
    assert close(detail["summary"]["total_co2_kg"], s["total_co2_kg"])
    assert detail["summary"]["per_model"] == s["per_model"]
    listed = (await c.get("/api/v1/projects", params=q, headers=ds.a.h)).json()["projects"]
    for p in listed:
        want = ds.expected(ds.events(ds.a.org.id, start=start, end=end, project_id=p["id"]))
        assert close(p["total_co2_kg"], want[""]["co2_kg"] if want else 0.0), p["name"]

    # a deleted project of the caller's org keeps its history
    gamma = ds.projects["Gamma"].id
    r = await c.get(f"{T}/summary", params={**q, "project_id": gamma}, headers=ds.a.h)
    assert r.status_code == 200
    assert close(
        r.json()["total_co2_kg"],
        ds.expected(ds.events(ds.a.org.id, start=start, end=end, project_id=gamma))[""]["co2_kg"],
    )


async def test_summary_of_an_empty_period_is_zeros_with_the_current_version(c, ds):
    r = await c.get(
        f"{T}/summary", params={"start_date": "2001-01-01", "end_date": "2001-01-03"}, headers=ds.a.h
    )
    assert r.status_code == 200
    s = r.json()
    assert s["total_co2_kg"] == 0 and s["total_tokens"] == 0 and s["per_model"] == []
    assert [p["co2_kg"] for p in s["daily_chart"]] == [0, 0, 0]
    assert s["factors_version"] == FACTORS.version and s["factors_versions"] == []


async def test_summary_of_a_very_long_period_lists_active_days_only(c, ds):
    r = await c.get(
        f"{T}/summary", params={"start_date": "0001-01-01", "end_date": "9999-12-31"}, headers=ds.a.h
    )
    assert r.status_code == 200
    s = r.json()
    events = ds.events(ds.a.org.id)
    assert close(s["total_co2_kg"], ds.expected(events)[""]["co2_kg"])
    assert {p["date"] for p in s["daily_chart"]} == {e.bucket_start.date().isoformat() for e in events}


async def test_summary_validation_and_tenancy(c, ds):
    h = ds.a.h
    for params in (
        {"start_date": "2026-02-30"},
        {"end_date": "yesterday"},
        {"start_date": "2026-03-02", "end_date": "2026-03-01"},
        {"project_id": ""},
        {"project_id": "x" * 65},
    ):
        r = await c.get(f"{T}/summary", params=params, headers=h)
        assert r.status_code == 422, params
        assert isinstance(r.json()["detail"], list)
    for pid in (ds.projects["Bravo"].id, "no-such-project"):
        r = await c.get(f"{T}/summary", params={"project_id": pid}, headers=h)
        assert r.status_code == 404 and r.json() == {"detail": "project not found"}
    # org B sees only its own figures
    s = (await c.get(f"{T}/summary", headers=ds.b.h)).json()
    b_events = ds.events(ds.b.org.id, start=ds.today - timedelta(days=30))
    assert close(s["total_co2_kg"], ds.expected(b_events)[""]["co2_kg"])
    assert s["event_count"] == len(b_events)


# --------------------------------------------------------------------------------------------- events


async def _all_events(c, headers, **params) -> tuple[list[dict], int]:
    out, page, total = [], 1, None
    while True:
        r = await c.get(f"{T}/events", params={**params, "page": page, "page_size": 37}, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        total = body["pagination"]["total_items"]
        assert body["pagination"]["page"] == page and body["pagination"]["page_size"] == 37
        assert body["pagination"]["total_pages"] == (total + 36) // 37
        if not body["events"]:
            return out, total
        out += body["events"]
        page += 1


async def test_events_are_the_live_revisions_newest_first(c, ds):
    events, total = await _all_events(c, ds.a.h)
    final = {e.event_id: e for e in ds.events(ds.a.org.id)}
    assert total == len(final) == len(events)
    assert [e["id"] for e in events if e["id"] in final] == [e["id"] for e in events]
    assert len({e["id"] for e in events}) == len(events)  # each event once: no cancelled revision listed
    keys = [(e["bucket_start"], e["id"], e["revision"]) for e in events]
    assert keys == sorted(keys, reverse=True)
    names = {p.id: n for n, p in ds.projects.items()}
    revised = 0
    for e in events:
        want = final[e["id"]]
        assert (e["id"], e["revision"]) not in ds.superseded
        assert e["revision"] == want.revision
        revised += want.revision > 0
        for f in (*TOKEN_FIELDS, "request_count", "model", "provider", "project_id", "source"):
            assert e[f] == getattr(want, f), f
        x = ds.enriched[(want.event_id, want.revision)]
        for f in FLOAT_FIELDS[:1] + ("co2_kg", "co2_kg_low", "co2_kg_high"):
            assert close(e[f], getattr(x, f))
        assert e["project_name"] == names[want.project_id]
        assert datetime.fromisoformat(e["bucket_start"]) == want.bucket_start
        assert datetime.fromisoformat(e["bucket_end"]) == want.bucket_end
        assert datetime.fromisoformat(e["event_timestamp"]) == want.event_timestamp
        assert e["factors_version"] == FACTORS.version and e["model_tier"] == x.model_tier
    assert revised == 20


async def test_event_filters(c, ds):
    start, end = ds.today - timedelta(days=10), ds.today - timedelta(days=2)
    beta = ds.projects["Beta"].id
    cases = [
        ({"start_date": start.isoformat()}, {"start": start}),
        ({"end_date": end.isoformat()}, {"end": end}),
        ({"start_date": start.isoformat(), "end_date": end.isoformat()}, {"start": start, "end": end}),
        ({"model": "gpt-4o"}, {"model": "gpt-4o"}),
        ({"project_id": beta, "model": "gpt-4o-mini"}, {"project_id": beta, "model": "gpt-4o-mini"}),
        ({"model": "no-such-model"}, {"model": "no-such-model"}),
    ]
    for params, filters in cases:
        got, total = await _all_events(c, ds.a.h, **params)
        want = {e.event_id for e in ds.events(ds.a.org.id, **filters)}
        assert total == len(want) and {e["id"] for e in got} == want, params


async def test_events_pagination_rules(c, ds):
    h = ds.a.h
    total = len(ds.events(ds.a.org.id))
    r = await c.get(f"{T}/events", headers=h)
    body = r.json()
    assert len(body["events"]) == 50
    assert body["pagination"] == {"page": 1, "page_size": 50, "total_items": total, "total_pages": 5}
    r = await c.get(f"{T}/events", params={"page_size": 200}, headers=h)
    assert r.status_code == 200 and len(r.json()["events"]) == 200
    last = await c.get(f"{T}/events", params={"page": 5}, headers=h)
    assert len(last.json()["events"]) == total - 200
    past = await c.get(f"{T}/events", params={"page": 99}, headers=h)
    assert past.status_code == 200 and past.json()["events"] == []
    assert past.json()["pagination"]["total_items"] == total
    for params in (
        {"page_size": 201},
        {"page_size": 0},
        {"page": 0},
        {"page": "x"},
        {"start_date": "2026-13-01"},
    ):
        r = await c.get(f"{T}/events", params=params, headers=h)
        assert r.status_code == 422, params
        assert isinstance(r.json()["detail"], list)
    r = await c.get(f"{T}/events", params={"start_date": "2026-03-02", "end_date": "2026-03-01"}, headers=h)
    assert r.status_code == 422


async def test_events_tenancy(c, ds):
    got, total = await _all_events(c, ds.b.h)
    assert total == len(ds.events(ds.b.org.id)) == len(got)
    a_ids = {e.event_id for e in ds.events(ds.a.org.id)}
    assert not a_ids & {e["id"] for e in got}
    for pid in (ds.projects["Alpha"].id, "unknown"):
        r = await c.get(f"{T}/events", params={"project_id": pid}, headers=ds.b.h)
        assert r.status_code == 404 and r.json() == {"detail": "project not found"}


# --------------------------------------------------------------------------------------------- models


async def test_models(c, ds):
    r = await c.get(f"{T}/models", headers=ds.a.h)
    assert r.status_code == 200
    models = r.json()["models"]
    events = ds.events(ds.a.org.id)
    want = ds.expected(events, "model")
    assert {m["model"] for m in models} == set(want)
    hours: dict[str, list[datetime]] = defaultdict(list)
    for e in events:
        hours[e.model].append(e.bucket_start.replace(minute=0, second=0, microsecond=0))
    for m in models:
        w = want[m["model"]]
        assert m["event_count"] == w["events"]
        assert m["total_tokens"] == sum(int(w[f]) for f in TOKEN_FIELDS)
        for f in TOKEN_FIELDS:
            assert m[f] == w[f]
        assert close(m["total_co2_kg"], w["co2_kg"]) and close(m["energy_j"], w["energy_j"])
        assert close(m["total_co2_lower_bound_kg"], w["co2_kg_low"])
        assert close(m["total_co2_upper_bound_kg"], w["co2_kg_high"])
        assert datetime.fromisoformat(m["first_seen"]) == min(hours[m["model"]])
        assert datetime.fromisoformat(m["last_seen"]) == max(hours[m["model"]])
        assert m["provider"] == next(e.provider for e in events if e.model == m["model"])
    co2s = [m["total_co2_kg"] for m in models]
    assert co2s == sorted(co2s, reverse=True)

    # filters: dates and project; tenancy
    alpha = ds.projects["Alpha"].id
    start = ds.today - timedelta(days=7)
    r = await c.get(
        f"{T}/models", params={"project_id": alpha, "start_date": start.isoformat()}, headers=ds.a.h
    )
    want = ds.expected(ds.events(ds.a.org.id, project_id=alpha, start=start), "model")
    assert {m["model"]: m["event_count"] for m in r.json()["models"]} == {
        k: v["events"] for k, v in want.items()
    }
    b_models = (await c.get(f"{T}/models", headers=ds.b.h)).json()["models"]
    assert sum(m["event_count"] for m in b_models) == len(ds.events(ds.b.org.id))
    r = await c.get(f"{T}/models", params={"project_id": alpha}, headers=ds.b.h)
    assert r.status_code == 404
    r = await c.get(
        f"{T}/models", params={"start_date": "2026-03-02", "end_date": "2026-03-01"}, headers=ds.a.h
    )
    assert r.status_code == 422


# --------------------------------------------------------------------------------------------- auth, failures


ENDPOINTS = [f"{T}/summary", f"{T}/events", f"{T}/models", "/api/v1/export/telemetry?format=csv"]


async def test_auth_errors(c, ds):
    for url in ENDPOINTS:
        r = await c.get(url)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", url
        r = await c.get(url, headers=bearer("js_live_notakey"))
        assert r.status_code == 401 and "detail" in r.json(), url
        r = await c.get(url, headers=bearer(ds.a.ingest))
        assert r.status_code == 403 and r.json() == {"detail": "missing scope: read"}, url
        r = await c.get(url, headers=bearer(ds.a.admin))
        assert r.status_code == 403, url
        r = await c.get(url, headers=bearer(ds.a.read))
        assert r.status_code == 200, url


class _Boom:
    def query(self, *a, **k):
        raise ConnectionError("clickhouse at 10.0.0.7:8123 refused")

    raw_stream = query_column_block_stream = command = query
    database = "x"


async def test_warehouse_failure_is_503_without_details(make_app, tenants):
    app = make_app(warehouse_client_factory=lambda: _Boom())
    a = tenants[0]
    try:
        async with client_for(app) as c:
            for url in ENDPOINTS:
                r = await c.get(url, headers=a.h)
                assert r.status_code == 503, url
                assert r.json() == {"detail": "telemetry store unavailable, retry later"}
            p = (await c.get("/api/v1/projects", headers=a.h)).json()
            assert "10.0.0.7" not in str(p)
    finally:
        app.state.ctx.telemetry.close()


async def test_provider_over_a_shared_warehouse_thread(make_app, wh, ds):
    """The embedded runtime hands the provider its own AsyncWarehouse (possibly opened later)."""
    from api.telemetry_provider import WarehouseTelemetry
    from warehouse.aio import AsyncWarehouse

    shared: list[AsyncWarehouse] = []
    app = make_app(telemetry=WarehouseTelemetry(lambda: shared[0] if shared else None))
    async with client_for(app) as c:
        r = await c.get(f"{T}/events", headers=ds.a.h)
        assert r.status_code == 503  # not open yet
        shared.append(AsyncWarehouse(wh))
        r = await c.get(f"{T}/events", headers=ds.a.h)
        assert r.status_code == 200 and r.json()["pagination"]["total_items"] == len(ds.events(ds.a.org.id))
        r = await c.get("/api/v1/export/telemetry", params={"format": "json"}, headers=ds.a.h)
        assert r.status_code == 200 and r.json()["export_metadata"]["total_records"] > 0
    app.state.ctx.telemetry.close()  # does not close a warehouse it does not own
    assert (await shared[0].run(lambda client: client.command("SELECT 1"))) == 1
    shared[0].close()


async def test_without_a_warehouse_everything_is_empty(api, tenants):
    a = tenants[0]
    s = (await api.get(f"{T}/summary", headers=a.h)).json()
    assert s["total_co2_kg"] == 0 and s["per_model"] == [] and s["factors_version"] == FACTORS.version
    assert s["cached_vs_uncached"]["cached_co2_savings_kg"] == 0 and len(s["daily_chart"]) == 31
    e = (await api.get(f"{T}/events", headers=a.h)).json()
    assert e == {"events": [], "pagination": {"page": 1, "page_size": 50, "total_items": 0, "total_pages": 0}}
    assert (await api.get(f"{T}/models", headers=a.h)).json() == {"models": []}


# --------------------------------------------------------------------------------------------- tenancy


def _telemetry_routes(app) -> list[str]:
    """Every route of the telemetry and export routers, from the app's route list (a new one cannot skip this).

    Routes of other routers that share the /export prefix (the audit pack, api.routers.audit) are not
    telemetry queries: their tenancy is covered, like every route's, by test_api_tenancy.py."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: app.routes is already flat

        def iter_route_contexts(routes):
            return routes

    out = []
    for route in iter_route_contexts(app.routes):
        path = getattr(route, "path", "")
        module = getattr(getattr(route, "endpoint", None), "__module__", "")
        if module in ("api.routers.telemetry", "api.routers.export"):
            assert path.startswith(("/api/v1/telemetry", "/api/v1/export")), path
            assert "{" not in path, f"{path}: a route with a path parameter needs its own tenancy case"
            assert getattr(route, "methods", None) == {"GET"}, path
            out.append(path)
    return sorted(out)


async def test_tenancy_every_telemetry_route(tapp, c, ds):
    """With org B's key, no telemetry or export route shows anything of org A: A's project id is 404, and
    the unfiltered answers carry none of A's event ids, project ids or names — over real data of both."""
    routes = _telemetry_routes(tapp)
    assert len(routes) == 4, routes
    a_events = {e.event_id for e in ds.events(ds.a.org.id)}
    a_markers = [ds.a.org.id, *(p.id for n, p in ds.projects.items() if n != "Bravo")]
    a_markers += ["Alpha", "Beta", "Gamma"]
    wide = {"start_date": (ds.today - timedelta(days=60)).isoformat(), "end_date": ds.today.isoformat()}
    for path in routes:
        for pid in (ds.projects["Alpha"].id, ds.projects["Gamma"].id):
            r = await c.get(path, params={"project_id": pid}, headers=ds.b.h)
            assert r.status_code == 404 and r.json() == {"detail": "project not found"}, path
        for params in ({}, wide if "export" not in path else {"start_date": wide["start_date"]}):
            r = await c.get(path, params=params, headers=ds.b.h)
            assert r.status_code == 200, (path, r.text)
            assert ds.b.org.id not in r.text  # org ids are never echoed
            for marker in a_markers:
                assert marker not in r.text, (path, marker)
            assert not any(eid in r.text for eid in a_events), path
        # and A does see its own data through the same route
        r = await c.get(path, params={"project_id": ds.projects["Alpha"].id}, headers=ds.a.h)
        assert r.status_code == 200, path


async def test_summary_with_an_end_date_at_the_start_of_time_is_not_a_500(c, ds):
    r = await c.get(f"{T}/summary", params={"end_date": "0001-01-01"}, headers=ds.a.h)
    assert r.status_code in (200, 422)


# --------------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_e2e_worker_api_summary_equals_runtime_totals(stack, worker):
    """simulated traffic → Kafka → the real worker (enrich + sink, its own chdb). The worker's runtime HTTP
    serves the public API over the warehouse it holds: per org, /telemetry/summary, /events and /models must
    report exactly the runtime's own totals (/internal/v1/totals)."""
    from sqlalchemy import insert

    from controlplane import ApiKeys, dispose_engine, get_engine, upgrade
    from controlplane.schema import organizations
    from pipelines.simulate import generate

    traffic = generate(
        3000, orgs=2, days=5, duplicate_rate=0.05, revision_rate=0.03, invalid_rate=0.01, seed=3
    )
    n_events = len(traffic.final)
    org_ids = sorted({e.org_id for e in traffic.final.values()})

    # the worker's control plane (its data dir's SQLite) with the simulator's org ids and a read key each
    db_url = stack.settings.database
    stack.settings.home.mkdir(parents=True, exist_ok=True)
    engine = get_engine(db_url)
    upgrade(engine)
    with engine.begin() as conn:
        for org_id in org_ids:
            conn.execute(
                insert(organizations).values(
                    id=org_id,
                    slug=org_id,
                    name=org_id,
                    plan_tier="free",
                    stripe_customer_id=None,
                    created_at=datetime.now(UTC),
                )
            )
    keys = {org_id: ApiKeys(engine).create(org_id, ["read"])[1] for org_id in org_ids}
    dispose_engine(db_url)

    worker.start()
    publish(stack, traffic.messages)
    worker.wait_for(
        lambda s: (
            s["totals"]["totals"]["events"] == n_events
            and s["stats"].get("enrich", {}).get("consumed", 0) >= len(traffic.messages)
        ),
        what=f"{n_events} live events",
    )
    runtime_orgs = {r["org_id"]: r for r in worker.totals("org")["rows"]}
    runtime_models = {r["model"]: r for r in worker.totals("model")["rows"]}
    assert set(runtime_orgs) == set(org_ids)

    base = worker.runtime.url
    window = {"start_date": (date.today() - timedelta(days=10)).isoformat(), "end_date": "2100-01-01"}
    api_models: dict[str, dict] = defaultdict(lambda: defaultdict(float))
    for org_id, want in runtime_orgs.items():
        h = bearer(keys[org_id])
        s = httpx.get(f"{base}{T}/summary", params=window, headers=h, timeout=30).json()
        assert s["event_count"] == want["events"]
        assert s["total_tokens"] == want["total_tokens"]
        assert s["output_tokens"] == want["output_tokens"]
        c = s["cached_vs_uncached"]
        assert c["uncached_tokens"] == want["input_tokens_uncached"]
        assert c["cached_tokens"] == want["input_tokens_cached"]
        assert c["cache_creation_tokens"] == want["input_tokens_cache_creation"]
        assert close(s["total_co2_kg"], want["co2_kg"])
        assert close(s["total_co2_lower_bound_kg"], want["co2_kg_low"])
        assert close(s["total_co2_upper_bound_kg"], want["co2_kg_high"])
        assert close(s["total_energy_kwh"] * 3.6e6, want["energy_j"])
        ev = httpx.get(f"{base}{T}/events", params={"page_size": 1}, headers=h, timeout=30).json()
        assert ev["pagination"]["total_items"] == want["events"]
        for m in httpx.get(f"{base}{T}/models", headers=h, timeout=30).json()["models"]:
            api_models[m["model"]]["events"] += m["event_count"]
            api_models[m["model"]]["co2_kg"] += m["total_co2_kg"]
        export = httpx.get(
            f"{base}/api/v1/export/telemetry",
            params={"format": "json", **window, "end_date": date.today().isoformat()},
            headers=h,
            timeout=60,
        ).json()
        assert math.isclose(sum(r["co2_kg"] for r in export["data"]), want["co2_kg"], rel_tol=1e-9)
    assert set(api_models) == set(runtime_models)
    for name, want in runtime_models.items():
        assert api_models[name]["events"] == want["events"]
        assert math.isclose(api_models[name]["co2_kg"], want["co2_kg"], rel_tol=1e-9)
    assert worker.stop() == 0


# --------------------------------------------------------------------------------------------- methodology v2


def _live_enriched(ds, org_id: str, **filters):
    return [ds.enriched[(e.event_id, e.revision)] for e in ds.events(org_id, **filters)]


def _fsum_or_none(values) -> float | None:
    values = [v for v in values if v is not None]
    return math.fsum(values) if values else None


async def test_v2_figures_and_estimation_over_pipeline_data(c, ds):
    """Summary, models and events carry the v2 figures the enricher computed, is_estimated with the share
    estimated and the distinct reasons; org B never sees org A's."""
    start, end = ds.today - timedelta(days=30), ds.today
    xs = _live_enriched(ds, ds.a.org.id, start=start, end=end)
    s = (await c.get(f"{T}/summary", headers=ds.a.h)).json()
    for key, field in (
        ("total_co2_market_kg", "co2_kg_market"),
        ("total_co2_market_upper_bound_kg", "co2_kg_market_high"),
        ("total_co2_embodied_kg", "co2_kg_embodied"),
        ("total_co2_embodied_lower_bound_kg", "co2_kg_embodied_low"),
        ("total_water_l", "water_l"),
        ("total_cost_usd", "cost_usd"),
    ):
        want = _fsum_or_none(getattr(x, field) for x in xs)
        assert (s[key] is None) if want is None else close(s[key], want), key
    assert s["coverage"]["co2_market"] == sum(x.co2_kg_market is not None for x in xs)
    assert s["coverage"]["cost"] == sum(x.cost_usd is not None for x in xs)
    assert s["measured"]["event_count"] == 0 and s["estimated"]["event_count"] == len(xs)
    assert close(s["estimated"]["co2_kg"], s["total_co2_kg"])
    estimated = [x for x in xs if x.is_estimated]
    assert s["estimated_event_count"] == len(estimated) > 0 and s["is_estimated"] is True
    assert close(s["estimated_share"], round(len(estimated) / len(xs), 6))
    reasons = defaultdict(int)
    for x in xs:
        for r in x.estimation_reasons:
            reasons[r] += 1
    assert {r["reason"]: r["event_count"] for r in s["estimation_reasons"]} == reasons
    per_model = {m["model"]: m for m in s["per_model"]}
    assert per_model["acme-experimental-1"]["is_estimated"] is True
    assert per_model["gpt-4o"]["estimated_event_count"] == sum(
        x.is_estimated for x in xs if x.model == "gpt-4o"
    )

    models = {m["model"]: m for m in (await c.get(f"{T}/models", headers=ds.a.h)).json()["models"]}
    all_xs = _live_enriched(ds, ds.a.org.id)
    for name, m in models.items():
        mine = [x for x in all_xs if x.model == name]
        want = _fsum_or_none(x.co2_kg_embodied for x in mine)
        assert (
            (m["total_co2_embodied_kg"] is None) if want is None else close(m["total_co2_embodied_kg"], want)
        )
        assert m["estimated_event_count"] == sum(x.is_estimated for x in mine)
        assert {r["reason"] for r in m["estimation_reasons"]} == {
            r for x in mine for r in x.estimation_reasons
        }

    events, _ = await _all_events(c, ds.a.h)
    by_id = {e["id"]: e for e in events}
    for x in all_xs:
        got = by_id[x.event_id]
        assert got["estimation_reasons"] == x.estimation_reasons and got["is_estimated"] == x.is_estimated
        assert got["energy_source"] == "estimated" and got["measured_by"] is None
        for f in ("co2_kg_market", "co2_kg_embodied_high", "water_l", "cost_usd"):
            assert got[f] == getattr(x, f), f  # the stored double, to the bit

    b = (await c.get(f"{T}/summary", headers=ds.b.h)).json()
    b_xs = _live_enriched(ds, ds.b.org.id, start=start, end=end)
    assert b["estimated_event_count"] == sum(x.is_estimated for x in b_xs)
    want_b = _fsum_or_none(x.water_l for x in b_xs)
    assert (b["total_water_l"] is None) if want_b is None else close(b["total_water_l"], want_b)


async def test_old_and_measured_events_are_told_apart(c, ds, wh, make_enriched):
    """Events enriched before v2 give null v2 figures (not 0) with coverage counts; measured energy is shown as
    the measured part; both in a window of their own."""
    from warehouse.ledger import write_enriched

    day = datetime(2024, 1, 10, 12, tzinfo=UTC)
    alpha = ds.projects["Alpha"].id
    kw = {"org_id": ds.a.org.id, "project_id": alpha, "bucket_start": day}
    old = [make_enriched("old-1", **kw), make_enriched("old-2", **kw, output_tokens=500)]
    write_enriched(wh, old)
    q = {"start_date": "2024-01-01", "end_date": "2024-01-31"}
    s = (await c.get(f"{T}/summary", params=q, headers=ds.a.h)).json()
    assert s["event_count"] == 2 and s["total_co2_kg"] > 0
    assert s["total_co2_market_kg"] is None and s["total_water_l"] is None and s["total_cost_usd"] is None
    assert s["coverage"] == {"co2_market": 0, "co2_embodied": 0, "water": 0, "cost": 0}
    assert s["per_model"][0]["co2_market_kg"] is None

    metered = make_enriched("metered", **kw, v2=True, measured=True, output_tokens=800)
    write_enriched(wh, [metered])
    s = (await c.get(f"{T}/summary", params=q, headers=ds.a.h)).json()
    assert s["coverage"]["co2_market"] == 1 and close(s["total_co2_market_kg"], metered.co2_kg_market)
    assert s["measured"]["event_count"] == 1 and close(s["measured"]["co2_kg"], metered.co2_kg)
    assert close(s["measured"]["energy_kwh"], metered.energy_j / 3.6e6)
    assert s["estimated"]["event_count"] == 2
    assert close(s["estimated"]["co2_kg"], math.fsum(e.co2_kg for e in old))
    events = (await c.get(f"{T}/events", params=q, headers=ds.a.h)).json()["events"]
    got = {e["id"]: e for e in events}
    assert got["metered"]["energy_source"] == "measured" and got["metered"]["measured_by"] == "dcgm"
    assert got["metered"]["measured_boundary"] == "facility"
    assert got["old-1"]["co2_kg_market"] is None and got["old-1"]["energy_source"] == "estimated"
    # org B sees none of it
    b = (await c.get(f"{T}/summary", params=q, headers=ds.b.h)).json()
    assert b["event_count"] == 0 and b["measured"]["event_count"] == 0
