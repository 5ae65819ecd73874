"""Pollers through the real pipeline: provider stubs → the real poller code → usage.raw.v1 on the embedded
broker → a real stream worker (enrich + sink) → the warehouse. Polling twice (and re-sending a poll that
crashed before recording its state) gives identical totals; a provider's correction replaces the old
figure; a 401 disables the connection; the key appears in no log line (ours, the worker's) and no column."""

from __future__ import annotations

import asyncio
import logging
import math
import os
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, select

from controlplane import Orgs, dispose_engine, get_engine, upgrade
from controlplane.connections import Connections, new_connection_id
from controlplane.schema import connection_buckets, metadata
from core.contracts import UsageEvent
from core.kafka import OutRecord, ensure_topics, producer, send_many
from core.secrets import LocalSecretStore
from pipelines.pollers.scheduler import PollerConfig, PollScheduler
from providers.base import HttpPolicy, floor_to
from tests.e2e.expectations import FLOAT_FIELDS, TOKEN_FIELDS, expected
from tests.pollers.stubs import ADMIN_KEYS
from tests.stack import Stack, WorkerProcess

pytestmark = pytest.mark.slow

H = timedelta(hours=1)


def hour(n: int) -> datetime:
    return floor_to(datetime.now(UTC), H) - n * H


class Harness:
    def __init__(self, stack: Stack, tmp_path, stubs) -> None:
        self.stack = stack
        self.url = f"sqlite:///{tmp_path / 'control.db'}"
        self.engine = get_engine(self.url)
        upgrade(self.engine)
        self.store = LocalSecretStore(os.urandom(32))
        self.config = PollerConfig(
            base_urls={p: s.url for p, s in stubs.items()},
            http=HttpPolicy(timeout_s=5, max_attempts=2, backoff_s=0.01),
            lookback=timedelta(hours=12),
            initial_backfill=timedelta(days=2),
        )
        self.live: dict[str, UsageEvent] = {}  # what the warehouse must hold: the highest revision per id
        self.factors_version: str | None = None  # the worker's current set (None: the built-in default)
        self.sent = 0
        self.last_batch: list[OutRecord] = []

    def close(self) -> None:
        dispose_engine(self.url)

    def register(self, org_id: str, provider: str) -> str:
        cid = new_connection_id()
        Connections(self.engine).create(
            org_id, provider, self.store.put(cid, ADMIN_KEYS[provider]), connection_id=cid
        )
        return cid

    def poll(self, *ids: str):
        """Poll the given connections (all due ones when none), publishing to the stack's raw topic."""

        async def go():
            await ensure_topics(self.stack.settings)
            prod = producer(self.stack.settings)
            await prod.start()
            try:
                sched = PollScheduler(
                    self.stack.settings, self.engine, prod, secrets=self.store, config=self.config
                )
                sent_before = []
                orig = sched.producer

                class Spy:  # remember what went out, to replay it later
                    async def partitions_for(self, topic):
                        return await orig.partitions_for(topic)

                    def create_batch(self):
                        batch = orig.create_batch()
                        real_append = batch.append

                        def append(key, value, timestamp):
                            sent_before.append(OutRecord(key, value))
                            return real_append(key=key, value=value, timestamp=timestamp)

                        batch.append = append
                        return batch

                    async def send_batch(self, batch, topic, partition):
                        return await orig.send_batch(batch, topic, partition=partition)

                sched.producer = Spy()
                if ids:
                    results = [await sched.poll_connection(cid) for cid in ids]
                else:
                    results = await sched.run_once()
                await sched.aclose()
                return results, sent_before
            finally:
                await prod.stop()

        results, records = asyncio.run(go())
        self.sent += len(records)
        self.last_batch = records
        for rec in records:
            ev = UsageEvent.model_validate_json(rec.value)
            cur = self.live.get(ev.event_id)
            if cur is None or ev.revision > cur.revision:
                self.live[ev.event_id] = ev
        return results

    def replay(self, records: list[OutRecord]) -> None:
        async def go():
            prod = producer(self.stack.settings)
            await prod.start()
            try:
                await send_many(prod, self.stack.settings.raw_topic, records)
            finally:
                await prod.stop()

        asyncio.run(go())
        self.sent += len(records)

    def wait_settled(self, worker: WorkerProcess) -> dict:
        """Until the worker consumed everything sent and the warehouse totals equal the expected ones."""
        want = expected(list(self.live.values()), version=self.factors_version)[""]

        def ok(s) -> bool:
            t = s["totals"]["totals"]
            return (
                s["stats"].get("enrich", {}).get("consumed", 0) >= self.sent
                and s["stats"].get("sink", {}).get("consumed", 0) >= s["stats"]["enrich"].get("enriched", 0)
                and all(t[f] == want[f] for f in ("events", "request_count", *TOKEN_FIELDS))
            )

        got = worker.wait_for(ok, timeout_s=120, what="poller events in the warehouse")["totals"]["totals"]
        for f in FLOAT_FIELDS:
            assert math.isclose(got[f], want[f], rel_tol=1e-9, abs_tol=1e-12), f
        return got


def same(a: dict, b: dict) -> bool:
    """Equal totals: integers exactly, floats up to summation order."""
    return a.keys() == b.keys() and all(
        math.isclose(a[k], b[k], rel_tol=1e-9, abs_tol=1e-12) if isinstance(a[k], float) else a[k] == b[k]
        for k in a
    )


@pytest.fixture
def harness(stack, tmp_path, stubs):
    h = Harness(stack, tmp_path, stubs)
    yield h
    h.close()


def test_polled_usage_lands_once_corrections_replace_and_a_revoked_key_disables(
    harness: Harness, stubs, worker: WorkerProcess, caplog
):
    caplog.set_level(logging.DEBUG)
    h = harness
    o = stubs["openai"]
    o.put("completions", hour(5), "gpt-4o", "proj_1", input_tokens=120_000, input_cached_tokens=20_000,
          output_tokens=30_000, num_model_requests=40)  # fmt: skip
    o.put("completions", hour(3), "gpt-4o-mini", "proj_2", input_tokens=9_000, output_tokens=1_000,
          num_model_requests=12)  # fmt: skip
    o.put(
        "embeddings", hour(2), "text-embedding-3-small", "proj_1", input_tokens=50_000, num_model_requests=5
    )
    o.page_limit = 4  # several pages per endpoint
    stubs["anthropic"].put(hour(4), "claude-sonnet-4-20250514", uncached_input_tokens=7_000,
                           cache_read_input_tokens=40_000, cache_5m=3_000, cache_1h=1_000, output_tokens=2_500)  # fmt: skip
    stubs["openrouter"].put(datetime.now(UTC).date() - timedelta(days=1), "ep-llama",
                            model="meta-llama/llama-3.3-70b-instruct", requests=9, prompt_tokens=8_000,
                            completion_tokens=2_000)  # fmt: skip

    org = Orgs(h.engine).create("acme")
    ids = {p: h.register(org.id, p) for p in ("openai", "anthropic", "openrouter")}
    worker.start()

    results = h.poll()
    assert sorted((r.provider, r.outcome, r.published) for r in results) == [
        ("anthropic", "ok", 1),
        ("openai", "ok", 3),
        ("openrouter", "ok", 1),
    ]
    first = h.wait_settled(worker)
    assert first["events"] == 5 and first["input_tokens_cache_creation"] == 4_000
    first_batch = list(h.last_batch)

    # polling again: the same figures, nothing new; the totals do not move
    results = h.poll(*ids.values())
    assert [r.published for r in results] == [0, 0, 0]
    # a poll that published and then crashed before recording its state: its events arrive again, and
    # the next poll (without state) re-publishes every bucket with a higher revision and the same figures
    h.replay(first_batch)
    with h.engine.begin() as conn:
        conn.execute(delete(connection_buckets))
    results = h.poll(*ids.values())
    assert sum(r.published for r in results) == 5
    assert same(h.wait_settled(worker), first)

    # the provider corrects a bucket: the new figure replaces the old one
    o.put("completions", hour(5), "gpt-4o", "proj_1", input_tokens=150_000, input_cached_tokens=20_000,
          output_tokens=31_000, num_model_requests=41)  # fmt: skip
    (r,) = h.poll(ids["openai"])
    assert r.published == 1
    corrected = h.wait_settled(worker)
    assert corrected["events"] == 5
    assert corrected["input_tokens_uncached"] == first["input_tokens_uncached"] + 30_000
    assert corrected["output_tokens"] == first["output_tokens"] + 1_000
    assert corrected["request_count"] == first["request_count"] + 1

    # the key is revoked at the provider: the connection is disabled, nothing changes in the warehouse
    stubs["anthropic"].keys[ADMIN_KEYS["anthropic"]] = "revoked"
    (r,) = h.poll(ids["anthropic"])
    assert r.outcome == "disabled"
    assert Connections(h.engine).get(org.id, ids["anthropic"]).status == "disabled"
    assert h.poll() == []  # never due again
    assert same(h.wait_settled(worker), corrected)

    # the keys are nowhere in clear: our log lines, the worker's log, any control-plane column
    assert worker.stop() == 0
    worker_log = worker.log_path.read_text(errors="replace")
    assert worker_log
    with h.engine.connect() as conn:
        columns = [
            str(v) for t in metadata.sorted_tables for row in conn.execute(select(t)).all() for v in row
        ]
    for key in ADMIN_KEYS.values():
        assert key not in caplog.text
        assert key not in worker_log
        assert not any(key in v for v in columns)
