"""The close reads the warehouse through the runtime that holds it (loopback HTTP + runtime token,
api/internal_close.py) exactly as it reads it directly."""

from __future__ import annotations

import socket
import threading
import time
from datetime import UTC, date, datetime

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from api.internal_close import close_router
from controlplane import Orgs
from controlplane.billing import BillingPeriods, Receipts
from core.settings import load_settings
from orchestration.resources import DirectReader, RuntimeReader, WarehouseResource
from tests.orchestration.helpers import INVENTORY_CSV, now_iso, pipeline_usage, verify_independently
from warehouse.aio import AsyncWarehouse
from warehouse.runtime import publish_runtime


@pytest.fixture
def runtime(close_env):
    """A loopback HTTP server with the close router over the test's warehouse, and its runtime.json."""
    aw = AsyncWarehouse(close_env.client)
    app = FastAPI()
    settings = load_settings({"JOULESTREAM_HOME": str(close_env.home)})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    info = publish_runtime(settings, f"http://127.0.0.1:{port}")
    app.include_router(close_router(info.token, lambda: aw))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield info
    server.should_exit = True
    thread.join(5)
    aw.close()


def test_runtime_reader_matches_direct(close_env, runtime):
    org = Orgs(close_env.engine).create("acme", plan_tier="growth")
    pipeline_usage(close_env.client, [org.id], datetime(2026, 9, 1, tzinfo=UTC), 50)
    cutoff = datetime.now(UTC)
    args = (org.id, date(2026, 9, 1), date(2026, 10, 1), cutoff, None)
    direct = DirectReader(close_env.client)
    remote = RuntimeReader(runtime)
    assert remote.orgs(date(2026, 9, 1), date(2026, 10, 1), cutoff) == [org.id]
    assert remote.totals(*args) == direct.totals(*args)
    assert remote.events(*args).equals(direct.events(*args))
    r = httpx.get(
        f"{runtime.url}/internal/v1/close/orgs",
        params={"start": "2026-09-01", "end": "2026-10-01", "cutoff": cutoff.isoformat()},
    )
    assert r.status_code == 401  # no token


def test_dagster_job_through_the_runtime(close_env, runtime):
    from controlplane.billing import Credits

    env = close_env
    org = Orgs(env.engine).create("acme", plan_tier="growth")
    Credits(env.engine).load_csv(INVENTORY_CSV)
    pipeline_usage(env.client, [org.id], datetime(2026, 9, 1, tzinfo=UTC), 40)
    res = env.resources()
    res["warehouse"] = WarehouseResource(database=env.database, home=str(env.home), mode="runtime")
    from orchestration.definitions import run_close

    result = run_close("2026-09", cutoff=now_iso(), **res)
    assert result.success
    assert (
        result.asset_materializations_for_node("close_totals")[0].metadata["warehouse_mode"].value
        == "runtime"
    )
    period = BillingPeriods(env.engine).get_for(org.id, "2026-09")
    assert period.status == "closed"
    r = Receipts(env.engine).for_period(period.id)
    assert verify_independently(r.payload, r.payload_hash, r.signature, r.public_key)
