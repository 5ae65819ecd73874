"""Background publisher of the gateway's usage events: memory → Kafka, or memory → spool → Kafka.

The request path only calls `publish(key, value)`: an append to an in-memory deque, never a wait on Kafka.
One background task drains the deque in order, in batches gathered for up to `linger_s` (20 ms):

- *direct* mode (spool empty): each batch goes to `usage.raw.v1` with `send_many`, bounded by
  `send_timeout_s`. A failure or timeout (Kafka unreachable or slow) appends the batch to the spool and
  switches to *spooling* mode.
- *spooling* mode: every batch is appended to the spool (fsync'd) — so order is kept — and, at most every
  `retry_s`, the task reconnects (recreating the topics if the broker lost them) and replays the spool
  from its cursor in append order. When the spool is empty again it switches back to direct mode.

A batch whose send timed out may still reach Kafka later and then also be replayed from the spool: delivery
is at least once, and the pipeline's exactly-once *effect* (dedup by event_id) absorbs the duplicate.
On stop, whatever Kafka does not take within `drain_timeout_s` is spooled. A crash loses at most the
in-memory deque (events of the last few milliseconds, not yet sent nor spooled).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from core.kafka import OutRecord, ensure_topics, producer, send_many
from core.settings import Settings
from pipelines.gateway.spool import Record, Spool

log = logging.getLogger("joulestream.gateway.publisher")


class UsagePublisher:
    def __init__(
        self,
        settings: Settings,
        spool: Spool,
        *,
        batch_max: int = 2000,
        replay_chunk: int = 5000,
        send_timeout_s: float = 5.0,
        connect_timeout_s: float = 5.0,
        retry_s: float = 1.0,
        linger_s: float = 0.02,
        producer_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.settings, self.spool = settings, spool
        self.topic = settings.raw_topic
        self.batch_max, self.replay_chunk, self.linger_s = batch_max, replay_chunk, linger_s
        self.send_timeout_s, self.connect_timeout_s, self.retry_s = send_timeout_s, connect_timeout_s, retry_s
        self._producer_factory = producer_factory or (
            lambda: producer(settings, request_timeout_ms=int(send_timeout_s * 1000), linger_ms=1)
        )
        self._queue: deque[Record] = deque()
        self._wake = asyncio.Event()
        self._producer: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._drain_deadline = float("inf")
        self._next_attempt = 0.0
        self.kafka_state = "connecting"
        self.last_error: str | None = None
        self.sent = 0  # records acked by Kafka directly
        self.spooled = 0  # records that went through the spool
        self.accepted = 0

    # ------------------------------------------------------------------------------------------ API
    def publish(self, key: bytes | None, value: bytes) -> None:
        """Queue one record. Never blocks, never raises for Kafka's sake."""
        self._queue.append((key, value))
        self.accepted += 1
        if len(self._queue) == 1 or len(self._queue) >= self.batch_max:
            self._wake.set()

    @property
    def full(self) -> bool:
        """The spool has reached its bound: the gateway must refuse new requests."""
        return self.spool.full

    def stats(self) -> dict[str, Any]:
        return {
            "kafka": self.kafka_state,
            "topic": self.topic,
            "queued": len(self._queue),
            "sent": self.sent,
            "spooled": self.spooled,
            "last_error": self.last_error,
            "spool": self.spool.stats(),
        }

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway-usage-publisher")

    async def stop(self, drain_timeout_s: float = 5.0) -> None:
        """Flush: send what Kafka takes within `drain_timeout_s`, spool the rest, close."""
        self._stopping = True
        self._drain_deadline = time.monotonic() + drain_timeout_s
        self._wake.set()
        if self._task is not None:
            try:  # the task ends by itself: sends are bounded by the deadline, spool appends are quick
                await asyncio.wait_for(asyncio.shield(self._task), drain_timeout_s + 30)
            except TimeoutError:
                log.error("usage publisher did not stop in time; spooling what is queued")
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        if self._queue:
            await asyncio.to_thread(self.spool.append, list(self._queue))
            self.spooled += len(self._queue)
            self._queue.clear()
        await self._close_producer()

    # ------------------------------------------------------------------------------------------ loop
    def _take(self) -> list[Record]:
        n = min(len(self._queue), self.batch_max)
        return [self._queue.popleft() for _ in range(n)]

    async def _run(self) -> None:
        await self._ensure_producer()  # connect early: /health tells the truth before the first event
        while True:
            if not self._queue:
                if self._stopping:
                    return
                # idle: wait for new events, or (with a spool to replay) for the next connection attempt
                timeout = None if self.spool.empty else self._next_attempt - time.monotonic()
                if timeout is None or timeout > 0:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout)
                    continue
            if self.linger_s and len(self._queue) < self.batch_max and not self._stopping:
                await asyncio.sleep(
                    self.linger_s
                )  # gather a batch: one produce request per linger, not per event
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let the publisher die: log, back off, go on
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("usage publisher step failed")
                await asyncio.sleep(0.5)
            await asyncio.sleep(0)  # let the request path run between steps

    async def _step(self) -> None:
        batch = self._take()
        if self.spool.empty and batch:
            if await self._send(batch):
                self.sent += len(batch)
                return
            await self._to_spool(batch)
            return
        if batch:
            await self._to_spool(batch)
        if not self.spool.empty and not self._queue:
            await self._replay()
        elif not self.spool.empty and time.monotonic() >= self._next_attempt:
            await self._replay()

    async def _to_spool(self, batch: list[Record]) -> None:
        try:
            await asyncio.to_thread(self.spool.append, batch)
        except BaseException:
            self._queue.extendleft(reversed(batch))  # keep them (in order) for the next attempt
            raise
        self.spooled += len(batch)

    async def _replay(self) -> None:
        """Replay the spool in order while Kafka takes it (at most ~4 chunks per call, so newly arriving
        events are spooled in between and memory stays bounded)."""
        if self._stopping or time.monotonic() < self._next_attempt:
            return
        for _ in range(4):
            if self.spool.empty:
                return
            records, position = await asyncio.to_thread(self.spool.read, self.replay_chunk)
            if not records:
                return
            if not await self._send(records):
                return
            await asyncio.to_thread(self.spool.commit, position, len(records))
            if self.spool.empty:
                log.info("usage spool drained: back to direct publishing")

    # ------------------------------------------------------------------------------------------ kafka
    async def _ensure_producer(self) -> bool:
        if self._producer is not None:
            return True
        if time.monotonic() < self._next_attempt:
            return False
        timeout = min(self.connect_timeout_s, self._drain_deadline - time.monotonic())
        if timeout <= 0:
            return False
        p = self._producer_factory()
        try:
            await asyncio.wait_for(p.start(), timeout)
            await asyncio.wait_for(ensure_topics(self.settings, timeout_s=timeout), timeout + 1)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to connect means "Kafka unavailable": spool
            self._fail(exc)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(p.stop(), 1.0)
            return False
        self._producer = p
        self.kafka_state = "connected"
        return True

    async def _send(self, records: list[Record]) -> bool:
        timeout = min(self.send_timeout_s, self._drain_deadline - time.monotonic())
        if timeout <= 0 or not await self._ensure_producer():
            return False
        try:
            await asyncio.wait_for(
                send_many(self._producer, self.topic, [OutRecord(k, v) for k, v in records]), timeout
            )
            return True
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any send failure means "Kafka unavailable": spool
            self._fail(exc)
            await self._close_producer()
            return False

    def _fail(self, exc: BaseException) -> None:
        was = self.kafka_state
        self.kafka_state = "unavailable"
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        self._next_attempt = time.monotonic() + self.retry_s
        if was != "unavailable":
            log.warning("Kafka unavailable, spooling usage events to disk: %s", self.last_error)

    async def _close_producer(self) -> None:
        p, self._producer = self._producer, None
        if p is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(p.stop(), 2.0)
