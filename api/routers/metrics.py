"""Metrics: /api/v1/metrics, /metrics/summary, /metrics/timeseries, /metrics/by-project, /metrics/top-models,
and the precomputed dashboard KPIs (/metrics/dashboard-summary, /dashboard-timeseries/{window_slug},
POST /dashboard-summary/refresh). Scope `read` (the refresh: `read` too — it only recomputes the caller's own
cached figures); everything is the caller's org.

Common parameters: `project` (a project id of the caller's org, deleted ones included), `last` (`24h`, `7d`,
`30d`, `1y`, `ytd`, any `<n>h|d|w|y`; default 30d) or `start`/`end` (ISO 8601; see `core.windows`), and
`granularity` (`hour`, `day`, `week`, `month`, `year`; default hour for windows up to 48 h, else day).
Figures use one vocabulary (`warehouse.reporting.figures`): a row, a series point, the summary, by-project,
top-N and the report file name them alike. Bad parameters answer 422 with field errors; warehouse failures 503.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Depends, Path, Query
from fastapi.concurrency import run_in_threadpool

from api import kpis
from api.deps import AppContext, Ctx, ReadPrincipal
from api.errors import error_responses, validation_error
from api.routers.telemetry import check_project, warehouse_call
from controlplane.kpi_cache import KpiCache, KpiEntry
from core.windows import WINDOW_SLUGS, Granularity, Window, WindowError, next_bucket, window
from warehouse import reporting
from warehouse.reporting import (
    DEFAULT_POINT_FIELDS,
    DIMENSIONS,
    FIGURE_NAMES,
    RANK_MEASURES,
    estimated_part,
    figures,
    series,
)
from warehouse.reporting import Query as SumQuery

router = APIRouter(prefix="/metrics", tags=["metrics"], responses=error_responses(401, 403, 404, 422, 503))

SeriesGroup = Literal["model", "project", "provider", "routing_tier", "workload", "region"]
_ROW_KEYS = ("project_id", "workload_id", "provider", "model")
log = logging.getLogger("joulestream.api.metrics")


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Params:
    window: Window
    granularity: Granularity
    project_id: str | None

    def window_dict(self) -> dict[str, Any]:
        return {"start": self.window.start, "end": self.window.end, "label": self.window.label}


def _window_or_422(**kw: Any) -> Window:
    try:
        return window(now=now(), **kw)
    except WindowError as exc:
        raise validation_error(("query", exc.field), exc.message, kw.get(exc.field)) from None


async def params(
    ctx: Ctx,
    principal: ReadPrincipal,
    project: Annotated[
        str | None, Query(min_length=1, max_length=64, description="only this project (an id of your org)")
    ] = None,
    last: Annotated[
        str | None,
        Query(max_length=16, description="24h, 7d, 30d, 1y, ytd or <n>h|d|w|y (default 30d)"),
    ] = None,
    start: Annotated[
        str | None, Query(max_length=40, description="ISO 8601 date or whole-hour date-time")
    ] = None,
    end: Annotated[str | None, Query(max_length=40, description="ISO 8601; a date includes that day")] = None,
    granularity: Annotated[
        Granularity | None,
        Query(description="hour, day, week, month, year (default: hour up to 48 h, else day)"),
    ] = None,
) -> Params:
    w = _window_or_422(last=last, start=start, end=end)
    g = granularity or ("hour" if w.end - w.start <= timedelta(hours=48) else "day")
    if g == "hour" and w.end - w.start > timedelta(days=366):
        raise validation_error(("query", "granularity"), "hourly buckets cover at most 366 days", g)
    await check_project(ctx, principal.org_id, project)
    return Params(w, g, project)


MetricsParams = Annotated[Params, Depends(params)]


async def read_warehouse(ctx: AppContext, fn: Any, *args: Any, empty: Any) -> Any:
    """`fn(client, *args)` on the warehouse thread (503 on failure); `empty` without a warehouse."""
    read = getattr(ctx.telemetry, "read", None)
    if read is None:
        return empty
    return await warehouse_call(read, fn, *args)


def _names(ctx: AppContext, org_id: str) -> dict[str, str]:
    return ctx.projects.names(org_id)


def _estimation(row: dict[str, Any], reasons: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {**estimated_part(row), "estimation_reasons": [r["reason"] for r in reasons or []]}


# --------------------------------------------------------------------------------------------- rows


def _metric_rows(client: Any, q: SumQuery, offset: int, limit: int) -> dict[str, Any]:
    rows, total = reporting.page(client, q, offset, limit)
    reasons: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    if rows:
        lo = min(r["bucket"] for r in rows)
        hi = max(r["bucket"] for r in rows)
        span = Window(
            max(lo, q.window.start), min(next_bucket(hi, q.granularity or "hour"), q.window.end), ""
        )
        reasons = reporting.estimation_reasons(
            client, SumQuery(q.org_id, span, q.granularity, (), q.project_id), _ROW_KEYS
        )
    return {"rows": rows, "total": total, "reasons": reasons}


@router.get("", summary="Rows per workload × model × time bucket (paginated)")
async def list_metrics(
    ctx: Ctx,
    principal: ReadPrincipal,
    p: MetricsParams,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="rows per page (max 1000)")] = 100,
) -> dict[str, Any]:
    q = SumQuery(principal.org_id, p.window, p.granularity, _ROW_KEYS, p.project_id)
    found = await read_warehouse(
        ctx, _metric_rows, q, offset, limit, empty={"rows": [], "total": 0, "reasons": {}}
    )
    names = await run_in_threadpool(_names, ctx, principal.org_id)
    out = []
    for r in found["rows"]:
        key = (r["bucket"], *(r[k] for k in _ROW_KEYS))
        out.append(
            {
                "timestamp": r["bucket"],
                "project_id": r["project_id"],
                "project": names.get(r["project_id"]),
                "workload_id": r["workload_id"],
                "provider": r["provider"],
                "model": r["model"],
                **figures(r),
                **_estimation(r, found["reasons"].get(key)),
            }
        )
    return {
        "window": p.window_dict(),
        "granularity": p.granularity,
        "metrics": out,
        "total": found["total"],
        "offset": offset,
        "limit": limit,
    }


# --------------------------------------------------------------------------------------------- summary


def _summary(client: Any, q: SumQuery) -> dict[str, Any]:
    """`q`: the window's totals (no bucket, no group)."""
    total = reporting.totals(client, q)
    versions = reporting.factor_versions(client, q)
    reasons = reporting.estimation_reasons(client, q)
    return {"sums": total, "versions": versions.get((), []), "reasons": reasons.get((), [])}


@router.get("/summary", summary="Totals for the window, with low/high bounds")
async def metrics_summary(ctx: Ctx, principal: ReadPrincipal, p: MetricsParams) -> dict[str, Any]:
    q = SumQuery(principal.org_id, p.window, None, (), p.project_id)
    empty = {"sums": reporting.zero_sums(), "versions": [], "reasons": []}
    found = await read_warehouse(ctx, _summary, q, empty=empty)
    est = _estimation(found["sums"], found["reasons"])
    est["estimation_reasons"] = found["reasons"]
    return {
        "window": p.window_dict(),
        "project_id": p.project_id,
        **figures(found["sums"]),
        **est,
        "factors_versions": found["versions"],
    }


# --------------------------------------------------------------------------------------------- series


def _fields(fields: str | None) -> tuple[str, ...]:
    if fields is None:
        return DEFAULT_POINT_FIELDS
    if fields == "all":
        return FIGURE_NAMES
    names = tuple(f.strip() for f in fields.split(",") if f.strip())
    unknown = [f for f in names if f not in FIGURE_NAMES]
    if unknown or not names:
        raise validation_error(
            ("query", "fields"),
            f"unknown figure(s) {unknown[:5]}; known: {', '.join(FIGURE_NAMES)}",
            fields[:200],
        )
    return names


@router.get("/timeseries", summary="Bucketed series for charts, optionally one series per group")
async def metrics_timeseries(
    ctx: Ctx,
    principal: ReadPrincipal,
    p: MetricsParams,
    group_by: Annotated[SeriesGroup | None, Query(description="one series per model, project, …")] = None,
    fields: Annotated[
        str | None, Query(max_length=2000, description="comma-separated figures per point, or `all`")
    ] = None,
    max_series: Annotated[
        int, Query(ge=1, le=100, description="largest series kept; the rest is 'other'")
    ] = 20,
) -> dict[str, Any]:
    want = _fields(fields)
    keys = (DIMENSIONS[group_by],) if group_by else ()
    q = SumQuery(principal.org_id, p.window, p.granularity, keys, p.project_id)
    rows = await read_warehouse(ctx, reporting.sums, q, empty=[])
    return {
        "window": p.window_dict(),
        "granularity": p.granularity,
        "group_by": group_by,
        "fields": list(want),
        "series": series(rows, p.window, p.granularity, keys, want, max_series),
    }


# --------------------------------------------------------------------------------------------- totals by


@router.get("/by-project", summary="Totals per project")
async def metrics_by_project(ctx: Ctx, principal: ReadPrincipal, p: MetricsParams) -> dict[str, Any]:
    q = SumQuery(principal.org_id, p.window, None, ("project_id",), p.project_id)
    rows = await read_warehouse(ctx, reporting.sums, q, empty=[])
    names = await run_in_threadpool(_names, ctx, principal.org_id)
    projects = [
        {"project_id": r["project_id"], "project": names.get(r["project_id"]), **figures(r)} for r in rows
    ]
    projects.sort(key=lambda x: (-x["co2e_grams"], x["project_id"]))
    return {"window": p.window_dict(), "projects": projects}


@router.get("/top-models", summary="The top-N models by CO2e, cost or energy")
async def metrics_top_models(
    ctx: Ctx,
    principal: ReadPrincipal,
    p: MetricsParams,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    metric: Annotated[Literal["co2", "cost", "energy"], Query()] = "co2",
) -> dict[str, Any]:
    q = SumQuery(principal.org_id, p.window, None, ("provider", "model"), p.project_id)
    rows = await read_warehouse(ctx, reporting.top, q, RANK_MEASURES[metric], limit, empty=[])
    return {
        "window": p.window_dict(),
        "metric": metric,
        "models": [{"provider": r["provider"], "model": r["model"], **figures(r)} for r in rows],
    }


# --------------------------------------------------------------------------------------------- dashboard KPIs


def check_slug(slug: str) -> str:
    if slug not in WINDOW_SLUGS:
        raise validation_error(
            ("path", "window_slug"), f"window_slug must be one of {', '.join(WINDOW_SLUGS)}", slug[:40]
        )
    return slug


async def _cached(ctx: AppContext, org_id: str) -> list[KpiEntry]:
    """The org's cache entries; computed once now when the org has none yet (a first read)."""
    cache = KpiCache(ctx.engine)
    found = await run_in_threadpool(cache.all, org_id)
    if len(found) < len(WINDOW_SLUGS):
        await warehouse_call(kpis.refresh_org, ctx, org_id)
        found = await run_in_threadpool(cache.all, org_id)
    return found


@router.get("/dashboard-summary", summary="Precomputed KPIs for 24h, 7d, 30d, 1y and ytd (from the cache)")
async def dashboard_summary(ctx: Ctx, principal: ReadPrincipal) -> dict[str, Any]:
    found = {e.window_slug: e for e in await _cached(ctx, principal.org_id)}
    return {
        "computed_at": min(e.computed_at for e in found.values()),
        "refresh_interval_s": ctx.settings.kpi_refresh_s,
        "windows": {
            slug: {
                "window": {"start": e.window_start, "end": e.window_end, "label": slug},
                "computed_at": e.computed_at,
                **e.summary,
            }
            for slug in WINDOW_SLUGS
            if (e := found.get(slug)) is not None
        },
    }


@router.get(
    "/dashboard-timeseries/{window_slug}", summary="Precomputed chart points of one window (from the cache)"
)
async def dashboard_timeseries(
    ctx: Ctx,
    principal: ReadPrincipal,
    window_slug: Annotated[str, Path(max_length=16, description=f"one of {', '.join(WINDOW_SLUGS)}")],
) -> dict[str, Any]:
    slug = check_slug(window_slug)
    found = {e.window_slug: e for e in await _cached(ctx, principal.org_id)}
    e = found[slug]
    return {
        "window": {"start": e.window_start, "end": e.window_end, "label": slug},
        "computed_at": e.computed_at,
        **e.series,
    }


@router.post(
    "/dashboard-summary/refresh",
    status_code=202,
    summary="Recompute the cached KPIs now (in the background; 202)",
)
async def dashboard_refresh(
    ctx: Ctx, principal: ReadPrincipal, background: BackgroundTasks
) -> dict[str, Any]:
    background.add_task(_refresh_quietly, ctx, principal.org_id)
    return {"status": "accepted", "requested_at": now()}


async def _refresh_quietly(ctx: AppContext, org_id: str) -> None:
    try:
        await kpis.refresh_org(ctx, org_id)
    except Exception as exc:  # logged: the next scheduled refresh tries again
        log.warning("KPI refresh of org %s failed: %s", org_id, exc, exc_info=True)
