"""Batch API state (migration `0080_batches`, docs/batch.md): files, batches, finished lines and the hourly
intensity profiles.

- `BatchFiles`: input files (purpose `batch`) and the output/error files a batch produces (`batch_output`);
  the bytes are in the artefact store (`core.artifacts`), here only their key and size.
- `Batches`: one row per batch, its status and timestamps (OpenAI's names), and the runner's lease: a runner
  `claim`s a batch for `lease_s`, renews while it works, and another runner takes it over only when the
  lease ran out (a killed runner's batch is resumed by the next one).
- Lines: `record_lines` stores each finished line once, keyed by (batch, custom_id), and recounts
  `completed`/`failed` from those rows in the same transaction — so the counts are exact whatever is re-run.
- `IntensityProfiles`: per region, 24 hourly intensities (`core.intensity`).

Tenancy: every read a client can reach takes `org_id`; the runner's methods (`claim`, `record_lines`, …) act
on batch ids it claimed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine, and_, delete, func, insert, or_, select, update

from controlplane._util import now as _now
from controlplane.errors import Conflict
from controlplane.schema import batch_files, batch_lines, batches, intensity_profiles
from core.intensity import HourlyProfile

ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
CANCELLABLE = ("validating", "in_progress")


class BatchFile(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)

    id: str
    org_id: str
    purpose: str
    filename: str
    bytes: int
    line_count: int
    storage_key: str
    sha256: str
    created_at: datetime


class Batch(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)

    id: str
    org_id: str
    key_id: str
    endpoint: str
    input_file_id: str
    completion_window: str
    status: str
    batch_metadata: str | None
    errors: str | None
    output_file_id: str | None
    error_file_id: str | None
    total: int
    completed: int
    failed: int
    created_at: datetime
    expires_at: datetime
    in_progress_at: datetime | None
    finalizing_at: datetime | None
    completed_at: datetime | None
    failed_at: datetime | None
    expired_at: datetime | None
    cancelling_at: datetime | None
    cancelled_at: datetime | None
    run_after: datetime | None
    carbon: str | None
    lease_owner: str | None
    lease_until: datetime | None

    @property
    def metadata_dict(self) -> dict[str, str] | None:
        return None if self.batch_metadata is None else orjson.loads(self.batch_metadata)

    @property
    def carbon_dict(self) -> dict[str, Any] | None:
        return None if self.carbon is None else orjson.loads(self.carbon)


class LineRow(BaseModel):
    custom_id: str
    line_no: int
    ok: bool
    output: str
    energy_j: float
    co2_kg: float
    done_at: datetime


class BatchFiles:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, f: BatchFile) -> BatchFile:
        with self.engine.begin() as conn:
            conn.execute(insert(batch_files).values(**f.model_dump()))
        return f

    def put(self, f: BatchFile) -> BatchFile:
        """Insert or replace (a batch's output files are rewritten when finalizing is re-run)."""
        with self.engine.begin() as conn:
            conn.execute(delete(batch_files).where(batch_files.c.id == f.id))
            conn.execute(insert(batch_files).values(**f.model_dump()))
        return f

    def get(self, org_id: str, file_id: str) -> BatchFile | None:
        with self.engine.connect() as conn:
            r = conn.execute(
                select(batch_files).where(batch_files.c.id == file_id, batch_files.c.org_id == org_id)
            ).first()
        return None if r is None else BatchFile.model_validate(r)

    def delete(self, org_id: str, file_id: str) -> BatchFile | None:
        with self.engine.begin() as conn:
            r = conn.execute(
                select(batch_files).where(batch_files.c.id == file_id, batch_files.c.org_id == org_id)
            ).first()
            if r is None:
                return None
            conn.execute(delete(batch_files).where(batch_files.c.id == file_id))
        return BatchFile.model_validate(r)


class Batches:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ------------------------------------------------------------------------------------- client side
    def create(self, **values: Any) -> Batch:
        row = {c.name: None for c in batches.columns} | {"total": 0, "completed": 0, "failed": 0} | values
        with self.engine.begin() as conn:
            conn.execute(insert(batches).values(**row))
        return Batch.model_validate(row)

    def get(self, org_id: str, batch_id: str) -> Batch | None:
        with self.engine.connect() as conn:
            r = conn.execute(
                select(batches).where(batches.c.id == batch_id, batches.c.org_id == org_id)
            ).first()
        return None if r is None else Batch.model_validate(r)

    def page(self, org_id: str, after: str | None, limit: int) -> tuple[list[Batch], bool]:
        """The org's batches, newest first, after the batch `after` (OpenAI's cursor); and whether more follow."""
        q = select(batches).where(batches.c.org_id == org_id)
        if after is not None:
            anchor = self.get(org_id, after)
            if anchor is not None:
                q = q.where(
                    or_(
                        batches.c.created_at < anchor.created_at,
                        and_(batches.c.created_at == anchor.created_at, batches.c.id < anchor.id),
                    )
                )
        q = q.order_by(batches.c.created_at.desc(), batches.c.id.desc()).limit(limit + 1)
        with self.engine.connect() as conn:
            rows = [Batch.model_validate(r) for r in conn.execute(q)]
        return rows[:limit], len(rows) > limit

    def cancel(self, org_id: str, batch_id: str, now: datetime | None = None) -> Batch | None:
        """validating/in_progress → cancelling (the runner finishes it as `cancelled`); cancelling or
        cancelled again is a no-op; any other status is a Conflict. None when there is no such batch."""
        b = self.get(org_id, batch_id)
        if b is None:
            return None
        if b.status in ("cancelling", "cancelled"):
            return b
        if not self.transition(batch_id, CANCELLABLE, "cancelling", cancelling_at=now or _now()):
            b = self.get(org_id, batch_id)
            assert b is not None
            if b.status in ("cancelling", "cancelled"):
                return b
            raise Conflict(f"Cannot cancel a batch with status {b.status!r}.")
        return self.get(org_id, batch_id)

    # ------------------------------------------------------------------------------------- runner side
    def by_id(self, batch_id: str) -> Batch | None:
        with self.engine.connect() as conn:
            r = conn.execute(select(batches).where(batches.c.id == batch_id)).first()
        return None if r is None else Batch.model_validate(r)

    def claim(self, owner: str, now: datetime, lease_s: float) -> Batch | None:
        """Take the oldest active batch whose lease is free and that is due (its deferral is over, or it
        is to be cancelled, finalized or expired), for `lease_s`. Conditional update: one runner wins."""
        free = or_(
            batches.c.lease_until.is_(None), batches.c.lease_until < now, batches.c.lease_owner == owner
        )
        due = or_(
            batches.c.status != "in_progress",
            batches.c.run_after.is_(None),
            batches.c.run_after <= now,
            batches.c.expires_at <= now,
        )
        with self.engine.connect() as conn:
            ids = list(
                conn.execute(
                    select(batches.c.id)
                    .where(batches.c.status.in_(ACTIVE), free, due)
                    .order_by(batches.c.created_at)
                    .limit(8)
                ).scalars()
            )
        until = now + timedelta(seconds=lease_s)
        for batch_id in ids:
            with self.engine.begin() as conn:
                n = conn.execute(
                    update(batches)
                    .where(batches.c.id == batch_id, batches.c.status.in_(ACTIVE), free)
                    .values(lease_owner=owner, lease_until=until)
                ).rowcount
            if n == 1:
                return self.by_id(batch_id)
        return None

    def renew(self, batch_id: str, owner: str, until: datetime) -> bool:
        with self.engine.begin() as conn:
            return (
                conn.execute(
                    update(batches)
                    .where(batches.c.id == batch_id, batches.c.lease_owner == owner)
                    .values(lease_until=until)
                ).rowcount
                == 1
            )

    def release(self, batch_id: str, owner: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(batches)
                .where(batches.c.id == batch_id, batches.c.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )

    def transition(self, batch_id: str, from_status: tuple[str, ...], to: str, **values: Any) -> bool:
        """Set `status=to` (and `values`) if the status is one of `from_status`; whether it was."""
        with self.engine.begin() as conn:
            n = conn.execute(
                update(batches)
                .where(batches.c.id == batch_id, batches.c.status.in_(from_status))
                .values(status=to, **values)
            ).rowcount
        return n == 1

    def set(self, batch_id: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(batches).where(batches.c.id == batch_id).values(**values))

    def done_ids(self, batch_id: str) -> set[str]:
        with self.engine.connect() as conn:
            return set(
                conn.execute(
                    select(batch_lines.c.custom_id).where(batch_lines.c.batch_id == batch_id)
                ).scalars()
            )

    def record_lines(self, batch_id: str, rows: list[LineRow]) -> None:
        """Store finished lines (a custom_id already stored is kept as it is) and recount the batch."""
        with self.engine.begin() as conn:
            have = set(
                conn.execute(
                    select(batch_lines.c.custom_id).where(
                        batch_lines.c.batch_id == batch_id,
                        batch_lines.c.custom_id.in_([r.custom_id for r in rows]),
                    )
                ).scalars()
            )
            new = [{"batch_id": batch_id, **r.model_dump()} for r in rows if r.custom_id not in have]
            if new:
                conn.execute(insert(batch_lines), new)
            ok, bad = conn.execute(
                select(
                    func.count().filter(batch_lines.c.ok.is_(True)),
                    func.count().filter(batch_lines.c.ok.is_(False)),
                ).where(batch_lines.c.batch_id == batch_id)
            ).one()
            conn.execute(update(batches).where(batches.c.id == batch_id).values(completed=ok, failed=bad))

    def lines(self, batch_id: str) -> list[LineRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(batch_lines).where(batch_lines.c.batch_id == batch_id).order_by(batch_lines.c.line_no)
            )
            return [LineRow.model_validate(r, from_attributes=True) for r in rows]


class IntensityProfiles:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def load(self, profiles: list[HourlyProfile], now: datetime | None = None) -> int:
        """Replace the profiles of the regions given (one transaction); returns how many regions."""
        at = now or _now()
        with self.engine.begin() as conn:
            for p in profiles:
                conn.execute(delete(intensity_profiles).where(intensity_profiles.c.region == p.region))
                conn.execute(
                    insert(intensity_profiles),
                    [
                        {"region": p.region, "hour": h, "intensity_kg_per_kwh": v, "loaded_at": at}
                        for h, v in enumerate(p.hours)
                    ],
                )
        return len(profiles)

    def get(self, region: str) -> HourlyProfile | None:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(intensity_profiles.c.hour, intensity_profiles.c.intensity_kg_per_kwh)
                .where(intensity_profiles.c.region == region)
                .order_by(intensity_profiles.c.hour)
            ).all()
        return HourlyProfile(region=region, hours=[v for _, v in rows]) if len(rows) == 24 else None

    def all(self) -> list[HourlyProfile]:
        with self.engine.connect() as conn:
            regions = conn.execute(select(intensity_profiles.c.region).distinct()).scalars().all()
        return [p for r in sorted(regions) if (p := self.get(r)) is not None]
