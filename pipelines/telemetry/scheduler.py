"""The GPU telemetry scheduler: scrapes every target on schedule and publishes its closed hours.

    await run_telemetry(settings, engine, producer, stop_event)        # inside `joulestream up`
    results = await TelemetryScraper(settings, engine, producer).run_once(now)   # tests, `joulestream scrape`

Every `telemetry_scrape_s` (default 60 s), for each live target (`controlplane.gpu_targets`):

1. read (`pipelines/telemetry/sources.py`): one scrape of its DCGM exporter and model servers, stamped with the
   scrape time — or the samples a Prometheus server holds since the target's last sample. All or nothing:
   when one endpoint fails nothing is recorded, and the next scrape covers the longer interval for every
   series alike (a gap, spread linearly: `core.methodology.measured`);
2. fold the samples into the hourly increases (`GpuTargets.record_samples`: counter resets, gaps);
3. for every closed hour in the lookback (`telemetry_lookback_h`, default 48), attribute the GPUs' energy to
   the models (`core.methodology.measured.attribute`, prefill/decode weights from the current factor set)
   and build one UsageEvent per (hour, model): deterministic `event_id` (target, hour, model), a revision that
   rises only when the hour's figures change (`providers.base.next_revision`), so a re-scrape of the same
   hour replaces, never adds;
4. publish the changed events to `usage.raw.v1`, wait for Kafka's acks, then store their states.

An hour is published once it is closed (its end has passed and a sample after it was read); a later scrape
that changes it (a gap that ended after the hour, a Prometheus backfill) re-publishes it with a higher
revision. One scraper per deployment (no leases: run it in one process).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from aiokafka.errors import KafkaError
from sqlalchemy import Engine

from controlplane.factor_resolver import FactorResolver
from controlplane.gpu_targets import BucketWrite, GpuTarget, GpuTargets
from core.contracts import MeasuredBoundary, Source, UsageEvent
from core.kafka import OutRecord, send_many
from core.methodology import FactorSet
from core.methodology.measured import HOUR, Tokens, attribute, hour_of, phase_weights
from core.settings import Settings
from pipelines.telemetry.sources import Round, ScrapeError, query_prometheus, scrape_endpoints
from providers.base import next_revision

log = logging.getLogger("joulestream.telemetry")

USER_AGENT = "joulestream-telemetry/1"
METER = "dcgm"


@dataclass
class ScrapeResult:
    target_id: str
    outcome: str  # ok | failed | postponed
    samples: int = 0
    resets: int = 0
    published: int = 0
    unchanged: int = 0
    unattributed_j: float = 0.0  # energy of closed hours with no model to give it to
    error: str | None = None


@dataclass
class _Hour:
    energy_j: float = 0.0
    resets: int = 0
    tokens: dict[str, list[float]] = field(default_factory=dict)  # model → [prompt, generation]


def event_id_for(target_id: str, hour: datetime, model: str) -> str:
    parts = ["joulestream-dcgm-v1", target_id, hour.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), model]
    return "dcgm-" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]


def fold_hours(rows: dict[datetime, dict[str, tuple[float, int]]]) -> dict[datetime, _Hour]:
    """Per hour: the GPUs' energy (J), resets, and each model's prompt / generation tokens."""
    out: dict[datetime, _Hour] = {}
    for h, series in rows.items():
        acc = out.setdefault(h, _Hour())
        for key, (amount, resets) in series.items():
            kind, _, rest = key.partition("|")
            acc.resets += resets
            if kind == "energy":
                acc.energy_j += amount
            else:
                model = rest.rsplit("|", 1)[0]
                pair = acc.tokens.setdefault(model, [0.0, 0.0])
                pair[0 if kind == "prompt" else 1] += amount
    return out


class TelemetryScraper:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        producer: Any,
        *,
        http: httpx.AsyncClient | None = None,
        factors: FactorResolver | None = None,
    ) -> None:
        self.settings = settings
        self.repo = GpuTargets(engine)
        self.producer = producer
        self._http = http
        self._own_http = http is None
        self._factors = factors if factors is not None else FactorResolver(engine)
        self.interval = timedelta(seconds=settings.telemetry_scrape_s)
        self.lookback = timedelta(hours=settings.telemetry_lookback_h)

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=self.settings.telemetry_timeout_s, headers={"User-Agent": USER_AGENT}
            )
        return self._http

    async def aclose(self) -> None:
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    def factor_set(self) -> FactorSet:
        return self._factors.current()  # the built-in latest until the control plane has a version

    async def run(self, stop_event: asyncio.Event) -> None:
        log.info("telemetry scraper started", extra={"interval_s": self.interval.total_seconds()})
        try:
            while not stop_event.is_set():
                try:
                    await self.run_once()
                except Exception:
                    log.exception("telemetry round failed")
                try:
                    await asyncio.wait_for(stop_event.wait(), timeout=self.interval.total_seconds())
                except TimeoutError:
                    pass
        finally:
            await self.aclose()

    async def run_once(self, now: datetime | None = None) -> list[ScrapeResult]:
        now = now or datetime.now(UTC)
        targets = await asyncio.to_thread(self.repo.list)
        round_ = Round(self.http)  # an exporter shared by several targets is read once
        return [await self.scrape_target(t, now, round_) for t in targets]

    async def scrape_target(
        self, target: GpuTarget, now: datetime, round_: Round | None = None
    ) -> ScrapeResult:
        ctx = {"target_id": target.id, "org_id": target.org_id}
        try:
            if target.prometheus_url is not None:
                since = await asyncio.to_thread(self.repo.last_sample_at, target.id)
                start = max(since or now - self.lookback, now - self.lookback)
                samples = await query_prometheus(target, self.http, start, now, self.interval)
            else:
                samples = await scrape_endpoints(target, round_ or Round(self.http), now)
        except ScrapeError as exc:
            await asyncio.to_thread(self.repo.record_error, target.id, str(exc))
            log.warning("telemetry scrape failed", extra={**ctx, "error": str(exc)})
            return ScrapeResult(target.id, "failed", error=str(exc))
        resets = await asyncio.to_thread(self.repo.record_samples, target.id, samples)
        result = ScrapeResult(target.id, "ok", samples=len(samples), resets=resets)
        events, writes = await asyncio.to_thread(self._changes, target, now, result)
        if events:
            try:
                await send_many(
                    self.producer,
                    self.settings.raw_topic,
                    [OutRecord(e.event_id.encode(), e.model_dump_json().encode()) for e in events],
                )
            except (KafkaError, TimeoutError, OSError) as exc:
                log.warning("publishing telemetry events failed", extra={**ctx, "error": type(exc).__name__})
                result.outcome, result.error = "postponed", f"kafka: {type(exc).__name__}"
                return result
        await asyncio.to_thread(
            self.repo.record_published, target.id, writes, now, hour_of(now) - self.lookback - HOUR
        )
        result.published = len(events)
        log.info("telemetry scraped", extra={**ctx, "samples": result.samples, "published": result.published})
        return result

    def _changes(
        self, target: GpuTarget, now: datetime, result: ScrapeResult
    ) -> tuple[list[UsageEvent], list[BucketWrite]]:
        """The events of the closed hours in the lookback whose figures changed since last published."""
        open_hour = hour_of(now)
        since = open_hour - self.lookback
        hours = fold_hours(self.repo.hours(target.id, since, open_hour))
        states = self.repo.bucket_states(target.id, since)
        fs = self.factor_set()
        events: list[UsageEvent] = []
        writes: list[BucketWrite] = []
        for h in sorted(hours):
            acc = hours[h]
            tokens = {m: Tokens(p, g) for m, (p, g) in acc.tokens.items()}
            weights = {m: phase_weights(fs, m) for m in tokens}
            shares = attribute(acc.energy_j, tokens, weights)
            if not shares:
                result.unattributed_j += acc.energy_j
                continue
            for model, energy in shares.items():
                prompt, gen = round(tokens[model].prompt), round(tokens[model].generation)
                if not (prompt or gen or energy):  # a model loaded but idle while others served: nothing
                    continue
                eid = event_id_for(target.id, h, model)
                digest = hashlib.sha256(orjson.dumps([prompt, gen, repr(energy), acc.resets])).hexdigest()
                state = states.get(eid)
                if state is not None and state.content_hash == digest:
                    result.unchanged += 1
                    continue
                labels = {"gpu_target": target.name[:200]}
                if acc.resets:
                    labels["counter_resets"] = str(acc.resets)
                ev = UsageEvent(
                    event_id=eid,
                    revision=next_revision(now, state.revision if state else None),
                    source=Source.telemetry,
                    org_id=target.org_id,
                    project_id=target.project_id,
                    workload_id=target.id,
                    provider=target.provider,
                    model=model,
                    region=target.region,
                    bucket_start=h,
                    bucket_end=h + HOUR,
                    event_timestamp=h + HOUR,
                    input_tokens_uncached=prompt,
                    output_tokens=gen,
                    request_count=0,
                    measured_energy_j=energy,
                    measured_by=METER,
                    measured_boundary=MeasuredBoundary.gpu,
                    labels=labels,
                )
                events.append(ev)
                writes.append(BucketWrite(eid, h, digest, ev.revision, ev.model_dump_json()))
        return events, writes


async def run_telemetry(settings: Settings, engine: Engine, producer: Any, stop_event: asyncio.Event) -> None:
    """Run the scraper until `stop_event` is set (`producer`: a started aiokafka producer, not stopped here)."""
    await TelemetryScraper(settings, engine, producer).run(stop_event)
