"""Measured GPU energy through the real pipeline: stub DCGM exporter and vLLM server (exposition text with
counter resets, a failed scrape, a gap) → the real scraper → usage.raw.v1 on the embedded broker (Tansu) → a
real stream worker (enrich + sink) → chdb. The warehouse then holds exactly the expected joules per model and
hour, measured (energy_source = measured, is_estimated = false), and a re-publication of every hour (lost
scraper state: same ids, higher revisions) replaces rather than adds. Then GET /api/v1/calibration over it."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC

import pytest
from sqlalchemy import delete

from controlplane.factor_resolver import FactorResolver
from controlplane.gpu_targets import GpuTargetIn, GpuTargets
from controlplane.schema import gpu_buckets
from core.kafka import ensure_topics, producer
from core.methodology import load_factor_set
from pipelines.telemetry.scheduler import TelemetryScraper
from tests.fixtures_api import client_for
from tests.stack import Stack, WorkerProcess
from tests.telemetry.scenario import A, H, M, base_hour, expected, script
from warehouse.calibration import calibration, measured_hours
from warehouse.client import close_clients, get_client

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the scraper's and the API's control plane
def test_measured_joules_per_model_and_hour_land_exactly(
    stack: Stack, worker: WorkerProcess, stub, engine, tenants, make_app
):
    org = tenants[0].org
    GpuTargets(engine).create(
        org.id,
        GpuTargetIn(
            name="h100 node 1",
            dcgm_url=f"{stub.url}/dcgm/metrics",
            server_urls=[f"{stub.url}/vllm/s1/metrics"],
            gpus=[A, "1"],
            provider="aws",
            region="us-east-1",
        ),
    )
    t0 = base_hour()
    sent = 0

    async def scrape(times) -> int:
        await ensure_topics(stack.settings)
        prod = producer(stack.settings)
        await prod.start()
        try:
            s = TelemetryScraper(stack.settings, engine, prod, factors=FactorResolver(engine))
            n = 0
            for at, fail in times:
                stub.fail = {"/dcgm/metrics"} if fail else set()
                n += sum(r.published for r in await s.run_once(at))
            await s.aclose()
            return n
        finally:
            await prod.stop()

    worker.start()
    sent += asyncio.run(scrape(script(stub, t0)))
    want = expected(t0)
    assert sent == len(want)
    # the scraper state is lost: the next scrape re-publishes every hour (higher revisions, same figures)
    with engine.begin() as conn:
        conn.execute(delete(gpu_buckets))
    sent += asyncio.run(scrape([(t0 + 4 * H + 10 * M, False)]))
    assert sent == 2 * len(want)
    worker.wait_for(
        lambda s: (
            s["stats"].get("enrich", {}).get("consumed", 0) >= sent
            and s["stats"].get("sink", {}).get("consumed", 0) >= s["stats"]["enrich"].get("enriched", 0)
            and s["totals"]["totals"]["events"] == len(want)
        ),
        what="measured events in the warehouse",
    )
    assert worker.stop() == 0, worker.log_tail()

    fs = load_factor_set()
    host, pue = fs.measurement.gpu_host_factor.point, fs.pue["aws"]
    close_clients()  # one chdb path per process: let go of the test session's warehouse first
    client = get_client(stack.settings)  # the worker is gone: open its chdb here
    try:
        rows = measured_hours(client, org.id, t0, t0 + 5 * H)
        got = {(r["hour"].replace(tzinfo=UTC), r["model"]): r for r in rows}
        assert set(got) == set(want)
        for key, (joules, prompt, gen) in want.items():
            r = got[key]
            assert r["events"] == 1 and r["estimated"] == 0, key
            assert math.isclose(r["gpu_j"], joules, rel_tol=1e-12), key
            assert math.isclose(r["energy_j"], joules * host * pue, rel_tol=1e-12), key  # facility J
            assert (r["prompt_tokens"], r["generation_tokens"]) == (prompt, gen), key
        sources = client.query(
            "SELECT DISTINCT energy_source, is_estimated, source, measured_by FROM usage_events "
            "WHERE org_id = {o:String}",
            parameters={"o": org.id},
        ).result_rows
        assert sources == [("measured", False, "telemetry", "dcgm")]
        cal = {r.model: r for r in calibration(client, org.id, t0, t0 + 5 * H)}
        llama = cal["meta-llama/Llama-3.1-8B-Instruct"]
        gpu_j = sum(j for (_, m), (j, _, _) in want.items() if m == llama.model)
        assert math.isclose(llama.measured_gpu_j, gpu_j) and llama.hours == 4
        assert math.isclose(llama.measured_it_j, gpu_j * host)
        tokens = [(p, g) for (_, m), (_, p, g) in want.items() if m == llama.model]
        est = sum(p * 0.05 + g * 0.3 for p, g in tokens)  # the small tier's point J/token (v2.0)
        assert math.isclose(llama.estimated_it_j, est) and math.isclose(llama.ratio, gpu_j * host / est)
        body = asyncio.run(_calibration_api(make_app(warehouse_client_factory=lambda: client), tenants, t0))
        assert [r["model"] for r in body["data"]] == sorted(cal)
        assert body["data"][0] == {**cal[body["data"][0]["model"]]._asdict()}
    finally:
        close_clients()


async def _calibration_api(app, tenants, t0) -> dict:
    params = {"start": t0.isoformat(), "end": (t0 + 5 * H).isoformat()}
    async with client_for(app) as c:
        other = await c.get("/api/v1/calibration", params=params, headers=tenants[1].h)
        assert other.status_code == 200 and other.json()["data"] == []  # another org sees nothing
        r = await c.get("/api/v1/calibration", params=params, headers=tenants[0].h)
        assert r.status_code == 200, r.text
        return r.json()
