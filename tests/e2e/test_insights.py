"""Insights over data produced by the real pipeline: simulated traffic (`make run`'s generator, with duplicates,
revisions and invalid messages) → Tansu → a real worker process (enrich, sink) → chdb; then the API. The demo
org gets at least three kinds of recommendation and a score strictly between 0 and 100; each right-sizing's
evidence equals the final events of its group; another org sees none of them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from controlplane import Projects
from core.methodology import load_factor_set, match_model
from pipelines.simulate import generate
from tests.e2e.test_pipeline import wait_done
from tests.fixtures_api import client_for
from tests.stack import Stack, WorkerProcess, publish
from warehouse.client import close_clients, get_client

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_recommendations_and_score_on_pipeline_data(
    stack: Stack, worker: WorkerProcess, make_app, engine, tenants
) -> None:
    a, b = tenants
    projects = Projects(engine)
    a_projects = [projects.create(a.org.id, f"A{i}").id for i in range(2)]
    b_projects = [projects.create(b.org.id, "B0").id]
    traffic = generate(2000, days=10, now=datetime.now(UTC), seed=5,
                       tenants={a.org.id: a_projects, b.org.id: b_projects})  # fmt: skip
    worker.start()
    assert publish(stack, traffic.messages) == 2000
    wait_done(worker, 2000, len(traffic.final))
    assert worker.stop() == 0, worker.log_tail()
    close_clients()  # one chdb path per process: let go of the test session's warehouse first
    client = get_client(stack.settings)
    try:
        asyncio.run(_check(make_app, client, a, b, traffic))
    finally:
        close_clients()


async def _check(make_app, client, a, b, traffic) -> None:
    app = make_app(warehouse_client_factory=lambda: client)
    async with client_for(app) as c:
        recs = (await c.get("/api/v1/recommendations", headers=a.h)).json()["recommendations"]
        kinds = {r["type"] for r in recs}
        assert len(kinds) >= 3, kinds
        score = (await c.get("/api/v1/sustainability", headers=a.h)).json()
        assert 0 < score["overall_score"] < 100
        b_recs = (await c.get("/api/v1/recommendations", headers=b.h)).json()["recommendations"]
        assert not {r["id"] for r in recs} & {r["id"] for r in b_recs}
        assert all(r["project_id"] in (None, *traffic_projects(traffic, b.org.id)) for r in b_recs)
    app.state.ctx.telemetry.close()
    fs = load_factor_set()
    rightsizing = [r for r in recs if r["type"] == "MODEL_RIGHTSIZING"]
    assert rightsizing
    for r in rightsizing:
        ev = r["evidence"]
        tiers = set(ev["routing_tiers"])
        group = [
            e for e in traffic.final.values()
            if e.org_id == a.org.id and e.project_id == r["project_id"] and e.model == r["model"]
            and (e.region or "") == ev["region"] and (e.routing_tier.value if e.routing_tier else "unclassified") in tiers
        ]  # fmt: skip
        assert ev["events"] == len(group) > 0
        assert ev["output_tokens"] == sum(e.output_tokens for e in group)
        assert match_model(fs, r["model"]).tier in ("large", "medium")


def traffic_projects(traffic, org_id: str) -> set[str]:
    return {e.project_id for e in traffic.final.values() if e.org_id == org_id}
