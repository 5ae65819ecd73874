"""The poll scheduler: polls every active provider connection on schedule and publishes its buckets.

    await run_scheduler(settings, engine, producer, stop_event)     # inside `joulestream up`
    results = await PollScheduler(settings, engine, producer, secrets=...).run_once()   # tests

Every `tick` the scheduler asks the control plane for due connections (`next_poll_at` passed, or a manual
sync requested), claims each with a lease (several poller processes never poll one connection at once),
and polls it:

1. window: from min(cursor, now − lookback) — the cursor is where the last successful poll ended, so a
   poller that was down catches up; the lookback (never less than the last completed bucket) re-reads
   recent buckets for late corrections — to the end of the current bucket, at most `max_window` back; a
   new connection starts `initial_backfill` back;
2. fetch every page of the provider's usage API (pollers/<provider>.py);
3. compare each bucket with its stored state (`connection_buckets`): new or changed buckets become
   UsageEvents with a deterministic event_id and a new revision (pollers/base.py); unchanged ones are
   skipped; buckets that vanished from a fully fetched window are re-published as zero;
4. publish to `usage.raw.v1` and wait for Kafka's acks; only then store the bucket states, advance the
   cursor and schedule the next poll (`interval` later). A crash in between re-publishes the same
   (event_id, revision) pairs on the next poll, which the pipeline drops as duplicates.

Failures: 401/403 → the connection is `disabled` (never polled again). Other provider errors (429 after
retries, 5xx, timeouts, malformed responses) → `consecutive_failures` + 1 and exponential backoff
(`backoff_base` × 2^(n−1), at most `backoff_max`, at least the provider's Retry-After); after
`max_failures` the status becomes `error` (still retried every `backoff_max`; a success restores
`active`). A Kafka outage postpones the poll without counting against the connection.

Configuration (environment, all optional):
JOULESTREAM_POLL_INTERVAL_S (3600), JOULESTREAM_POLL_LOOKBACK_H (48), JOULESTREAM_POLL_BACKFILL_DAYS (7),
JOULESTREAM_POLL_MAX_FAILURES (5), JOULESTREAM_POLL_TICK_S (15), and the provider base URLs
JOULESTREAM_{OPENAI,ANTHROPIC,OPENROUTER}_BASE_URL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
from aiokafka.errors import KafkaError
from sqlalchemy import Engine

from controlplane.connections import Connection
from controlplane.poll_state import BucketWrite, PollState
from core.contracts import UsageEvent
from core.kafka import OutRecord, send_many
from core.secrets import SecretStore, SecretStoreError, redact
from core.settings import Settings
from providers import base_urls, client_for
from providers.base import (
    USER_AGENT,
    ZERO_CONTENT_HASH,
    AuthError,
    HttpPolicy,
    ProviderError,
    RateLimited,
    Sleep,
    content_hash,
    event_id_for,
    floor_to,
    next_revision,
    to_event,
)

log = logging.getLogger("joulestream.pollers.scheduler")

ZERO = {
    "input_tokens_uncached": 0,
    "input_tokens_cached": 0,
    "input_tokens_cache_creation": 0,
    "output_tokens": 0,
    "request_count": 0,
}


@dataclass
class PollerConfig:
    interval: timedelta = timedelta(hours=1)
    lookback: timedelta = timedelta(hours=48)
    initial_backfill: timedelta = timedelta(days=7)
    max_window: timedelta = timedelta(days=31)
    max_failures: int = 5
    backoff_base: timedelta = timedelta(minutes=1)
    backoff_max: timedelta = timedelta(hours=1)
    kafka_retry: timedelta = timedelta(minutes=1)
    tick_s: float = 15.0
    lease: timedelta = timedelta(minutes=15)
    concurrency: int = 4
    base_urls: dict[str, str] = field(default_factory=base_urls)
    http: HttpPolicy = field(default_factory=HttpPolicy)
    publish_timeout_s: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> PollerConfig:
        e = os.environ if env is None else env

        def num(name: str, default: float) -> float:
            raw = e.get(name)
            if not raw:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{name} must be a number, got {raw!r}") from None
            if value <= 0:
                raise ValueError(f"{name} must be positive")
            return value

        cfg = cls(
            interval=timedelta(seconds=num("JOULESTREAM_POLL_INTERVAL_S", 3600)),
            lookback=timedelta(hours=num("JOULESTREAM_POLL_LOOKBACK_H", 48)),
            initial_backfill=timedelta(days=num("JOULESTREAM_POLL_BACKFILL_DAYS", 7)),
            max_failures=int(num("JOULESTREAM_POLL_MAX_FAILURES", 5)),
            tick_s=num("JOULESTREAM_POLL_TICK_S", 15),
            base_urls=base_urls(e),
        )
        return replace(cfg, **overrides)

    def backoff(self, failures: int) -> timedelta:
        """Delay after the `failures`-th consecutive failure (1, 2, …)."""
        exp = min(max(failures - 1, 0), 30)
        return min(self.backoff_base * (2**exp), self.backoff_max)


@dataclass
class PollResult:
    connection_id: str
    provider: str
    outcome: Literal["ok", "failed", "disabled", "postponed"]
    published: int = 0
    unchanged: int = 0
    zeroed: int = 0
    window: tuple[datetime, datetime] | None = None
    error: str | None = None
    status: str | None = None  # the connection's status afterwards


class PollScheduler:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        producer: Any,
        *,
        secrets: SecretStore,
        config: PollerConfig | None = None,
        sleep: Sleep | None = None,
        owner: str | None = None,
    ) -> None:
        self.settings = settings
        self.repo = PollState(engine)
        self.producer = producer
        self.secrets = secrets
        self.config = config or PollerConfig.from_env()
        self._sleep = sleep
        self.owner = owner or f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._last_success: datetime | None = None
        self._http: httpx.AsyncClient | None = None

    # ----------------------------------------------------------------------------------------- public

    def last_poll_at(self) -> datetime | None:
        """The newest successful poll (this process, or any poller via the control plane): for /health."""
        try:
            stored = self.repo.last_poll_at()
        except Exception:  # noqa: BLE001 - health must answer even if the database is down
            stored = None
        candidates = [t for t in (stored, self._last_success) if t is not None]
        return max(candidates) if candidates else None

    async def run(self, stop_event: asyncio.Event) -> None:
        """Poll until `stop_event` is set (checks for due connections every `tick_s`)."""
        log.info(
            "poll scheduler started",
            extra={"owner": self.owner, "interval_s": self.config.interval.total_seconds()},
        )
        try:
            while not stop_event.is_set():
                try:
                    await self.run_once()
                except Exception:
                    log.exception("poll round failed")
                try:
                    await asyncio.wait_for(stop_event.wait(), timeout=self.config.tick_s)
                except TimeoutError:
                    pass
        finally:
            await self.aclose()
            log.info("poll scheduler stopped", extra={"owner": self.owner})

    async def run_once(self, now: datetime | None = None) -> list[PollResult]:
        """Poll every connection that is due now (or has a sync request). Returns one result per poll."""
        now = now or datetime.now(UTC)
        ids = await asyncio.to_thread(self.repo.due, now)
        if not ids:
            return []
        sem = asyncio.Semaphore(self.config.concurrency)

        async def one(cid: str) -> PollResult | None:
            async with sem:
                return await self.poll_connection(cid, now)

        results = await asyncio.gather(*(one(cid) for cid in ids))
        return [r for r in results if r is not None]

    async def poll_connection(self, connection_id: str, now: datetime | None = None) -> PollResult | None:
        """Claim and poll one connection; None when another poller holds it or it is gone/disabled."""
        now = now or datetime.now(UTC)
        conn = await asyncio.to_thread(self.repo.claim, connection_id, self.owner, now, self.config.lease)
        if conn is None:
            return None
        try:
            return await self._poll(conn, now)
        except Exception as exc:
            log.exception("poll crashed", extra={"connection_id": conn.id, "provider": conn.provider})
            ctx = {"connection_id": conn.id, "org_id": conn.org_id, "provider": conn.provider}
            return await self._failed(conn, now, f"internal error: {type(exc).__name__}", exc, ctx)
        except BaseException:  # cancelled: let another poller take it at once
            await asyncio.to_thread(self.repo.release, conn.id, self.owner)
            raise

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # ----------------------------------------------------------------------------------------- internals

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=self.config.http.timeout_s, headers={"User-Agent": USER_AGENT}
            )
        return self._http

    def window(self, conn: Connection, width: timedelta, now: datetime) -> tuple[datetime, datetime]:
        cursor = conn.poll_cursor or (now - self.config.initial_backfill)
        # the lookback never covers less than the last completed bucket: a daily provider (OpenRouter) re-reads
        # yesterday even when the lookback is shorter than a day
        start = min(cursor, now - self.config.lookback, floor_to(now, width) - width)
        start = max(start, now - self.config.max_window)
        return floor_to(start, width), floor_to(now, width) + width

    async def _poll(self, conn: Connection, now: datetime) -> PollResult:
        ctx = {"connection_id": conn.id, "org_id": conn.org_id, "provider": conn.provider}
        secret: str | None = None
        try:
            if not conn.secret_ref:
                raise SecretStoreError("the connection has no stored key")
            secret = await asyncio.to_thread(self.secrets.get, conn.secret_ref, conn.id)
            client = client_for(
                conn.provider,
                secret,
                base_url=self.config.base_urls.get(conn.provider),
                http=self.http,
                policy=self.config.http,
                sleep=self._sleep,
            )
            start, end = self.window(conn, client.bucket_width, now)
            buckets = await client.fetch(start, end)
            coverage = client.coverage(start, end)
        except AuthError as exc:
            error = redact(str(exc), secret)
            await asyncio.to_thread(
                self.repo.disable, conn.id, self.owner, now=now, claimed_at=now, error=error
            )
            log.warning("provider rejected the key: connection disabled", extra={**ctx, "error": error})
            return PollResult(conn.id, conn.provider, "disabled", error=error, status="disabled")
        except (ProviderError, SecretStoreError) as exc:
            return await self._failed(conn, now, redact(str(exc), secret), exc, ctx)

        states = await asyncio.to_thread(self.repo.bucket_states, conn.id, start)
        workload = await asyncio.to_thread(self.repo.active_workload, conn.org_id, conn.id)
        events: list[UsageEvent] = []
        writes: list[BucketWrite] = []
        seen: set[str] = set()
        unchanged = zeroed = 0
        for b in buckets:
            eid = event_id_for(conn.id, b)
            seen.add(eid)
            digest = content_hash(b)
            state = states.get(eid)
            if state is not None and state.content_hash == digest:
                unchanged += 1
                continue
            if state is not None:  # a correction keeps the bucket's original attribution
                prev = UsageEvent.model_validate_json(state.event)
                project_id, workload_id = prev.project_id, prev.workload_id
            else:
                project_id, workload_id = workload.project_id, workload.id
            ev = to_event(
                b,
                event_id=eid,
                revision=next_revision(now, state.revision if state else None),
                org_id=conn.org_id,
                project_id=project_id,
                workload_id=workload_id,
                connection_id=conn.id,
            )
            events.append(ev)
            writes.append(BucketWrite(eid, b.bucket_start, digest, ev.revision, ev.model_dump_json()))
        if coverage is not None:
            zero_digest = ZERO_CONTENT_HASH
            for eid, state in states.items():
                if eid in seen or not (coverage[0] <= state.bucket_start < coverage[1]):
                    continue
                if state.content_hash == zero_digest:
                    continue
                prev = UsageEvent.model_validate_json(state.event)
                ev = UsageEvent.model_validate(
                    {**prev.model_dump(), **ZERO, "revision": next_revision(now, state.revision)}
                )
                events.append(ev)
                writes.append(
                    BucketWrite(eid, state.bucket_start, zero_digest, ev.revision, ev.model_dump_json())
                )
                zeroed += 1

        if events:
            try:
                await asyncio.wait_for(
                    send_many(
                        self.producer,
                        self.settings.raw_topic,
                        [OutRecord(e.event_id.encode(), e.model_dump_json().encode()) for e in events],
                    ),
                    self.config.publish_timeout_s,
                )
            except (KafkaError, TimeoutError, OSError) as exc:
                retry = now + self.config.kafka_retry
                await asyncio.to_thread(self.repo.postpone, conn.id, self.owner, next_poll_at=retry)
                log.warning(
                    "publishing poller events failed; poll postponed",
                    extra={**ctx, "error": type(exc).__name__, "events": len(events)},
                )
                return PollResult(
                    conn.id,
                    conn.provider,
                    "postponed",
                    window=(start, end),
                    error=f"kafka: {type(exc).__name__}",
                )

        finished = datetime.now(UTC)
        await asyncio.to_thread(
            self.repo.record_success,
            conn.id,
            self.owner,
            now=finished,
            claimed_at=now,
            cursor=floor_to(now, client.bucket_width),
            next_poll_at=now + self.config.interval,
            writes=writes,
            prune_before=start - client.bucket_width,
        )
        self._last_success = finished
        log.info(
            "polled",
            extra={
                **ctx,
                "window_start": start.isoformat(),
                "window_end": end.isoformat(),
                "buckets": len(buckets),
                "published": len(events),
                "unchanged": unchanged,
                "zeroed": zeroed,
                "requests": client.requests,
            },
        )
        return PollResult(
            conn.id,
            conn.provider,
            "ok",
            published=len(events),
            unchanged=unchanged,
            zeroed=zeroed,
            window=(start, end),
            status="active",
        )

    async def _failed(
        self, conn: Connection, now: datetime, error: str, exc: Exception, ctx: dict
    ) -> PollResult:
        failures = conn.consecutive_failures + 1
        delay = self.config.backoff(failures)
        if conn.status == "error":
            delay = self.config.backoff_max
        if isinstance(exc, RateLimited) and exc.retry_after:
            delay = max(delay, timedelta(seconds=exc.retry_after))
        after = await asyncio.to_thread(
            self.repo.record_failure,
            conn.id,
            self.owner,
            now=now,
            claimed_at=now,
            error=error,
            next_poll_at=now + delay,
            max_failures=self.config.max_failures,
        )
        status = after.status if after else None
        log.warning(
            "poll failed",
            extra={
                **ctx,
                "error": error,
                "consecutive_failures": failures,
                "retry_in_s": delay.total_seconds(),
                "status": status,
            },
        )
        return PollResult(conn.id, conn.provider, "failed", error=error, status=status)


def last_poll_at(engine: Engine) -> datetime | None:
    """The newest successful poll of any live connection, from the control plane (for /health in a process
    that does not run the scheduler itself)."""
    return PollState(engine).last_poll_at()


async def run_scheduler(
    settings: Settings,
    engine: Engine,
    producer: Any,
    stop_event: asyncio.Event,
    *,
    secrets: SecretStore | None = None,
    config: PollerConfig | None = None,
    embedded_demo: bool | None = None,
) -> None:
    """Run the poll scheduler until `stop_event` is set. `producer` is a started aiokafka producer (not
    stopped here). The secret store defaults to `core.secrets.SecretStores.from_env` (which refuses to
    start without JOULESTREAM_MASTER_KEY outside the embedded demo)."""
    if secrets is None:
        from core.secrets import SecretStores

        secrets = (
            SecretStores.from_settings(settings)
            if embedded_demo is None
            else SecretStores.from_env(settings.home, embedded_demo=embedded_demo)
        )
    scheduler = PollScheduler(settings, engine, producer, secrets=secrets, config=config)
    await scheduler.run(stop_event)
