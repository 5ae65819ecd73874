"""The dashboard KPI cache's producer: for each org and each window of `core.windows.WINDOW_SLUGS` (24h, 7d,
30d, 1y, ytd), the window's figures and its chart points, computed from the warehouse rollups and stored in
the control plane (`controlplane.kpi_cache`) with the time they were computed.

When it runs:
* on a schedule — every API process runs `KpiRefresher` in its lifespan, every `kpi_refresh_s` seconds
  (setting JOULESTREAM_KPI_REFRESH_S, default 60; 0 turns the schedule off). Several API processes each
  refresh: the writes are idempotent (the last one wins, each a complete entry in one transaction);
* on request — `POST /api/v1/metrics/dashboard-summary/refresh` (202, computed after the response);
* on a first read of an org that has no entry yet.

The API process is the one part of every deployment that already reads the warehouse (embedded: through the
runtime that holds chdb; distributed: the ClickHouse server), so the schedule lives there rather than in the
stream worker (which only writes) or Dagster (a monthly job runner, not running in the embedded stack).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from api.deps import AppContext
from api.savings import record_due
from controlplane.kpi_cache import KpiCache
from core.windows import WINDOW_SLUGS, last_window
from warehouse import reporting
from warehouse.reporting import DEFAULT_POINT_FIELDS, series

log = logging.getLogger("joulestream.api.kpis")


def _compute(client: Any, org_id: str, now: datetime) -> dict[str, tuple[Any, dict, list]]:
    """slug → (window, window sums, bucket rows): two rollup queries per window, on the warehouse thread."""
    out = {}
    for slug, granularity in WINDOW_SLUGS.items():
        w = last_window(slug, now)
        q = reporting.Query(org_id, w, granularity)
        out[slug] = (w, reporting.totals(client, q), reporting.sums(client, q))
    return out


def entries(org_id: str, now: datetime, found: dict[str, tuple[Any, dict, list]]) -> list[dict[str, Any]]:
    """The cache entries of one org from `_compute`'s sums."""
    out = []
    for slug, (w, totals, rows) in found.items():
        g = WINDOW_SLUGS[slug]
        summary = {**reporting.figures(totals), **reporting.estimated_part(totals)}
        points = series(rows, w, g, (), DEFAULT_POINT_FIELDS, 1)[0]["points"]
        out.append(
            {
                "org_id": org_id,
                "slug": slug,
                "window_start": w.start,
                "window_end": w.end,
                "computed_at": now,
                "summary": summary,
                "series": {"granularity": g, "fields": list(DEFAULT_POINT_FIELDS), "points": points},
            }
        )
    return out


async def refresh_org(ctx: AppContext, org_id: str, now: datetime | None = None) -> None:
    """Recompute and store one org's KPIs (all windows)."""
    now = now or datetime.now(UTC)
    read = getattr(ctx.telemetry, "read", None)
    if read is None:  # no warehouse: the figures are zeros
        empty = {slug: (last_window(slug, now), reporting.zero_sums(), []) for slug in WINDOW_SLUGS}
        found = empty
    else:
        found = await read(_compute, org_id, now)
    cache = KpiCache(ctx.engine)
    for e in entries(org_id, now, found):
        await asyncio.to_thread(
            cache.put,
            e["org_id"],
            e["slug"],
            e["window_start"],
            e["window_end"],
            e["computed_at"],
            e["summary"],
            e["series"],
        )


async def refresh_all(ctx: AppContext) -> int:
    """Recompute every org's KPIs; returns how many orgs were refreshed (a failing org is logged, skipped)."""
    done = 0
    for org_id in await asyncio.to_thread(KpiCache(ctx.engine).org_ids):
        try:
            await refresh_org(ctx, org_id)
            done += 1
        except Exception as exc:
            log.warning("KPI refresh of org %s failed: %s", org_id, exc, exc_info=True)
    return done


class KpiRefresher:
    """The scheduled refresh: `refresh_all` every `interval_s` seconds, until `stop()`."""

    def __init__(self, ctx: AppContext, interval_s: float) -> None:
        self.ctx = ctx
        self.interval_s = interval_s
        self.runs = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self.interval_s > 0 and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="kpi-refresh")

    async def _loop(self) -> None:
        # the first run waits one interval: an org's first read computes its entry anyway
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await refresh_all(self.ctx)
                await record_due(self.ctx)  # the measured savings ledger's due days (api/savings.py)
                self.runs += 1
            except Exception as exc:  # the control plane is down: try again next time
                log.warning("KPI refresh failed: %s", exc, exc_info=True)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
