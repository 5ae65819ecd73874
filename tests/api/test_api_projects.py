"""/api/v1/projects: every rule and error path."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from controlplane import Workloads
from tests.fixtures_api import client_for

pytestmark = pytest.mark.anyio

P = "/api/v1/projects"


class RecordingTelemetry:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def project_totals(self, org_id, project_ids, start, end):
        self.calls.append(("totals", org_id, tuple(project_ids), start, end))
        return {pid: 1.5 for pid in project_ids[:1]}

    async def summary(self, org_id, project_id, start, end):
        self.calls.append(("summary", org_id, project_id, start, end))
        return {
            "total_co2_kg": 3.2,
            "total_tokens": 1200,
            "per_model": [{"model": "gpt-4o"}],
            "daily_chart": [],
        }


class BrokenTelemetry:
    def project_totals(self, *args):
        raise ConnectionError("clickhouse at 10.0.0.7:8123 refused")

    def summary(self, *args):
        raise ConnectionError("clickhouse at 10.0.0.7:8123 refused")


async def test_default_project_and_list_shape(api, tenants):
    a = tenants[0]
    r = await api.get(P, headers=a.h)
    assert r.status_code == 200
    body = r.json()
    assert [p["name"] for p in body["projects"]] == ["Default"]
    d = body["projects"][0]
    assert set(d) == {"id", "name", "is_default", "workload_count", "total_co2_kg", "created_at"}
    assert d["is_default"] is True and d["workload_count"] == 0 and d["total_co2_kg"] == 0
    assert body["pagination"] == {"page": 1, "page_size": 50, "total_items": 1, "total_pages": 1}
    today = datetime.now(UTC).date()
    assert body["period"] == {"start": (today - timedelta(days=30)).isoformat(), "end": today.isoformat()}


async def test_create_get_rename_delete(api, tenants):
    a = tenants[0]
    r = await api.post(P, json={"name": "  Production   App "}, headers=a.h)
    assert r.status_code == 201
    created = r.json()
    assert created["name"] == "Production App" and created["is_default"] is False
    assert created["workload_count"] == 0 and created["total_co2_kg"] == 0
    pid = created["id"]

    r = await api.get(f"{P}/{pid}", headers=a.h)
    assert r.status_code == 200
    detail = r.json()
    assert detail["id"] == pid and detail["name"] == "Production App" and detail["connections"] == []
    assert detail["summary"]["total_co2_kg"] == 0 and "period" in detail

    r = await api.patch(f"{P}/{pid}", json={"name": "Prod"}, headers=a.h)
    assert r.status_code == 200 and r.json()["name"] == "Prod"

    r = await api.delete(f"{P}/{pid}", headers=a.h)
    assert r.status_code == 204 and r.content == b""
    assert (await api.get(f"{P}/{pid}", headers=a.h)).status_code == 404
    assert [p["name"] for p in (await api.get(P, headers=a.h)).json()["projects"]] == ["Default"]


async def test_duplicate_name_409(api, tenants):
    a = tenants[0]
    assert (await api.post(P, json={"name": "Dup"}, headers=a.h)).status_code == 201
    r = await api.post(P, json={"name": "Dup"}, headers=a.h)
    assert r.status_code == 409 and "already exists" in r.json()["detail"]
    r = await api.post(P, json={"name": "Default"}, headers=a.h)
    assert r.status_code == 409
    other = (await api.post(P, json={"name": "Other"}, headers=a.h)).json()
    r = await api.patch(f"{P}/{other['id']}", json={"name": "Dup"}, headers=a.h)
    assert r.status_code == 409
    # the same name in another org is fine
    assert (await api.post(P, json={"name": "Dup"}, headers=tenants[1].h)).status_code == 201


async def test_default_cannot_be_renamed_or_deleted(api, tenants):
    a = tenants[0]
    default = (await api.get(P, headers=a.h)).json()["projects"][0]
    r = await api.patch(f"{P}/{default['id']}", json={"name": "Main"}, headers=a.h)
    assert r.status_code == 400 and r.json() == {"detail": "the Default project cannot be renamed"}
    r = await api.delete(f"{P}/{default['id']}", headers=a.h)
    assert r.status_code == 400 and r.json() == {"detail": "the Default project cannot be deleted"}
    r = await api.patch(f"{P}/{default['id']}", json={"name": "Default"}, headers=a.h)
    assert r.status_code == 200  # renaming to its own name is a no-op


async def test_delete_with_active_workloads_409(api, engine, tenants):
    a = tenants[0]
    pid = (await api.post(P, json={"name": "Busy"}, headers=a.h)).json()["id"]
    workloads = Workloads(engine)
    workloads.create(a.org.id, pid, "connection", "conn-1")
    workloads.create(a.org.id, pid, "gateway_key", "key-1")
    listed = {p["name"]: p for p in (await api.get(P, headers=a.h)).json()["projects"]}
    assert listed["Busy"]["workload_count"] == 2
    detail = (await api.get(f"{P}/{pid}", headers=a.h)).json()
    assert detail["workload_count"] == 2
    assert [c["id"] for c in detail["connections"]] == ["conn-1"]
    assert {w["ref_id"] for w in detail["workloads"]} == {"conn-1", "key-1"}
    r = await api.delete(f"{P}/{pid}", headers=a.h)
    assert r.status_code == 409 and "active workloads" in r.json()["detail"]
    default_id = listed["Default"]["id"]
    workloads.remap(a.org.id, "connection", "conn-1", default_id)
    assert (await api.delete(f"{P}/{pid}", headers=a.h)).status_code == 409
    workloads.remap(a.org.id, "gateway_key", "key-1", default_id)
    assert (await api.delete(f"{P}/{pid}", headers=a.h)).status_code == 204
    listed = {p["name"]: p for p in (await api.get(P, headers=a.h)).json()["projects"]}
    assert listed["Default"]["workload_count"] == 2 and "Busy" not in listed


async def test_other_orgs_project_404(api, tenants):
    a, b = tenants
    pid = (await api.post(P, json={"name": "Secret"}, headers=a.h)).json()["id"]
    for method, kwargs in (("GET", {}), ("PATCH", {"json": {"name": "Mine"}}), ("DELETE", {})):
        r = await api.request(method, f"{P}/{pid}", headers=b.h, **kwargs)
        assert r.status_code == 404 and r.json() == {"detail": "project not found"}
    assert (await api.get(f"{P}/{pid}", headers=a.h)).json()["name"] == "Secret"
    assert (await api.get(f"{P}/does-not-exist", headers=a.h)).status_code == 404


@pytest.mark.parametrize(
    "body",
    [{}, {"name": ""}, {"name": "   "}, {"name": "x" * 101}, {"name": 5}, {"name": "ok", "extra": 1}, None],
)
async def test_invalid_bodies_422(api, tenants, body):
    a = tenants[0]
    r = await (api.post(P, headers=a.h) if body is None else api.post(P, json=body, headers=a.h))
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert isinstance(detail, list) and detail and {"loc", "msg", "type"} <= set(detail[0])
    pid = (await api.get(P, headers=a.h)).json()["projects"][0]["id"]
    if body is not None:
        assert (await api.patch(f"{P}/{pid}", json=body, headers=a.h)).status_code == 422


async def test_pagination(api, tenants):
    a = tenants[0]
    for i in range(5):
        await api.post(P, json={"name": f"P{i}"}, headers=a.h)
    r = await api.get(P, params={"page": 2, "page_size": 2}, headers=a.h)
    body = r.json()
    assert [p["name"] for p in body["projects"]] == ["P1", "P2"]  # Default, P0 | P1, P2 | P3, P4
    assert body["pagination"] == {"page": 2, "page_size": 2, "total_items": 6, "total_pages": 3}
    assert (await api.get(P, params={"page": 9}, headers=a.h)).json()["projects"] == []
    assert (await api.get(P, params={"page_size": 200}, headers=a.h)).status_code == 200
    for params in ({"page": 0}, {"page": -1}, {"page_size": 0}, {"page_size": 201}, {"page": "x"}):
        r = await api.get(P, params=params, headers=a.h)
        assert r.status_code == 422, params
        assert r.json()["detail"][0]["loc"][0] == "query"


async def test_date_range(api, tenants):
    a = tenants[0]
    r = await api.get(P, params={"start_date": "2026-01-01", "end_date": "2026-01-31"}, headers=a.h)
    assert r.json()["period"] == {"start": "2026-01-01", "end": "2026-01-31"}
    r = await api.get(P, params={"end_date": "2026-03-10"}, headers=a.h)
    assert r.json()["period"] == {"start": "2026-02-08", "end": "2026-03-10"}
    r = await api.get(P, params={"start_date": "2026-02-01", "end_date": "2026-01-01"}, headers=a.h)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "start_date"]
    assert (await api.get(P, params={"start_date": "yesterday"}, headers=a.h)).status_code == 422
    pid = (await api.get(P, headers=a.h)).json()["projects"][0]["id"]
    r = await api.get(
        f"{P}/{pid}", params={"start_date": "2026-02-01", "end_date": "2026-01-01"}, headers=a.h
    )
    assert r.status_code == 422


async def test_telemetry_provider_is_used(make_app, tenants):
    a, b = tenants
    telemetry = RecordingTelemetry()
    async with client_for(make_app(telemetry=telemetry)) as c:
        await c.post(P, json={"name": "Two"}, headers=a.h)
        body = (
            await c.get(P, params={"start_date": "2026-01-01", "end_date": "2026-01-31"}, headers=a.h)
        ).json()
        ids = [p["id"] for p in body["projects"]]
        assert [p["total_co2_kg"] for p in body["projects"]] == [1.5, 0.0]
        assert telemetry.calls[-1] == ("totals", a.org.id, tuple(ids), date(2026, 1, 1), date(2026, 1, 31))
        detail = (await c.get(f"{P}/{ids[1]}", params={"start_date": "2026-01-05"}, headers=a.h)).json()
        assert detail["summary"] == {
            "total_co2_kg": 3.2,
            "total_tokens": 1200,
            "per_model": [{"model": "gpt-4o"}],
            "daily_chart": [],
        }
        assert telemetry.calls[-1][:3] == ("summary", a.org.id, ids[1])
        assert telemetry.calls[-1][3] == date(2026, 1, 5)
        await c.get(P, headers=b.h)
        assert telemetry.calls[-1][1] == b.org.id  # always the caller's org


async def test_telemetry_failure_is_503_without_internals(make_app, tenants):
    a = tenants[0]
    async with client_for(make_app(telemetry=BrokenTelemetry())) as c:
        r = await c.get(P, headers=a.h)
        assert r.status_code == 503 and r.json() == {"detail": "telemetry store unavailable, retry later"}
        assert "10.0.0.7" not in r.text
        pid = (await c.post(P, json={"name": "X"}, headers=a.h)).json()["id"]  # writes still work
        assert (await c.get(f"{P}/{pid}", headers=a.h)).status_code == 503


async def test_concurrent_requests(api, tenants):
    """Many parallel requests (auth writes last_used_at, creates race on the default project)."""
    import asyncio

    a, b = tenants
    reads = [api.get(P, headers=t.h) for t in (a, b) for _ in range(10)]
    creates = [api.post(P, json={"name": f"C{i}"}, headers=a.h) for i in range(10)]
    results = await asyncio.gather(*reads, *creates)
    assert [r.status_code for r in results] == [200] * 20 + [201] * 10
    body = (await api.get(P, params={"page_size": 200}, headers=a.h)).json()
    assert sum(p["is_default"] for p in body["projects"]) == 1
    assert body["pagination"]["total_items"] == 11
