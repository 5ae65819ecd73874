"""Operational metrics in the Prometheus format (prometheus_client): every metric joulestream exports is
defined here, once, and recorded by the code paths it describes (streams/, pipelines/gateway, pipelines/pollers).
docs/operations.md lists them, says how they are protected and how they are gathered across processes.

    from core.metrics import metrics
    metrics().pipeline_received.labels("enrich").inc(n)

Label cardinality is bounded by construction: agent and stage names, topic/partition of the worker's own
topics, HTTP status codes, routing tiers (L0–L3), the routing file's upstreams, the factor set's providers
and model tiers (anything else is "other"). No label carries an event, a key or an org — except the two
`joulestream_org_*` counters, recorded only when `Settings.metrics_per_org` (JOULESTREAM_METRICS_PER_ORG) is on.

Processes. `use_directory(path)` at a process's entry point switches prometheus_client to its multiprocess
mode (one set of mmap files per process in `path`), and exports `PROMETHEUS_MULTIPROC_DIR` so that the
children it starts afterwards (the worker's enrich process) record into the same directory. `exposition()`
then answers for the whole process tree; without `use_directory` (tests, an embedded app) it answers for this
process alone. Metric objects are built on first use (`metrics()`), after that choice is made.
"""

from __future__ import annotations

import hmac
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from core.buildinfo import build_info
from core.settings import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own switch; children inherit it
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # the text format every Prometheus version scrapes
OTHER = "other"
NONE = "none"

# seconds: a batch of the sink takes up to ~1–3 s at 50k events; a gateway request adds ~1 ms
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
ADDED_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)
UPSTREAM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_SIZE_BUCKETS = (1, 10, 100, 500, 1_000, 5_000, 10_000, 25_000, 50_000)
AGENTS = ("enrich", "sink")

disable_created_metrics()  # no `_created` series next to every counter and histogram


class Metrics:
    """The metric objects, built on one registry (the names are what docs/operations.md lists)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        # --- stream worker (streams/): agent = enrich | sink
        self.pipeline_received = Counter(
            "joulestream_pipeline_received",
            "Messages read from Kafka by an agent (enrich: usage.raw.v1, sink: usage.enriched.v1)",
            ["agent"],
            registry=r,
        )
        self.pipeline_enriched = Counter(
            "joulestream_pipeline_enriched", "Events enriched and published to usage.enriched.v1", registry=r
        )
        self.pipeline_duplicates = Counter(
            "joulestream_pipeline_duplicates",
            "Events dropped as duplicates or superseded revisions (enrich: dedup window; sink: the ledger)",
            ["stage"],
            registry=r,
        )
        self.pipeline_stored = Counter(
            "joulestream_pipeline_stored", "Events inserted into the ClickHouse ledger", registry=r
        )
        self.pipeline_superseded = Counter(
            "joulestream_pipeline_superseded",
            "Ledger rows cancelled by a later revision of their event",
            registry=r,
        )
        self.pipeline_dlq = Counter(
            "joulestream_pipeline_dlq", "Messages sent to usage.dlq.v1", ["agent"], registry=r
        )
        self.pipeline_retries = Counter(
            "joulestream_pipeline_batch_retries",
            "Batches retried (warehouse or broker unavailable)",
            ["agent"],
            registry=r,
        )
        self.pipeline_commit_failures = Counter(
            "joulestream_pipeline_commit_failures",
            "Offset commits that failed (a rebalance took the partitions)",
            ["agent"],
            registry=r,
        )
        self.pipeline_batch_seconds = Histogram(
            "joulestream_pipeline_batch_seconds",
            "Time to process one batch, retries included, until its output is acknowledged or stored",
            ["agent"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.pipeline_batch_events = Histogram(
            "joulestream_pipeline_batch_events",
            "Messages per batch",
            ["agent"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.warehouse_insert_seconds = Histogram(
            "joulestream_warehouse_insert_seconds",
            "Time of one ledger insert into ClickHouse (one batch)",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "joulestream_pipeline_consumer_lag",
            "Messages behind: the partition's high watermark minus the group's committed offset",
            ["agent", "topic", "partition"],
            multiprocess_mode="livemax",
            registry=r,
        )
        # --- energy and emissions of the enriched events (streams/, enrich stage)
        self.energy_kwh = Counter(
            "joulestream_energy_kwh",
            "Facility energy of the events enriched, kWh",
            ["provider", "model_tier"],
            registry=r,
        )
        self.co2e_kg = Counter(
            "joulestream_co2e_kg",
            "CO2e of the events enriched, kg (basis: location, market = Scope 2; embodied = Scope 3)",
            ["provider", "model_tier", "basis"],
            registry=r,
        )
        self.org_energy_kwh = Counter(
            "joulestream_org_energy_kwh",
            "Energy of the events enriched per org, kWh (only with JOULESTREAM_METRICS_PER_ORG=true)",
            ["org_id"],
            registry=r,
        )
        self.org_co2e_kg = Counter(
            "joulestream_org_co2e_kg",
            "Location-based CO2e of the events enriched per org, kg (only with JOULESTREAM_METRICS_PER_ORG=true)",
            ["org_id"],
            registry=r,
        )
        # --- insights (api/savings.py): the measured savings ledger, as days are recorded; label type = the
        # recommendation type (six values). A day that made things worse raises the second counter, so the net
        # measured saving is attributed − reversed and both stay counters.
        self.savings_attributed_g = Counter(
            "joulestream_co2e_savings_attributed_grams",
            "Measured CO2e saved by applied recommendations, grams (days recorded in the savings ledger)",
            ["type"],
            registry=r,
        )
        self.savings_reversed_g = Counter(
            "joulestream_co2e_savings_reversed_grams",
            "Measured CO2e added by applied recommendations on days they made things worse, grams",
            ["type"],
            registry=r,
        )
        # --- gateway (pipelines/gateway)
        self.gateway_requests = Counter(
            "joulestream_gateway_requests",
            "Inference requests answered by the gateway",
            ["endpoint", "status", "tier", "upstream"],
            registry=r,
        )
        self.gateway_added_latency = Histogram(
            "joulestream_gateway_added_latency_seconds",
            "Time the gateway adds to a request: until the response starts, minus the time spent waiting on upstreams",
            ["endpoint"],
            buckets=ADDED_LATENCY_BUCKETS,
            registry=r,
        )
        self.gateway_upstream_seconds = Histogram(
            "joulestream_gateway_upstream_seconds",
            "Time a request waited on upstreams (every attempt; streams: until the stream opened)",
            buckets=UPSTREAM_BUCKETS,
            registry=r,
        )
        # --- provider usage pollers (pipelines/pollers)
        self.poller_polls = Counter(
            "joulestream_poller_polls",
            "Polls of a provider connection by outcome (ok, failed, disabled, postponed)",
            ["provider", "outcome"],
            registry=r,
        )
        self.poller_failures = Counter(
            "joulestream_poller_failures",
            "Polls that failed (provider error, or the key rejected: outcome failed or disabled)",
            ["provider"],
            registry=r,
        )
        self.poller_events = Counter(
            "joulestream_poller_events_published",
            "Usage events the pollers published to usage.raw.v1",
            ["provider"],
            registry=r,
        )
        self.poller_last_success = Gauge(
            "joulestream_poller_last_success_timestamp_seconds",
            "Unix time of the last successful poll of any connection of the provider",
            ["provider"],
            multiprocess_mode="max",
            registry=r,
        )
        for agent in AGENTS:  # the series exist (at 0) before the first batch
            for c in (self.pipeline_received, self.pipeline_dlq, self.pipeline_retries):
                c.labels(agent)
            self.pipeline_commit_failures.labels(agent)
            self.pipeline_duplicates.labels(agent)
        # --- the process itself
        self.build_info = Gauge(
            "joulestream_build_info",
            "Always 1; the labels name the running build",
            ["version", "commit", "python"],
            multiprocess_mode="max",
            registry=r,
        )
        info = build_info()
        self.build_info.labels(info.version, info.git_commit or "unknown", info.python).set(1)


REGISTRY = CollectorRegistry(auto_describe=True)
_metrics: Metrics | None = None
_multiproc_dir: Path | None = None


def metrics() -> Metrics:
    """The process's metrics (built on first use)."""
    global _metrics
    if _metrics is None:
        _metrics = Metrics(REGISTRY)
    return _metrics


# ------------------------------------------------------------------------------------------ processes

_PID_FILE = re.compile(r"_(\d+)\.db$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def use_directory(root: Path) -> Path:
    """Record the metrics of this process and of the children it starts from now on in multiprocess mode, in
    `root/<pid>/`; returns that directory. `root` holds one such directory per live process tree (one scrape
    target each); those of processes that are gone are removed here. Call it at the process's entry point
    (the `up`, `worker`, `gateway` and `poll` commands do), before any metric is recorded."""
    global _multiproc_dir
    if _metrics is not None and not getattr(values.ValueClass, "_multiprocess", False):
        raise RuntimeError("metrics were recorded before use_directory(): call it at the entry point")
    root.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():
        if (
            old.is_dir()
            and old.name.isdigit()
            and (int(old.name) == os.getpid() or not _alive(int(old.name)))
        ):
            for f in old.glob("*.db"):
                f.unlink(missing_ok=True)
            old.rmdir()
    path = root / str(os.getpid())
    path.mkdir()
    os.environ[MULTIPROC_ENV] = str(path)  # prometheus_client reads it here and in every child process
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()
    _multiproc_dir = path
    return path


def process_exited(pid: int) -> None:
    """A child process of this tree has exited: its live gauges (consumer lag) stop counting; its counters
    stay in the sums until the tree restarts."""
    if _multiproc_dir is not None:
        mark_process_dead(pid, str(_multiproc_dir))


def multiprocess_dir() -> Path | None:
    return _multiproc_dir


def exposition() -> tuple[bytes, str]:
    """The Prometheus text format: of the whole process tree in multiprocess mode, else of this process."""
    metrics()  # the build info series, even before anything else was recorded
    if _multiproc_dir is None:
        return generate_latest(REGISTRY), CONTENT_TYPE
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(_multiproc_dir))
    return generate_latest(registry), CONTENT_TYPE


# ------------------------------------------------------------------------------------------ access


@dataclass(frozen=True)
class Denied:
    status: int
    detail: str
    headers: dict[str, str]


def check_access(settings: Settings, authorization: str | None) -> Denied | None:
    """Who may read /prometheus/metrics: anyone with `Authorization: Bearer <JOULESTREAM_METRICS_TOKEN>`, or
    everyone when JOULESTREAM_METRICS_OPEN is true. None = allowed; else the refusal (401 without or with a
    wrong token, 403 when no token is configured at all)."""
    if settings.metrics_open:
        return None
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    if not token:
        return Denied(
            403,
            "the metrics endpoint is closed: set JOULESTREAM_METRICS_TOKEN (and scrape with it as a Bearer "
            "token) or JOULESTREAM_METRICS_OPEN=true",
            {},
        )
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return Denied(
            401, "missing bearer token (the operator metrics token)", {"WWW-Authenticate": "Bearer"}
        )
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        return Denied(401, "invalid metrics token", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return None


# ------------------------------------------------------------------------------------------ recorders


def label_of(value: str | None, allowed: Iterable[str]) -> str:
    """`value` when it is one of `allowed`, else "other" ("none" for None): a bounded label value."""
    if value is None:
        return NONE
    return value if value in allowed else OTHER


@dataclass
class Footprints:
    """Energy and CO2e of one batch of enriched events, summed per (provider, model tier) and per org."""

    by_kind: dict[tuple[str, str], list[float]]
    by_org: dict[str, list[float]]

    @classmethod
    def empty(cls) -> Footprints:
        return cls({}, {})

    def add(
        self,
        provider: str,
        tier: str,
        org_id: str,
        energy_j: float,
        co2_kg: float,
        market_kg: float | None,
        embodied_kg: float | None,
    ) -> None:
        s = self.by_kind.get((provider, tier))
        if s is None:
            s = self.by_kind[(provider, tier)] = [0.0, 0.0, 0.0, 0.0]
        s[0] += energy_j
        s[1] += co2_kg
        s[2] += market_kg or 0.0
        s[3] += embodied_kg or 0.0
        o = self.by_org.get(org_id)
        if o is None:
            o = self.by_org[org_id] = [0.0, 0.0]
        o[0] += energy_j
        o[1] += co2_kg

    def record(self, per_org: bool) -> None:
        m = metrics()
        for (provider, tier), (j, co2, market, embodied) in self.by_kind.items():
            m.energy_kwh.labels(provider, tier).inc(j / 3.6e6)
            m.co2e_kg.labels(provider, tier, "location").inc(co2)
            m.co2e_kg.labels(provider, tier, "market").inc(market)
            m.co2e_kg.labels(provider, tier, "embodied").inc(embodied)
        if per_org:
            for org_id, (j, co2) in self.by_org.items():
                m.org_energy_kwh.labels(org_id).inc(j / 3.6e6)
                m.org_co2e_kg.labels(org_id).inc(co2)


_gateway_children: dict[tuple[str, int, str | None, str | None], tuple[Counter, Histogram]] = {}


def record_gateway_request(
    endpoint: str, status: int, tier: str | None, upstream: str | None, total_s: float, upstream_s: float
) -> None:
    """One answered gateway request: counted by status / routing tier / upstream, its added latency observed.
    (The label children are cached: the key space is bounded by the labels themselves.)"""
    key = (endpoint, status, tier, upstream)
    children = _gateway_children.get(key)
    if children is None:
        m = metrics()
        children = _gateway_children[key] = (
            m.gateway_requests.labels(endpoint, str(status), tier or NONE, upstream or NONE),
            m.gateway_added_latency.labels(endpoint),
        )
    children[0].inc()
    children[1].observe(max(total_s - upstream_s, 0.0))
    if upstream_s > 0:
        metrics().gateway_upstream_seconds.observe(upstream_s)


def record_poll(provider: str, outcome: str, published: int) -> None:
    """One poll of a connection (pipelines/pollers/scheduler.py)."""
    m = metrics()
    m.poller_polls.labels(provider, outcome).inc()
    if published:
        m.poller_events.labels(provider).inc(published)
    if outcome == "ok":
        m.poller_last_success.labels(provider).set(time.time())
    elif outcome in ("failed", "disabled"):
        m.poller_failures.labels(provider).inc()
