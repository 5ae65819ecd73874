"""/prometheus/metrics of a real worker (`joulestream worker --http-port`, enrich in its child process) while
events flow through the embedded stack: the counters of both processes — the enrich child's received /
enriched / duplicates / DLQ, the parent's stored and insert latency — reach the one endpoint (prometheus_client
multiprocess mode, core/metrics.py), parse with prometheus_client's parser, and agree with the worker's own
counters and with the ledger's totals."""

from __future__ import annotations

import math
import time

import httpx
import pytest

from pipelines.simulate import generate
from tests.prom import Samples, parse, total, value
from tests.stack import Stack, WorkerProcess, publish

pytestmark = pytest.mark.slow

TOKEN = "e2e-operator-token"


def scrape(worker: WorkerProcess) -> Samples:
    assert worker.runtime is not None
    r = httpx.get(
        f"{worker.runtime.url}/prometheus/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )
    assert r.status_code == 200, r.text
    return parse(r.text)


def wait_for(worker: WorkerProcess, predicate, what: str, timeout_s: float = 180) -> Samples:
    deadline = time.monotonic() + timeout_s
    samples: Samples = {}
    while time.monotonic() < deadline:
        samples = scrape(worker)
        if predicate(samples):
            return samples
        time.sleep(0.5)
    raise TimeoutError(f"{what} not reached in {timeout_s}s\n{worker.log_tail()}")


def test_counters_of_both_worker_processes_move_when_events_flow(stack: Stack, worker: WorkerProcess) -> None:
    stack.env["JOULESTREAM_METRICS_TOKEN"] = TOKEN
    # exact re-sends and invalid messages, no revisions: every enriched event is a live ledger row, so the
    # energy / CO2e counters must equal the ledger's totals
    traffic = generate(3_000, duplicate_rate=0.05, revision_rate=0.0, invalid_rate=0.02, seed=5)
    n = len(traffic.messages)
    worker.start()
    r = httpx.get(f"{worker.runtime.url}/prometheus/metrics", timeout=30)  # type: ignore[union-attr]
    assert r.status_code == 401 and r.json()["detail"]
    before = scrape(worker)
    assert value(before, "joulestream_pipeline_received_total", agent="enrich") == 0

    assert publish(stack, traffic.messages) == n
    after = wait_for(
        worker,
        lambda s: (
            value(s, "joulestream_pipeline_received_total", agent="enrich") == n
            and value(s, "joulestream_pipeline_stored_total") == len(traffic.final)
        ),
        f"{n} messages received and {len(traffic.final)} stored",
    )
    stats, totals = worker.stats(), worker.totals()["totals"]
    enrich, sink = stats["enrich"], stats["sink"]
    assert enrich["pid"] != worker.proc.pid  # type: ignore[union-attr]  # the enrich agent ran in the child

    assert value(after, "joulestream_pipeline_enriched_total") == enrich["enriched"] == len(traffic.final)
    assert value(after, "joulestream_pipeline_dlq_total", agent="enrich") == enrich["dlq"] == traffic.invalid
    dups = value(after, "joulestream_pipeline_duplicates_total", stage="enrich") + value(
        after, "joulestream_pipeline_duplicates_total", stage="sink"
    )
    assert dups == enrich["duplicates"] + sink.get("skipped", 0) == traffic.duplicates
    assert value(after, "joulestream_pipeline_received_total", agent="sink") == sink["consumed"]
    assert value(after, "joulestream_pipeline_stored_total") == sink["stored"] == totals["events"]
    assert value(after, "joulestream_pipeline_dlq_total", agent="sink") == 0
    for agent in ("enrich", "sink"):
        batches = value(after, "joulestream_pipeline_batch_seconds_count", agent=agent)
        assert batches == stats[agent]["batches"] >= 1
        assert value(after, "joulestream_pipeline_batch_events_sum", agent=agent) == stats[agent]["consumed"]
    assert value(after, "joulestream_warehouse_insert_seconds_count") >= sink["batches"]

    kwh = total(after, "joulestream_energy_kwh_total")
    assert math.isclose(kwh, totals["energy_j"] / 3.6e6, rel_tol=1e-9)
    co2 = total(after, "joulestream_co2e_kg_total", basis="location")
    assert math.isclose(co2, totals["co2_kg"], rel_tol=1e-9)
    assert not any(n.startswith("joulestream_org_") for n, _ in after)  # per-org series are off

    # consumer lag: one series per partition of each agent's topic, back to 0 once everything is committed
    settled = wait_for(
        worker,
        lambda s: (
            {dict(ls)["topic"] for (nm, ls) in s if nm == "joulestream_pipeline_consumer_lag"}
            == {stack.settings.raw_topic, stack.settings.enriched_topic}
            and total(s, "joulestream_pipeline_consumer_lag") == 0
        ),
        "consumer lag 0 on both topics",
    )
    assert total(settled, "joulestream_pipeline_received_total") == n + sink["consumed"]

    # one metrics directory for the worker's process tree, with the files of both processes
    tree = stack.settings.metrics_path / str(worker.proc.pid)  # type: ignore[union-attr]
    pids = {f.stem.rsplit("_", 1)[1] for f in tree.glob("counter_*.db")}
    assert pids == {str(worker.proc.pid), str(enrich["pid"])}  # type: ignore[union-attr]
    assert worker.stop() == 0, worker.log_tail()
