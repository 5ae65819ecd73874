"""The dashboard KPI cache (table `kpi_cache`, migration `0050_kpi_cache`): per org and window slug, the figures
and chart points the API computed from the warehouse rollups (`api/kpis.py`), and when. Reading it is one
primary-key lookup — `/metrics/dashboard-summary` never scans the warehouse.

Tenancy: every method takes `org_id`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Engine, delete, insert, select

from controlplane.schema import kpi_cache, organizations


@dataclass(frozen=True)
class KpiEntry:
    org_id: str
    window_slug: str
    window_start: datetime
    window_end: datetime
    computed_at: datetime
    summary: dict[str, Any]
    series: dict[str, Any]


class KpiCache:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def put(
        self,
        org_id: str,
        slug: str,
        window_start: datetime,
        window_end: datetime,
        computed_at: datetime,
        summary: dict[str, Any],
        series: dict[str, Any],
    ) -> None:
        """Replace the entry of (org, slug) — in one transaction: a reader sees the old or the new one."""
        row = {
            "org_id": org_id,
            "window_slug": slug,
            "window_start": window_start,
            "window_end": window_end,
            "computed_at": computed_at,
            "summary": orjson.dumps(summary).decode(),
            "series": orjson.dumps(series).decode(),
        }
        with self.engine.begin() as conn:
            conn.execute(
                delete(kpi_cache).where(kpi_cache.c.org_id == org_id, kpi_cache.c.window_slug == slug)
            )
            conn.execute(insert(kpi_cache).values(**row))

    def get(self, org_id: str, slug: str) -> KpiEntry | None:
        with self.engine.connect() as conn:
            r = conn.execute(
                select(kpi_cache).where(kpi_cache.c.org_id == org_id, kpi_cache.c.window_slug == slug)
            ).first()
        return None if r is None else _entry(r)

    def all(self, org_id: str) -> list[KpiEntry]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(kpi_cache).where(kpi_cache.c.org_id == org_id)).all()
        return [_entry(r) for r in rows]

    def org_ids(self) -> list[str]:
        """Every organization (the scheduled refresh computes each one's KPIs)."""
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(select(organizations.c.id).order_by(organizations.c.id))]


def _entry(r: Any) -> KpiEntry:
    return KpiEntry(
        org_id=r.org_id,
        window_slug=r.window_slug,
        window_start=r.window_start,
        window_end=r.window_end,
        computed_at=r.computed_at,
        summary=orjson.loads(r.summary),
        series=orjson.loads(r.series),
    )
