"""The poll scheduler: polls every active provider connection on schedule and publishes its buckets.

    await run_scheduler(settings, engine, producer, stop_event)     # inside `joulestream up`
    results = await PollScheduler(settings, engine, producer, secrets=...).run_once()   # tests

Every `tick` the scheduler asks the control plane for due connections (`next_poll_at` passed, or a manual
sync requested), claims each with a lease (several poller processes never poll one connection at once),
and polls it:

1. window (`window`): from min(cursor, now − lookback) — the cursor is where the last successful poll ended, so a
   poller that was down catches up; the lookback (never less than the last completed bucket) re-reads
   recent buckets for late corrections — to the end of the current bucket, at most `max_window` back; a
   new connection starts `initial_backfill` back;
2. fetch every page of the provider's usage API (`_fetch`, providers/<provider>.py);
3. compare (`_changes`) each bucket with its stored state (`connection_buckets`): new or changed buckets become
   UsageEvents with a deterministic event_id and a new revision (providers/base.py); unchanged ones are
   skipped; buckets that vanished from a fully fetched window are re-published as zero;
4. publish (`_publish`) to `usage.raw.v1` and wait for Kafka's acks; only then (`_record_success`) store the bucket states, advance the
   cursor and schedule the next poll (`interval` later). A crash in between re-publishes the same
   (event_id, revision) pairs on the next poll, which the pipeline drops as duplicates.

Failures: 401/403 → the connection is `disabled` (never polled again). Other provider errors (429 after
retries, 5xx, timeouts, malformed responses) → `consecutive_failures` + 1 and exponential backoff
(`backoff_base` × 2^(n−1), at most `backoff_max`, at least the provider's Retry-After); after
`max_failures` the status becomes `error` (still retried every `backoff_max`; a success restores
`active`). A Kafka outage postpones the poll without counting against the connection.

Configuration: `PollerConfig.from_settings(settings)`, from the `core.settings.Settings` fields poll_interval_s
(3600), poll_lookback_h (48), poll_backfill_days (7), poll_max_failures (5), poll_tick_s (15) and the provider
base URLs {openai,anthropic,openrouter}_base_url (JOULESTREAM_POLL_INTERVAL_S, …).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
from aiokafka.errors import KafkaError
from sqlalchemy import Engine

from controlplane.connections import Connection, Connections
from controlplane.poll_state import BucketWrite, PollState
from core.contracts import UsageEvent
from core.kafka import OutRecord, send_many
from core.metrics import record_poll
from core.secrets import SecretStore, SecretStoreError, redact
from core.settings import Settings
from providers import base_urls, client_for
from providers.base import (
    EXTRA_FIGURES,
    USER_AGENT,
    ZERO_CONTENT_HASH,
    AuthError,
    HttpPolicy,
    ProviderClient,
    ProviderError,
    RateLimited,
    Sleep,
    UsageBucket,
    content_hash,
    event_id_for,
    floor_to,
    next_revision,
    to_event,
)
from providers.openrouter import apply_byok

log = logging.getLogger("joulestream.pollers.scheduler")

ZERO = {
    "input_tokens_uncached": 0,
    "input_tokens_cached": 0,
    "input_tokens_cache_creation": 0,
    "output_tokens": 0,
    "request_count": 0,
    **dict.fromkeys(EXTRA_FIGURES, 0),
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
    base_urls: dict[str, str] = field(default_factory=dict)  # provider → URL; missing: its public API
    http: HttpPolicy = field(default_factory=HttpPolicy)
    publish_timeout_s: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> PollerConfig:
        """The configuration of `settings` (validated there: every figure positive), with `overrides`."""
        cfg = cls(
            interval=timedelta(seconds=settings.poll_interval_s),
            lookback=timedelta(hours=settings.poll_lookback_h),
            initial_backfill=timedelta(days=settings.poll_backfill_days),
            max_failures=settings.poll_max_failures,
            tick_s=settings.poll_tick_s,
            base_urls=base_urls(settings),
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
    notes: list[str] = field(default_factory=list)  # what the poll noticed (odd buckets, BYOK overlap)


@dataclass
class _Fetched:
    """What one poll read from the provider."""

    client: ProviderClient
    start: datetime
    end: datetime
    buckets: list[UsageBucket]
    coverage: tuple[datetime, datetime] | None  # where a missing bucket means "gone"; None: unknown
    notes: list[str] = field(default_factory=list)


@dataclass
class _Changes:
    """The events one poll publishes and the bucket states it stores once Kafka has them."""

    events: list[UsageEvent] = field(default_factory=list)
    writes: list[BucketWrite] = field(default_factory=list)
    unchanged: int = 0
    zeroed: int = 0

    def add(self, event_id: str, ev: UsageEvent, bucket_start: datetime, digest: str) -> None:
        self.events.append(ev)
        self.writes.append(BucketWrite(event_id, bucket_start, digest, ev.revision, ev.model_dump_json()))


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
        self.config = config or PollerConfig.from_settings(settings)
        self._sleep = sleep
        self.owner = owner or f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._http: httpx.AsyncClient | None = None

    # ----------------------------------------------------------------------------------------- public

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
            result = await self._poll(conn, now)
        except Exception as exc:
            log.exception("poll crashed", extra={"connection_id": conn.id, "provider": conn.provider})
            ctx = {"connection_id": conn.id, "org_id": conn.org_id, "provider": conn.provider}
            result = await self._failed(conn, now, f"internal error: {type(exc).__name__}", exc, ctx)
        except BaseException:  # cancelled: let another poller take it at once
            await asyncio.to_thread(self.repo.release, conn.id, self.owner)
            raise
        record_poll(result.provider, result.outcome, result.published)
        return result

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
        """Steps 1–4 of the module docstring for one claimed connection."""
        ctx = {"connection_id": conn.id, "org_id": conn.org_id, "provider": conn.provider}
        fetched = await self._fetch(conn, now, ctx)
        if isinstance(fetched, PollResult):
            return fetched
        changes = await self._changes(conn, fetched, now)
        if changes.events:
            postponed = await self._publish(conn, now, fetched, changes, ctx)
            if postponed is not None:
                return postponed
        return await self._record_success(conn, now, fetched, changes, ctx)

    async def _fetch(self, conn: Connection, now: datetime, ctx: dict) -> _Fetched | PollResult:
        """Read the key, choose the window and fetch its buckets; a failure is recorded and returned."""
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
            if conn.provider == "openrouter":
                # BYOK: a connection to the upstream added (or removed) later backfills `initial_backfill`, so
                # OpenRouter re-reads as far back and corrects those days too (never counted twice)
                start = min(start, floor_to(now - self.config.initial_backfill, client.bucket_width))
            buckets = await client.fetch(start, end)
            notes = list(client.notes)
            if conn.provider == "openrouter":  # BYOK tokens another connection of the org already counts
                buckets, byok_notes = apply_byok(
                    buckets, await asyncio.to_thread(self._polled_upstreams, conn)
                )
                notes += byok_notes
            return _Fetched(client, start, end, buckets, client.coverage(start, end), notes)
        except AuthError as exc:
            error = redact(str(exc), secret)
            await asyncio.to_thread(
                self.repo.disable, conn.id, self.owner, now=now, claimed_at=now, error=error
            )
            log.warning("provider rejected the key: connection disabled", extra={**ctx, "error": error})
            return PollResult(conn.id, conn.provider, "disabled", error=error, status="disabled")
        except (ProviderError, SecretStoreError) as exc:
            return await self._failed(conn, now, redact(str(exc), secret), exc, ctx)

    def _polled_upstreams(self, conn: Connection) -> set[str]:
        """Providers the org polls through its other live connections (not disabled)."""
        return {
            c.provider
            for c in Connections(self.repo.engine).list(conn.org_id)
            if c.id != conn.id and c.status != "disabled"
        }

    async def _changes(self, conn: Connection, fetched: _Fetched, now: datetime) -> _Changes:
        """The events to publish: new or changed buckets, and stored buckets that vanished (as zero)."""
        states = await asyncio.to_thread(self.repo.bucket_states, conn.id, fetched.start)
        workload = await asyncio.to_thread(self.repo.active_workload, conn.org_id, conn.id)
        changes = _Changes()
        seen: set[str] = set()
        for b in fetched.buckets:
            eid = event_id_for(conn.id, b)
            seen.add(eid)
            digest = content_hash(b)
            state = states.get(eid)
            if state is not None and state.content_hash == digest:
                changes.unchanged += 1
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
            changes.add(eid, ev, b.bucket_start, digest)
        if fetched.coverage is None:  # the provider cannot say a bucket is gone
            return changes
        for eid, state in states.items():
            if eid in seen or not (fetched.coverage[0] <= state.bucket_start < fetched.coverage[1]):
                continue
            if state.content_hash == ZERO_CONTENT_HASH:
                continue
            prev = UsageEvent.model_validate_json(state.event)
            ev = UsageEvent.model_validate(
                {**prev.model_dump(), **ZERO, "revision": next_revision(now, state.revision)}
            )
            changes.add(eid, ev, state.bucket_start, ZERO_CONTENT_HASH)
            changes.zeroed += 1
        return changes

    async def _publish(
        self, conn: Connection, now: datetime, fetched: _Fetched, changes: _Changes, ctx: dict
    ) -> PollResult | None:
        """Publish the events and wait for Kafka's acks; on a Kafka failure postpone the poll (no failure
        counted) and return its result, else None."""
        try:
            await asyncio.wait_for(
                send_many(
                    self.producer,
                    self.settings.raw_topic,
                    [OutRecord(e.event_id.encode(), e.model_dump_json().encode()) for e in changes.events],
                ),
                self.config.publish_timeout_s,
            )
        except (KafkaError, TimeoutError, OSError) as exc:
            retry = now + self.config.kafka_retry
            await asyncio.to_thread(self.repo.postpone, conn.id, self.owner, next_poll_at=retry)
            log.warning(
                "publishing poller events failed; poll postponed",
                extra={**ctx, "error": type(exc).__name__, "events": len(changes.events)},
            )
            return PollResult(
                conn.id,
                conn.provider,
                "postponed",
                window=(fetched.start, fetched.end),
                error=f"kafka: {type(exc).__name__}",
            )
        return None

    async def _record_success(
        self, conn: Connection, now: datetime, fetched: _Fetched, changes: _Changes, ctx: dict
    ) -> PollResult:
        """Store the bucket states, advance the cursor and schedule the next poll."""
        width = fetched.client.bucket_width
        finished = datetime.now(UTC)
        await asyncio.to_thread(
            self.repo.record_success,
            conn.id,
            self.owner,
            now=finished,
            claimed_at=now,
            cursor=floor_to(now, width),
            next_poll_at=now + self.config.interval,
            writes=changes.writes,
            prune_before=fetched.start - width,
            notes=fetched.notes,
        )
        log.info(
            "polled",
            extra={
                **ctx,
                "window_start": fetched.start.isoformat(),
                "window_end": fetched.end.isoformat(),
                "buckets": len(fetched.buckets),
                "published": len(changes.events),
                "unchanged": changes.unchanged,
                "zeroed": changes.zeroed,
                "requests": fetched.client.requests,
                "notes": fetched.notes,
            },
        )
        return PollResult(
            conn.id,
            conn.provider,
            "ok",
            published=len(changes.events),
            unchanged=changes.unchanged,
            zeroed=changes.zeroed,
            window=(fetched.start, fetched.end),
            status="active",
            notes=fetched.notes,
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
) -> None:
    """Run the poll scheduler until `stop_event` is set. `producer` is a started aiokafka producer (not
    stopped here). The secret store defaults to `core.secrets.SecretStores.from_settings` (which refuses to
    start without a master key outside the embedded demo)."""
    if secrets is None:
        from core.secrets import SecretStores

        secrets = SecretStores.from_settings(settings)
    scheduler = PollScheduler(settings, engine, producer, secrets=secrets, config=config)
    await scheduler.run(stop_event)
