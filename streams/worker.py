"""The stream worker: a Faust app hosting the enrich and sink batch agents and, in embedded mode,
the HTTP server of the process that holds the warehouse. By default the enrich agent runs in a child
process with its own Faust app (streams/split.py), so the two CPU-bound stages use two cores.

    raw topic ──► enrich agent ──► enriched topic ──► sink agent ──► ClickHouse ledger (+ rollups)
                      └───────────────► DLQ ◄──────────────┘
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
import pyarrow as pa
from mode import Service

from controlplane import get_engine
from controlplane.prices import PriceLookup
from core.kafka import OutRecord, ensure_topics, producer, send_many
from core.methodology import FactorSet, load_factor_set
from core.metrics import metrics
from core.settings import Settings
from streams.agents import BatchAgent, RetryableError
from streams.factors import worker_factors
from streams.processing import Enricher, InRecord, StageResult, dead_letter, parse_enriched
from warehouse.aio import AsyncWarehouse
from warehouse.client import get_client
from warehouse.ledger import WriteResult, write_enriched, write_enriched_json
from warehouse.migrate import migrate
from warehouse.reconcile import reconcile_rollups

log = logging.getLogger(__name__)

ENRICH_GROUP = "joulestream-enrich"
SINK_GROUP = "joulestream-sink"
# At start-up the sink re-derives the rollups of everything ingested in this window from the ledger,
# which closes the one gap materialized views leave: a crash between the ledger part and the MV part.
RECONCILE_WINDOW = timedelta(minutes=30)
# What the ledger writers raise for a row that does not fit its columns (bad JSON, missing field, wrong type, a
# negative count for a UInt64 — UnfitRows is a ValueError), before anything is inserted.
LEDGER_ROW_ERRORS = (ValueError, TypeError, KeyError, OverflowError, pa.ArrowException)


class Pipeline:
    """The worker's moving parts, built once; agents are added to a Faust app by `build_app`."""

    def __init__(
        self,
        settings: Settings,
        *,
        factors: Callable[[], FactorSet] | None = None,
        with_enrich: bool = True,
        with_sink: bool = True,
        enrich_batch: int = 25_000,
        sink_batch: int = 50_000,
        sink_linger_ms: int = 1_000,
    ) -> None:
        self.settings = settings
        if with_enrich and factors is None:
            engine = get_engine(settings.database)
            resolver = worker_factors(engine, self.settings.factors_refresh_s)
            # cost_usd / price_source: the org's price override (re-read every 10 s), else the price book
            prices = PriceLookup(engine).prices()
            self.enricher = Enricher(resolver, versions=resolver.version, prices=prices)
        else:
            self.enricher = Enricher(factors or load_factor_set)
        self.with_enrich, self.with_sink = with_enrich, with_sink
        self.enrich_batch, self.sink_batch = enrich_batch, sink_batch
        self.sink_linger_ms = sink_linger_ms
        self.producer: Any = None
        self.warehouse: AsyncWarehouse | None = None
        self.agents: list[BatchAgent] = []
        self.dlq_count = 0
        self.external_stats: Callable[[], dict[str, int]] | None = None

    # --- lifecycle -----------------------------------------------------------------------------
    async def open(self) -> None:
        await ensure_topics(self.settings)
        self.producer = producer(self.settings)
        await self.producer.start()
        if self.with_sink:
            self.open_warehouse()
            assert self.warehouse is not None
            repaired = await self.warehouse.run(reconcile_rollups, datetime.now(UTC) - RECONCILE_WINDOW)
            if repaired:
                log.warning("reconciled %d rollup keys at start-up", repaired)

    def open_warehouse(self) -> AsyncWarehouse:
        """Open (and migrate) the warehouse now: the embedded runtime shares it with its HTTP API."""
        if self.warehouse is None:
            client = get_client(self.settings)
            migrate(client, self.settings.ch_database, cluster=self.settings.ch_cluster or None)
            self.warehouse = AsyncWarehouse(client)
        return self.warehouse

    async def close(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None
        if self.warehouse is not None:
            self.warehouse.close()

    def make_agents(self, **service_kwargs: Any) -> list[BatchAgent]:
        s = self.settings
        if self.with_enrich:
            self.agents.append(
                BatchAgent(
                    name="enrich",
                    settings=s,
                    topic=s.raw_topic,
                    group_id=f"{s.topic_prefix}{ENRICH_GROUP}",
                    handler=self.handle_raw,
                    prepare=self.prepare_raw,
                    max_records=self.enrich_batch,
                    **service_kwargs,
                )
            )
        if self.with_sink:
            self.agents.append(
                BatchAgent(
                    name="sink",
                    settings=s,
                    topic=s.enriched_topic,
                    group_id=f"{s.topic_prefix}{SINK_GROUP}",
                    handler=self.handle_enriched,
                    max_records=self.sink_batch,
                    linger_ms=self.sink_linger_ms,
                    **service_kwargs,
                )
            )
        return self.agents

    # --- handlers ----------------------------------------------------------------------------
    async def _publish(self, topic: str, records: list[OutRecord]) -> None:
        try:
            await send_many(self.producer, topic, records)
        except Exception as exc:
            raise RetryableError(f"publish to {topic} failed: {exc!r}") from exc

    def prepare_raw(self, records: list[InRecord]) -> StageResult:
        """validate → dedup → enrich, once per batch (the dedup window now holds the batch's ids)."""
        return self.enricher.process(records)

    async def handle_raw(self, res: StageResult) -> None:
        """Publish a prepared batch (retried by the agent with the same result until Kafka acks it)."""
        agent = self._agent("enrich")
        await self._publish(self.settings.enriched_topic, res.out)
        await self._publish(self.settings.dlq_topic, res.dlq)
        self.dlq_count += len(res.dlq)
        m = metrics()
        m.pipeline_enriched.inc(len(res.out))
        m.pipeline_dlq.labels("enrich").inc(len(res.dlq))
        m.pipeline_duplicates.labels("enrich").inc(res.duplicates)
        res.footprints.record(per_org=self.settings.metrics_per_org)
        if agent:
            agent.stats.add("enriched", len(res.out))
            agent.stats.add("dlq", len(res.dlq))
            agent.stats.add("duplicates", res.duplicates)

    async def handle_enriched(self, records: list[InRecord]) -> None:
        """Store a batch: the payloads go to ClickHouse as they are (JSONEachRow, parsed there); when some do
        not fit the ledger, validate each one, store the good and dead-letter the rest."""
        assert self.warehouse is not None
        bad: list[OutRecord] = []
        try:
            result: WriteResult | None = await self._write(
                write_enriched_json, [r.value for r in records if r.value is not None]
            )
            bad = [dead_letter(r, "sink", "empty message (null value)") for r in records if r.value is None]
        except LEDGER_ROW_ERRORS:
            good, bad = parse_enriched(records)
            try:
                result = await self._write(write_enriched, good)
            except LEDGER_ROW_ERRORS as exc:  # valid events the ledger cannot take: a bug, keep the bytes
                bad.extend(dead_letter(r, "sink", f"cannot store: {exc!r}") for r in records)
                result = None
        await self._publish(self.settings.dlq_topic, bad)
        self.dlq_count += len(bad)
        m = metrics()
        m.pipeline_dlq.labels("sink").inc(len(bad))
        if result is not None:
            m.pipeline_stored.inc(result.inserted)
            m.pipeline_superseded.inc(result.cancelled)
            m.pipeline_duplicates.labels("sink").inc(result.skipped_duplicates + result.skipped_stale)
        agent = self._agent("sink")
        if agent and result is not None:
            agent.stats.add("stored", result.inserted)
            agent.stats.add("cancelled", result.cancelled)
            agent.stats.add("skipped", result.skipped_duplicates + result.skipped_stale)
            agent.stats.add("dlq", len(bad))

    async def _write(self, writer: Callable[[Any, Any], WriteResult], batch: Sequence[Any]) -> WriteResult:
        assert self.warehouse is not None
        started = time.perf_counter()
        try:
            result = await self.warehouse.run(writer, batch)
            metrics().warehouse_insert_seconds.observe(time.perf_counter() - started)
            return result
        except LEDGER_ROW_ERRORS:
            raise
        except Exception as exc:  # warehouse down/locked/timeout: retry the batch, never skip it
            raise RetryableError(f"warehouse write failed: {exc!r}") from exc

    def _agent(self, name: str) -> BatchAgent | None:
        return next((a for a in self.agents if a.agent_name == name), None)

    def stats(self) -> dict[str, Any]:
        if self.external_stats is not None:  # the enrich agent runs in a child process (streams/split.py)
            return {"enrich": self.external_stats(), **self._own_stats()}
        return self._own_stats()

    @property
    def total_dlq(self) -> int:
        external = self.external_stats().get("dlq", 0) if self.external_stats is not None else 0
        return self.dlq_count + external

    def _own_stats(self) -> dict[str, Any]:
        return {
            a.agent_name: {
                "consumed": a.stats.consumed,
                "batches": a.stats.batches,
                "assigned_partitions": len(a.consumer.assignment()) if a.consumer is not None else 0,
                "retries": a.stats.retries,
                "commit_failures": a.stats.commit_failures,
                **a.stats.counters,
            }
            for a in self.agents
        }


class PipelineService(Service):
    """Opens the pipeline (topics, producer, warehouse, start-up reconcile), then starts the agents;
    stops the agents first and closes the pipeline last."""

    def __init__(self, pipeline: Pipeline, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline
        for agent in pipeline.make_agents(loop=self.loop, beacon=self.beacon):
            self.add_dependency(agent)

    async def on_start(self) -> None:
        await self.pipeline.open()

    async def on_shutdown(self) -> None:
        await self.pipeline.close()


def build_app(settings: Settings, pipeline: Pipeline, app_id: str = "joulestream") -> faust.App:
    """A Faust app that hosts the pipeline (as a mode service) and owns the worker lifecycle."""
    app = faust.App(
        app_id,
        broker=f"kafka://{settings.kafka.split(',')[0]}",
        store="memory://",
        web_enabled=False,
        producer_enable_idempotence=False,
        broker_session_timeout=6,
        broker_heartbeat_interval=1,
        topic_allow_declare=False,
        autodiscover=False,
    )
    app.add_dependency(PipelineService(pipeline, loop=app.loop, beacon=app.beacon))
    return app
