"""The whole pipeline on the embedded stack: real Tansu broker, a real worker process, chdb.

simulated traffic → usage.raw.v1 → enrich agent → usage.enriched.v1 → sink agent → ClickHouse,
checked against figures computed straight from the final events (tests/e2e/expectations.py).
"""

from __future__ import annotations

import asyncio
import base64
import math

import pytest
from aiokafka import AIOKafkaConsumer

from core.contracts import DeadLetter
from pipelines.simulate import generate
from tests.e2e.expectations import FLOAT_FIELDS, TOKEN_FIELDS, expected
from tests.stack import Stack, WorkerProcess, publish

pytestmark = pytest.mark.slow

ROW_KEY = {"org": "org_id", "project": "project_id", "model": "model", "day": "day"}


def assert_totals_match(worker: WorkerProcess, final: list) -> None:
    for by in ("none", "org", "project", "model", "day"):
        want = expected(final, by)
        data = worker.totals(by)
        got = {"": data["totals"]} if by == "none" else {str(r[ROW_KEY[by]]): r for r in data["rows"]}
        assert set(got) == set(want), f"{by}: groups differ"
        for key, w in want.items():
            g = got[key]
            for f in ("events", "request_count", *TOKEN_FIELDS):
                assert g[f] == w[f], f"{by}={key} {f}: got {g[f]}, want {w[f]}"
            for f in FLOAT_FIELDS:
                assert math.isclose(g[f], w[f], rel_tol=1e-9, abs_tol=1e-12), (
                    f"{by}={key} {f}: {g[f]} != {w[f]}"
                )


def read_dlq(stack: Stack, expect: int, timeout_s: float = 30) -> list[DeadLetter]:
    async def _read() -> list[DeadLetter]:
        c = AIOKafkaConsumer(
            stack.settings.dlq_topic,
            bootstrap_servers=stack.settings.kafka,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await c.start()
        out: list[DeadLetter] = []
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            while len(out) < expect and loop.time() < deadline:
                for msgs in (await c.getmany(timeout_ms=500)).values():
                    out.extend(DeadLetter.model_validate_json(m.value) for m in msgs)
            # anything beyond `expect` would be a bug: give it a moment to show up
            for msgs in (await c.getmany(timeout_ms=1000)).values():
                out.extend(DeadLetter.model_validate_json(m.value) for m in msgs)
        finally:
            await c.stop()
        return out

    return asyncio.run(_read())


def wait_done(worker: WorkerProcess, n_messages: int, n_events: int) -> None:
    worker.wait_for(
        lambda s: (
            s["stats"].get("enrich", {}).get("consumed", 0) >= n_messages
            and s["totals"]["totals"]["events"] == n_events
            and s["stats"].get("sink", {}).get("consumed", 0) >= s["stats"]["enrich"].get("enriched", 0)
        ),
        what=f"{n_events} live events in the warehouse",
    )


def test_exact_totals_dedup_revisions_and_dlq(stack: Stack, worker: WorkerProcess) -> None:
    traffic = generate(20_000, duplicate_rate=0.05, revision_rate=0.02, invalid_rate=0.01, seed=11)
    assert (traffic.duplicates, traffic.revisions, traffic.invalid) == (1000, 400, 200)
    worker.start()
    assert publish(stack, traffic.messages) == 20_000
    wait_done(worker, 20_000, len(traffic.final))
    assert_totals_match(worker, traffic.expected_events)

    dlq = read_dlq(stack, traffic.invalid)
    assert len(dlq) == traffic.invalid
    invalid_values = {m.value for m in traffic.messages} - {
        e.model_dump_json().encode() for e in traffic.expected_events
    }
    for d in dlq:
        assert d.stage in ("decode", "validate") and d.error
        assert base64.b64decode(d.original_b64) in invalid_values | {b""}
    reasons = " | ".join(d.error for d in dlq)
    for fragment in (
        "invalid JSON",
        "greater than or equal to 0",
        "org_id",
        "bucket_end is before",
        "event_timestamp: Input should be greater than or equal to 2015",
    ):
        assert fragment in reasons

    assert worker.stop() == 0, worker.log_tail()  # SIGTERM: a clean stop


def test_sigkill_twice_mid_stream_loses_and_doubles_nothing(stack: Stack, worker: WorkerProcess) -> None:
    """The worker is SIGKILLed twice while data flows, at different points, and restarted each time.

    Traffic is published a third at a time *after* the worker is up, so each kill lands while that
    third is being processed (a worker left alone with all of it would finish 60k events before the
    first stats poll)."""
    traffic = generate(60_000, duplicate_rate=0.05, revision_rate=0.02, invalid_rate=0.01, seed=23)
    thirds = [traffic.messages[i : i + 20_000] for i in range(0, 60_000, 20_000)]
    kill_points = [
        # 1: as soon as the sink has stored its first batch of this third (the enrich agent is mid-way)
        lambda st: st.get("sink", {}).get("stored", 0) >= 1,
        # 2: as soon as the enrich agent has consumed its first batch of this third (the sink has none yet)
        lambda st: st.get("enrich", {}).get("consumed", 0) >= 1,
    ]
    for chunk, predicate in zip(thirds, kill_points, strict=False):
        worker.start()
        publish(stack, chunk)
        worker.wait_for_stats(predicate)
        worker.kill()
    worker.start()
    publish(stack, thirds[2])
    wait_done(worker, 0, len(traffic.final))
    assert_totals_match(worker, traffic.expected_events)
    dlq = read_dlq(stack, traffic.invalid)
    assert len(dlq) >= traffic.invalid  # a killed enrich batch may be re-read: its DLQ entries can repeat
    assert worker.stop() == 0


def test_enrich_process_killed_is_restarted_and_loses_nothing(stack: Stack, worker: WorkerProcess) -> None:
    """The enrich agent runs in a child process of the worker: SIGKILL it mid-stream; the worker restarts
    it and the totals are still exact."""
    import os
    import signal

    traffic = generate(20_000, duplicate_rate=0.05, revision_rate=0.02, invalid_rate=0.01, seed=31)
    worker.start()
    publish(stack, traffic.messages)
    first = worker.wait_for_stats(lambda st: st.get("enrich", {}).get("consumed", 0) >= 1)
    os.kill(first["enrich"]["pid"], signal.SIGKILL)
    worker.wait_for_stats(lambda st: st["enrich"].get("restarts", 0) >= 1)
    wait_done(worker, 0, len(traffic.final))
    assert_totals_match(worker, traffic.expected_events)
    assert worker.stop() == 0
