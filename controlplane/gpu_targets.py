"""GPU telemetry targets: where an org's GPUs are scraped from, and the scraper's state.

A target is one workload of self-served models: a set of GPUs (on a DCGM exporter, optionally narrowed to some
GPU UUIDs / indices and one Hostname) and the model servers (vLLM `/metrics`) that run on exactly those GPUs —
or, instead of the two endpoints, a Prometheus server that holds the same series. Its usage is booked to
`project_id`; `provider` / `region` say where the GPUs run (the factor set's PUE and grid for them; a name
the factor set does not know is booked with its default PUE and grid, flagged `is_estimated`). The target id
is the events' `workload_id`.

Scraper state (tables in `controlplane.schema`, migration `0090_gpu_targets`):
- `gpu_series`: the last sample of each counter series (`energy|<gpu uuid>`, `prompt|<model>`,
  `generation|<model>`), the baseline of the next increase;
- `gpu_hours`: each series' increase per UTC hour (`core.methodology.measured.spread`), and how many counter
  resets fell in the hour;
- `gpu_buckets`: per (target, hour, model) event the content hash and revision last published.
`record_samples` updates the first two in one transaction, so a scrape counts once or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import orjson
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, StringConstraints, model_validator
from sqlalchemy import Engine, delete, insert, select, update

from controlplane._util import new_id as _new_id
from controlplane._util import now as _now
from controlplane.errors import NotFound
from controlplane.projects import Projects
from controlplane.schema import LAST_ERROR_MAX, gpu_buckets, gpu_hours, gpu_series, gpu_targets
from core.methodology.measured import counter_increase, spread

Url = Annotated[AnyHttpUrl, Field(description="http(s) URL")]
Label = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class GpuTargetIn(BaseModel):
    """A target's configuration, as the API and the CLI take it."""

    model_config = ConfigDict(extra="forbid")

    name: Label
    project_id: str | None = Field(default=None, description="None: the org's Default project")
    dcgm_url: Url | None = Field(default=None, description="The DCGM exporter's metrics URL")
    server_urls: list[Url] = Field(default_factory=list, max_length=32, description="Model servers' /metrics")
    prometheus_url: Url | None = Field(
        default=None,
        description="A Prometheus server to query (/api/v1/query_range) instead of the endpoints",
    )
    gpus: list[Label] = Field(
        default_factory=list, max_length=256, description="GPU UUIDs or indices on the exporter; [] = all"
    )
    hostname: Label | None = Field(default=None, description="Only series whose Hostname label is this")
    provider: Label = Field(description="Where the GPUs run, for PUE and grid: aws, azure, google, …")
    region: Label | None = None

    @model_validator(mode="after")
    def _one_source(self) -> GpuTargetIn:
        for u in [self.dcgm_url, self.prometheus_url, *self.server_urls]:
            if u is not None and (u.username or u.password):
                raise ValueError(
                    "URLs must not carry credentials (user:password@): they would be stored in clear"
                )
        if self.prometheus_url is not None:
            if self.dcgm_url is not None or self.server_urls:
                raise ValueError("give either prometheus_url or dcgm_url + server_urls, not both")
        elif self.dcgm_url is None or not self.server_urls:
            raise ValueError("give dcgm_url and at least one of server_urls (or prometheus_url)")
        return self


class GpuTarget(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    org_id: str
    project_id: str
    name: str
    dcgm_url: str | None
    server_urls: list[str]
    prometheus_url: str | None
    gpus: list[str]
    hostname: str | None
    provider: str
    region: str | None
    created_at: datetime
    updated_at: datetime
    last_scrape_at: datetime | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class Sample:
    series: str
    at: datetime
    value: float


@dataclass(frozen=True)
class BucketState:
    content_hash: str
    revision: int


@dataclass(frozen=True)
class BucketWrite:
    event_id: str
    hour: datetime
    content_hash: str
    revision: int
    event: str


def _target(row: Any) -> GpuTarget:
    d = dict(row)
    d["server_urls"] = orjson.loads(d["server_urls"])
    d["gpus"] = orjson.loads(d["gpus"])
    d.pop("deleted_at", None)
    return GpuTarget.model_validate(d)


class GpuTargets:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ----------------------------------------------------------------------------------------- configuration

    def create(self, org_id: str, spec: GpuTargetIn, now: datetime | None = None) -> GpuTarget:
        projects = Projects(self.engine)
        if spec.project_id is None:
            project_id = projects.ensure_default_project(org_id).id
        elif projects.get(org_id, spec.project_id) is None:
            raise NotFound("project not found")
        else:
            project_id = spec.project_id
        now = now or _now()
        row = {
            "id": _new_id(),
            "org_id": org_id,
            "project_id": project_id,
            "name": spec.name,
            "dcgm_url": str(spec.dcgm_url) if spec.dcgm_url else None,
            "server_urls": orjson.dumps([str(u) for u in spec.server_urls]).decode(),
            "prometheus_url": str(spec.prometheus_url) if spec.prometheus_url else None,
            "gpus": orjson.dumps(spec.gpus).decode(),
            "hostname": spec.hostname,
            "provider": spec.provider,
            "region": spec.region,
            "created_at": now,
            "updated_at": now,
            "deleted_at": None,
            "last_scrape_at": None,
            "last_error": None,
        }
        with self.engine.begin() as conn:
            conn.execute(insert(gpu_targets).values(**row))
        return _target(row)

    def get(self, org_id: str, target_id: str) -> GpuTarget | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(gpu_targets).where(
                        gpu_targets.c.org_id == org_id,
                        gpu_targets.c.id == target_id,
                        gpu_targets.c.deleted_at.is_(None),
                    )
                )
                .mappings()
                .first()
            )
        return _target(row) if row else None

    def list(self, org_id: str | None = None) -> list[GpuTarget]:
        """An org's live targets (every org's with None: the scraper)."""
        conds = [gpu_targets.c.deleted_at.is_(None)]
        if org_id is not None:
            conds.append(gpu_targets.c.org_id == org_id)
        with self.engine.connect() as conn:
            rows = (
                conn.execute(
                    select(gpu_targets).where(*conds).order_by(gpu_targets.c.created_at, gpu_targets.c.id)
                )
                .mappings()
                .all()
            )
        return [_target(r) for r in rows]

    def delete(self, org_id: str, target_id: str, now: datetime | None = None) -> None:
        """Soft delete: the target is no longer scraped; its events stay in the warehouse."""
        with self.engine.begin() as conn:
            n = conn.execute(
                update(gpu_targets)
                .where(
                    gpu_targets.c.org_id == org_id,
                    gpu_targets.c.id == target_id,
                    gpu_targets.c.deleted_at.is_(None),
                )
                .values(deleted_at=now or _now())
            ).rowcount
        if not n:
            raise NotFound("GPU target not found")

    # ----------------------------------------------------------------------------------------- scraper state

    def record_samples(self, target_id: str, samples: Iterable[Sample]) -> int:
        """Fold samples (in time order per series) into the hourly increases; returns the resets seen.
        A sample not newer than the series' last one is ignored (a Prometheus range read twice)."""
        resets = 0
        with self.engine.begin() as conn:
            last = {
                r.series: (r.value, r.at)
                for r in conn.execute(
                    select(gpu_series.c.series, gpu_series.c.value, gpu_series.c.at).where(
                        gpu_series.c.target_id == target_id
                    )
                )
            }
            known = set(last)
            adds: dict[tuple[datetime, str], list[float]] = {}
            for s in samples:
                prev = last.get(s.series)
                if prev is not None:
                    if s.at <= prev[1]:
                        continue
                    inc, reset = counter_increase(prev[0], s.value)
                    resets += reset
                    for i, (h, part) in enumerate(spread(prev[1], s.at, inc)):
                        acc = adds.setdefault((h, s.series), [0.0, 0])
                        acc[0] += part
                        acc[1] += int(reset and i == 0)
                last[s.series] = (s.value, s.at)
            for series, (value, at) in last.items():
                if series in known:
                    conn.execute(
                        update(gpu_series)
                        .where(gpu_series.c.target_id == target_id, gpu_series.c.series == series)
                        .values(value=value, at=at)
                    )
                else:
                    conn.execute(
                        insert(gpu_series).values(target_id=target_id, series=series, value=value, at=at)
                    )
            if adds:
                hours = sorted({h for h, _ in adds})
                have = {
                    (r.hour, r.series): (r.amount, r.resets)
                    for r in conn.execute(
                        select(gpu_hours).where(
                            gpu_hours.c.target_id == target_id, gpu_hours.c.hour.in_(hours)
                        )
                    )
                }
                for (h, series), (amount, n) in adds.items():
                    if (h, series) in have:
                        a0, n0 = have[(h, series)]
                        conn.execute(
                            update(gpu_hours)
                            .where(
                                gpu_hours.c.target_id == target_id,
                                gpu_hours.c.hour == h,
                                gpu_hours.c.series == series,
                            )
                            .values(amount=a0 + amount, resets=n0 + n)
                        )
                    else:
                        conn.execute(
                            insert(gpu_hours).values(
                                target_id=target_id, hour=h, series=series, amount=amount, resets=n
                            )
                        )
        return resets

    def last_sample_at(self, target_id: str) -> datetime | None:
        with self.engine.connect() as conn:
            rows = conn.execute(select(gpu_series.c.at).where(gpu_series.c.target_id == target_id)).all()
        return min((r.at for r in rows), default=None)

    def hours(
        self, target_id: str, since: datetime, until: datetime
    ) -> dict[datetime, dict[str, tuple[float, int]]]:
        """hour → series → (increase, resets), for since <= hour < until."""
        out: dict[datetime, dict[str, tuple[float, int]]] = {}
        with self.engine.connect() as conn:
            for r in conn.execute(
                select(gpu_hours).where(
                    gpu_hours.c.target_id == target_id, gpu_hours.c.hour >= since, gpu_hours.c.hour < until
                )
            ):
                out.setdefault(r.hour, {})[r.series] = (r.amount, r.resets)
        return out

    def bucket_states(self, target_id: str, since: datetime) -> dict[str, BucketState]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(gpu_buckets.c.event_id, gpu_buckets.c.content_hash, gpu_buckets.c.revision).where(
                    gpu_buckets.c.target_id == target_id, gpu_buckets.c.hour >= since
                )
            ).all()
        return {r.event_id: BucketState(r.content_hash, r.revision) for r in rows}

    def record_published(
        self, target_id: str, writes: list[BucketWrite], now: datetime, prune_before: datetime
    ) -> None:
        """Store what Kafka acknowledged, mark the scrape successful and drop state older than the lookback."""
        with self.engine.begin() as conn:
            for w in writes:
                conn.execute(
                    delete(gpu_buckets).where(
                        gpu_buckets.c.target_id == target_id, gpu_buckets.c.event_id == w.event_id
                    )
                )
                conn.execute(
                    insert(gpu_buckets).values(
                        target_id=target_id,
                        event_id=w.event_id,
                        hour=w.hour,
                        content_hash=w.content_hash,
                        revision=w.revision,
                        event=w.event,
                    )
                )
            conn.execute(
                delete(gpu_hours).where(gpu_hours.c.target_id == target_id, gpu_hours.c.hour < prune_before)
            )
            conn.execute(
                delete(gpu_buckets).where(
                    gpu_buckets.c.target_id == target_id, gpu_buckets.c.hour < prune_before
                )
            )
            conn.execute(
                update(gpu_targets)
                .where(gpu_targets.c.id == target_id)
                .values(last_scrape_at=now, last_error=None)
            )

    def record_error(self, target_id: str, error: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(gpu_targets)
                .where(gpu_targets.c.id == target_id)
                .values(last_error=error[:LAST_ERROR_MAX])
            )
