"""No factor-version drift between the gateway and the ledger: carbon factor versions are published while
the gateway serves, and for every request before and after — including requests the gateway served with an
older version than the worker's current one, and with a newer one — the signed receipt, the energy headers
and the ledger row of the same event (through the real pipeline: a `joulestream worker` subprocess, enrich →
sink → ClickHouse) carry the same factor version and the same figures."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from controlplane import FactorVersions
from controlplane.factor_resolver import FactorResolver
from pipelines.gateway.booking import fmt
from tests.gateway.conftest import GatewayFactory, GatewayHandle, Tenants
from tests.stack import REPO, Stack, WorkerProcess
from tests.streams.test_factors import new_version

pytestmark = pytest.mark.slow

Q = [{"role": "user", "content": "What is the capital of France?"}]
_ROWS = """
import json, sys
from warehouse.client import get_client
cols = sys.argv[1].split(",")
rows = get_client().query(f"SELECT {', '.join(cols)} FROM usage_events WHERE sign = 1").result_rows
print(json.dumps([dict(zip(cols, r)) for r in rows], default=str))
"""
COLUMNS = [
    "event_id",
    "factors_version",
    "model_tier",
    "pue",
    "grid_intensity_kg_per_kwh",
    "j_per_prefill_token",
    "j_per_decode_token",
    "j_per_cached_token",
    "input_tokens_uncached",
    "input_tokens_cached",
    "output_tokens",
    "energy_j",
    "energy_j_low",
    "energy_j_high",
    "co2_kg",
    "co2_kg_low",
    "co2_kg_high",
    # methodology v2
    "energy_source",
    "co2_kg_market",
    "co2_kg_market_low",
    "co2_kg_market_high",
    "co2_kg_embodied",
    "co2_kg_embodied_low",
    "co2_kg_embodied_high",
    "water_l",
    "water_l_low",
    "water_l_high",
    "cost_usd",
    "price_source",
]
V2_PAIRS = (  # receipt field, ledger column, scale
    ("carbon_market_mg", "co2_kg_market", 1e6),
    ("carbon_market_mg_low", "co2_kg_market_low", 1e6),
    ("carbon_market_mg_high", "co2_kg_market_high", 1e6),
    ("carbon_embodied_mg", "co2_kg_embodied", 1e6),
    ("carbon_embodied_mg_low", "co2_kg_embodied_low", 1e6),
    ("carbon_embodied_mg_high", "co2_kg_embodied_high", 1e6),
    ("water_ml", "water_l", 1e3),
    ("water_ml_low", "water_l_low", 1e3),
    ("water_ml_high", "water_l_high", 1e3),
    ("cost_usd_micros", "cost_usd", 1e6),
)


def one_request(gw: GatewayHandle, i: int) -> dict[str, Any]:
    """A request of kind i % 4 (chat, streamed chat, completion, embedding): its receipt id and headers."""
    client = gw.client()
    kind = i % 4
    if kind == 1:
        with client.chat.completions.with_streaming_response.create(
            model="auto", messages=Q, stream=True, stream_options={"include_usage": True}
        ) as resp:
            for _ in resp.parse():
                pass
            return {"rid": resp.headers["x-receipt-id"], "headers": None}
    if kind == 0:
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=Q)
    elif kind == 2:
        raw = client.completions.with_raw_response.create(model="auto", prompt="The capital of France is")
    else:
        raw = client.embeddings.with_raw_response.create(model="auto", input="hello")
    raw.parse()
    return {"rid": raw.headers["x-receipt-id"], "headers": dict(raw.headers)}


REREAD_S = 3  # the worker's factor re-read interval in this test (JOULESTREAM_FACTORS_REFRESH_S; default 10)


def test_receipts_and_ledger_agree_across_factor_publications(
    make_gateway: GatewayFactory, tenants: Tenants, stack: Stack, worker: WorkerProcess
) -> None:
    stack.env["JOULESTREAM_DATABASE"] = str(tenants.engine.url)  # the worker reads the same control plane
    stack.env["JOULESTREAM_FACTORS_REFRESH_S"] = str(REREAD_S)
    worker.start()
    resolver = FactorResolver(tenants.engine, ttl_s=3600)  # the test decides when the gateway re-reads
    gw = make_gateway(factors=resolver)
    factor_versions = FactorVersions(tenants.engine)

    served: list[dict[str, Any]] = []  # {"rid", "headers", "phase"}
    stop = threading.Event()
    background_errors: list[BaseException] = []

    def serve_in_background() -> None:  # requests all along, across every publication and re-read
        i = 0
        while not stop.is_set():
            try:
                served.append({**one_request(gw, i), "phase": "background"})
            except BaseException as exc:  # reported by the test thread
                background_errors.append(exc)
                return
            i += 1
            time.sleep(0.05)

    def phase(name: str, n: int = 8) -> None:
        served.extend({**one_request(gw, i), "phase": name} for i in range(n))

    thread = threading.Thread(target=serve_in_background, daemon=True)
    thread.start()
    try:
        phase("v2.0")  # the seeded current set (methodology v2: market, embodied, water, cost)
        factor_versions.publish(new_version("v2.1", "2026-12-04", pue=1.5))
        # past the worker's re-read: its current set is v2.1 while the gateway still serves v2.0
        time.sleep(REREAD_S + 1)
        phase("v2.0, worker on v2.1")
        resolver.refresh()
        phase("v2.1")
        # the gateway re-reads at once; the worker still has v2.1 until its next re-read (REREAD_S)
        factor_versions.publish(new_version("v2.2", "2026-12-05", pue=1.3))
        resolver.refresh()
        phase("v2.2, worker on v2.1")
    finally:
        stop.set()
        thread.join(30)
    assert not background_errors, background_errors
    assert sum(s["phase"] == "background" for s in served) >= 10

    n = len(served)
    worker.wait_for(lambda s: s["totals"]["totals"]["events"] >= n, what=f"{n} gateway events")
    gw.wait_receipts_stored()
    receipts = {s["rid"]: gw.http("GET", f"/v1/receipts/{s['rid']}").json()["payload"] for s in served}
    assert worker.stop() == 0
    out = subprocess.run(
        [sys.executable, "-c", _ROWS, ",".join(COLUMNS)],
        cwd=REPO,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    rows = {r["event_id"]: r for r in json.loads(out)}
    assert len(rows) == n

    versions_by_phase: dict[str, set[str]] = {}
    for s in served:
        p = receipts[s["rid"]]
        row = rows[p["event_id"]]
        versions_by_phase.setdefault(s["phase"], set()).add(p["factors_version"])
        f = p["factors"]
        assert (p["factors_version"], f["model_tier"], f["pue"], f["grid_intensity_kg_per_kwh"]) == (
            row["factors_version"],
            row["model_tier"],
            row["pue"],
            row["grid_intensity_kg_per_kwh"],
        ), s
        assert (f["j_per_prefill_token"], f["j_per_decode_token"], f["j_per_cached_token"]) == (
            row["j_per_prefill_token"],
            row["j_per_decode_token"],
            row["j_per_cached_token"],
        )
        t = p["tokens"]
        assert (t["input_uncached"], t["input_cached"], t["output"]) == (
            row["input_tokens_uncached"],
            row["input_tokens_cached"],
            row["output_tokens"],
        )
        assert (p["energy_j"], p["energy_j_low"], p["energy_j_high"]) == (
            row["energy_j"],
            row["energy_j_low"],
            row["energy_j_high"],
        ), s
        assert (p["carbon_mg"], p["carbon_mg_low"], p["carbon_mg_high"]) == (
            row["co2_kg"] * 1e6,
            row["co2_kg_low"] * 1e6,
            row["co2_kg_high"] * 1e6,
        ), s
        assert p["energy_source"] == row["energy_source"] and p["price_source"] == row["price_source"]
        for field, column, scale in V2_PAIRS:
            want = None if row[column] is None else row[column] * scale
            assert p[field] == want, (s, field)
        if s["headers"] is not None:  # not streamed: the headers carry the booked figures
            h = s["headers"]
            assert h["x-factors-version"] == row["factors_version"]
            assert h["x-energy-joules"] == fmt(row["energy_j"])
            assert h["x-carbon-mg"] == fmt(row["co2_kg"] * 1e6)
            if row["co2_kg_market"] is not None:
                assert h["x-carbon-market-mg"] == fmt(row["co2_kg_market"] * 1e6)
                assert h["x-water-ml"] == fmt(row["water_l"] * 1e3)

    assert versions_by_phase["v2.0"] == {"v2.0"}
    assert versions_by_phase["v2.0, worker on v2.1"] == {"v2.0"}
    assert versions_by_phase["v2.1"] == {"v2.1"}
    assert versions_by_phase["v2.2, worker on v2.1"] == {"v2.2"}
    assert {"v2.0", "v2.1", "v2.2"} <= versions_by_phase["background"]
    # every set is a v2 one: the v2 figures are there, not just equal as nulls
    assert all(r["co2_kg_market"] is not None and r["water_l"] is not None for r in rows.values())
    pues = {rows[receipts[s["rid"]]["event_id"]]["pue"] for s in served if s["phase"] != "background"}
    assert {1.5, 1.3} <= pues and len(pues) >= 3  # the versions' figures differ


def test_gateway_picks_up_a_published_version_by_itself(
    make_gateway: GatewayFactory, tenants: Tenants
) -> None:
    gw = make_gateway(factors=FactorResolver(tenants.engine, ttl_s=0.1))
    assert gw.http("GET", "/health").json()["factors_version"] == "v2.0"  # the built-in default
    FactorVersions(tenants.engine).publish(new_version("v2.1", "2026-12-04"))
    deadline = time.monotonic() + 10
    while gw.http("GET", "/health").json()["factors_version"] != "v2.1":
        assert time.monotonic() < deadline, "the gateway did not pick up v2.1"
        time.sleep(0.05)
    raw = gw.client().chat.completions.with_raw_response.create(model="auto", messages=Q)
    assert raw.headers["x-factors-version"] == "v2.1"
