"""Reporting over data produced by the real pipeline: simulated traffic (duplicates, revisions, invalid
messages) → Tansu → a real worker process (enrich, sink) → chdb; then the API over that warehouse. For one
window, the sum of /metrics/timeseries buckets = /metrics/summary = /report/summary = the signed ledger, per
measure (both Scope 2 methods, embodied, water, cost, energy, tokens), at every granularity; a late revision
sent through the pipeline changes the series, and the KPI cache after a refresh."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from controlplane import Projects
from pipelines.simulate import generate
from tests.api.test_metrics import CHECKED, SERIES_FIELDS, close, same
from tests.e2e.test_pipeline import wait_done
from tests.fixtures_api import client_for
from tests.stack import Stack, WorkerProcess, publish
from warehouse import reporting
from warehouse.client import close_clients, get_client

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the control plane only holds the keys here
def test_metrics_report_and_ledger_agree_on_pipeline_data(
    stack: Stack, worker: WorkerProcess, make_app, engine, tenants
) -> None:
    a, b = tenants
    projects = Projects(engine)
    a_projects = [projects.create(a.org.id, f"A{i}").id for i in range(3)]
    b_projects = [projects.create(b.org.id, "B0").id]
    now = datetime.now(UTC)
    traffic = generate(
        3000,
        days=20,
        now=now,
        seed=3,
        tenants={a.org.id: a_projects, b.org.id: b_projects},
    )
    worker.start()
    assert publish(stack, traffic.messages) == 3000
    wait_done(worker, 3000, len(traffic.final))
    assert worker.stop() == 0, worker.log_tail()

    close_clients()  # one chdb path per process: let go of the test session's warehouse first
    client = get_client(stack.settings)  # the worker is gone: open its chdb here
    try:
        asyncio.run(_check(make_app, client, a, b, now, traffic))
    finally:
        close_clients()


async def _check(make_app, client, a, b, now, traffic) -> None:
    start, end = (now - timedelta(days=21)).date().isoformat(), now.date().isoformat()
    w = reporting.Query(
        a.org.id,
        reporting.Window(
            datetime.fromisoformat(start).replace(tzinfo=UTC),
            datetime.fromisoformat(end).replace(tzinfo=UTC) + timedelta(days=1),
            "",
        ),
    )
    ledger = reporting.ledger_sums(client, w)
    a_events = [e for e in traffic.final.values() if e.org_id == a.org.id]
    assert ledger["events"] == len(a_events) > 100
    assert ledger["co2_kg_market"] > 0 and ledger["co2_kg_embodied"] > 0 and ledger["cost_usd"] > 0
    app = make_app(warehouse_client_factory=lambda: client)
    p = {"start": start, "end": end}
    async with client_for(app) as c:
        summary = (await c.get("/api/v1/metrics/summary", params=p, headers=a.h)).json()
        same(summary, ledger)
        for g, rg in (("hour", "hourly"), ("day", "daily"), ("week", "weekly"), ("month", "monthly")):
            ts = (
                await c.get(
                    "/api/v1/metrics/timeseries",
                    params={**p, "granularity": g, "fields": SERIES_FIELDS},
                    headers=a.h,
                )
            ).json()
            acc = {k: sum(pt[k] or 0 for pt in ts["series"][0]["points"]) for k in CHECKED}
            same(acc, ledger)
            rep = (await c.get("/api/v1/report/summary", params={**p, "granularity": rg}, headers=a.h)).json()
            same(rep["totals"], ledger)
        other = (await c.get("/api/v1/metrics/summary", params=p, headers=b.h)).json()
        assert other["events"] == len([e for e in traffic.final.values() if e.org_id == b.org.id])
        cached = (await c.get("/api/v1/metrics/dashboard-summary", headers=a.h)).json()
        assert cached["windows"]["30d"]["events"] == len(a_events)
    app.state.ctx.telemetry.close()
    assert close(summary["co2e_grams"], ledger["co2_kg"] * 1000)
    assert set(CHECKED) <= set(summary)
