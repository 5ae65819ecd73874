"""Batch agents: the Kafka side of the stream stages, hosted by the Faust app (streams/worker.py).

Why not `@app.agent` streams: on this machine Faust's per-event stream iterator tops out at ~10.6k
events/s *consume-only* (py-spy: the time goes to per-event task/future creation in the iterator),
so two chained Faust streams cannot move more than ~5k events/s. A batch agent reads up to
`max_records` messages (one `getmany`, or several within `linger_ms`), runs the stage over the whole batch, publishes its output
with one produce request per partition (still one Kafka message per event), and only then commits
the consumed offsets. That is also the at-least-once contract the sink needs, without the
`stream.take()` pitfall (which acks its buffer even when the insert raised): an offset is committed
only after the batch's output is acknowledged by Kafka, or its rows are in ClickHouse.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from mode import Service

from core.kafka import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS
from core.metrics import metrics
from core.settings import Settings
from streams.processing import InRecord

log = logging.getLogger(__name__)

LAG_EVERY_S = 1.0  # the consumer-lag gauge is refreshed at most this often (no network: fetch metadata)
Handler = Callable[[Any], Awaitable[None]]
Prepare = Callable[[list[InRecord]], Any]


class RetryableError(Exception):
    """The batch could not be finished now (warehouse or broker unavailable): retry it, don't skip it."""


@dataclass
class AgentStats:
    consumed: int = 0
    batches: int = 0
    retries: int = 0
    commit_failures: int = 0
    last_batch_at: float | None = None
    counters: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, n: int) -> None:
        self.counters[name] = self.counters.get(name, 0) + n


class _LogAssignment(ConsumerRebalanceListener):
    """Logs each (re)assignment of this agent's partitions: with several workers in one consumer group, the log
    shows who owns what, and when a dead member's partitions were taken over (docs/deployment.md)."""

    def __init__(self, agent: str) -> None:
        self.agent = agent

    async def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Any) -> None:
        parts = sorted(tp.partition for tp in assigned)
        log.info("partitions assigned", extra={"agent": self.agent, "partitions": parts})


class BatchAgent(Service):
    """Consume `topic` in batches as consumer group `group_id`.

    Per batch, `prepare(records)` (optional, synchronous) runs once, then `handler(prepared)` (or
    `handler(records)`) must finish the batch or raise; on `RetryableError` only the handler is retried, with
    what `prepare` returned. A stage with in-memory state (the enrich agent's dedup window, which admits a
    batch's ids as it processes them) computes in `prepare` and delivers in `handler`: computing again would
    see its own ids as duplicates and deliver nothing.
    """

    def __init__(
        self,
        *,
        name: str,
        settings: Settings,
        topic: str,
        group_id: str,
        handler: Handler,
        prepare: Prepare | None = None,
        max_records: int = 5_000,
        poll_timeout_ms: int = 100,
        linger_ms: int = 0,
        max_retry_delay_s: float = 10.0,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.agent_name = name
        self.settings = settings
        self.topic = topic
        self.group_id = group_id
        self.handler = handler
        self.prepare = prepare
        self.max_records = max_records
        self.poll_timeout_ms = poll_timeout_ms
        self.linger_ms = linger_ms
        self.max_retry_delay_s = max_retry_delay_s
        self.stats = AgentStats()
        self.consumer: AIOKafkaConsumer | None = None
        self._committed: dict[TopicPartition, int] = {}  # what this agent committed, or read once from Kafka
        self._lag_at = 0.0
        self._lag_tps: set[TopicPartition] = set()

    @property
    def label(self) -> str:
        return f"{type(self).__name__}:{self.agent_name}"

    async def on_start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka,
            group_id=self.group_id,
            client_id=f"joulestream-{self.agent_name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
            max_poll_records=self.max_records,
            max_partition_fetch_bytes=8 << 20,
            fetch_max_bytes=64 << 20,
            # aiokafka's CRC-32C of every fetched batch runs in software: 4.5 µs per 1.2 kB enriched message
            # here, a tenth of the sink's budget. librdkafka's default is off too (`check.crcs=false`); TCP
            # checksums the transport, and every payload is parsed and validated by the stage anyway.
            check_crcs=False,
        )
        self.consumer.subscribe([self.topic], listener=_LogAssignment(self.agent_name))
        await self.consumer.start()
        log.info(
            "agent started", extra={"agent": self.agent_name, "topic": self.topic, "group": self.group_id}
        )

    async def on_stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None

    @Service.task
    async def _consume(self) -> None:
        assert self.consumer is not None
        mx, name = metrics(), self.agent_name
        received, batch_s = mx.pipeline_received.labels(name), mx.pipeline_batch_seconds.labels(name)
        batch_n, commit_failures = (
            mx.pipeline_batch_events.labels(name),
            mx.pipeline_commit_failures.labels(name),
        )
        while not self.should_stop:
            polled = await self._poll()
            if not polled:
                await self._update_lag()
                continue
            started = time.perf_counter()
            records = [
                InRecord(m.key, m.value, tp.topic, tp.partition, m.offset)
                for tp, msgs in polled.items()
                for m in msgs
            ]
            await self._handle_until_done(records)
            offsets = {
                TopicPartition(tp.topic, tp.partition): msgs[-1].offset + 1 for tp, msgs in polled.items()
            }
            try:
                await self.consumer.commit(offsets)
                self._committed.update(offsets)
            except (CommitFailedError, KafkaError) as exc:
                # A rebalance took the partitions away mid-batch. The new owner re-reads from the last
                # committed offset; the stages are idempotent, so a re-read batch changes nothing.
                self.stats.commit_failures += 1
                commit_failures.inc()
                log.warning("offset commit failed: %s", exc, extra={"agent": self.agent_name})
            self.stats.consumed += len(records)
            self.stats.batches += 1
            self.stats.last_batch_at = time.time()
            received.inc(len(records))
            batch_n.observe(len(records))
            batch_s.observe(time.perf_counter() - started)
            await self._update_lag()

    async def _update_lag(self) -> None:
        """The consumer-lag gauge per assigned partition: high watermark (known from the fetch responses) minus
        the offset this group committed. At most every LAG_EVERY_S; a partition's committed offset is asked of
        Kafka once, when this agent has not committed it yet. Partitions no longer assigned are set to 0."""
        loop = asyncio.get_running_loop()
        if self.consumer is None or loop.time() < self._lag_at:
            return
        self._lag_at = loop.time() + LAG_EVERY_S
        gauge = metrics().consumer_lag
        assigned = set(self.consumer.assignment())
        for tp in assigned - self._lag_tps:  # (re)assigned: another member may have committed since
            self._committed.pop(tp, None)
        try:
            for tp in assigned:
                high = self.consumer.highwater(tp)
                if high is None:
                    continue
                committed = self._committed.get(tp)
                if committed is None:
                    committed = await self.consumer.committed(tp)
                    if committed is None:  # nothing committed yet: the group starts at the beginning
                        committed = (await self.consumer.beginning_offsets([tp]))[tp]
                    self._committed[tp] = committed
                gauge.labels(self.agent_name, tp.topic, str(tp.partition)).set(max(high - committed, 0))
        except KafkaError as exc:  # a rebalance or the broker away: the next round tries again
            log.debug("consumer lag not updated: %s", exc, extra={"agent": self.agent_name})
        for tp in self._lag_tps - assigned:
            gauge.labels(self.agent_name, tp.topic, str(tp.partition)).set(0)
            self._committed.pop(tp, None)
        self._lag_tps = assigned

    async def _poll(self) -> dict[TopicPartition, list]:
        """One batch: it opens with the first message(s) `getmany` returns and closes at `max_records` or
        `linger_ms` later, whichever comes first (Kafka's producer linger, Snuba's max batch time). Large
        batches amortise each stage's fixed cost per batch — for the sink one part per table, and the merges
        that follow: at 5k-event batches the sink spent ~2× the CPU per event it spends at 30–50k — at the
        price of at most `linger_ms` more latency."""
        assert self.consumer is not None
        polled = await self.consumer.getmany(timeout_ms=self.poll_timeout_ms, max_records=self.max_records)
        if not polled or self.linger_ms <= 0:
            return polled
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.linger_ms / 1000
        n = sum(len(msgs) for msgs in polled.values())
        while n < self.max_records and not self.should_stop:
            left_ms = int((deadline - loop.time()) * 1000)
            if left_ms <= 0:
                break
            more = await self.consumer.getmany(
                timeout_ms=min(left_ms, self.poll_timeout_ms), max_records=self.max_records - n
            )
            for tp, msgs in more.items():
                polled.setdefault(tp, []).extend(msgs)
                n += len(msgs)
        return polled

    async def _handle_until_done(self, records: list[InRecord]) -> None:
        batch = self.prepare(records) if self.prepare is not None else records
        delay = min(0.2, self.max_retry_delay_s)
        while True:
            try:
                await self.handler(batch)
                return
            except RetryableError as exc:
                self.stats.retries += 1
                metrics().pipeline_retries.labels(self.agent_name).inc()
                log.warning(
                    "batch of %d failed, retrying in %.1fs: %s",
                    len(records),
                    delay,
                    exc,
                    extra={"agent": self.agent_name},
                )
                if self.should_stop:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_delay_s)
