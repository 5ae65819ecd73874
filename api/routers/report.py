"""Reports for an ESRS E1 (CSRD) disclosure: GET /api/v1/report/summary (a preview: row count, totals) and
GET /api/v1/report/export (CSV, JSON or Parquet, streamed). Scope `read`; everything is the caller's org.

Parameters: `last` or `start`/`end` (as /metrics) or `years` (repeatable: `?years=2025&years=2026`, one
calendar year each), `granularity` (`hourly`, `daily`, `weekly`, `monthly` — the default —, `yearly`),
`project`, `group_by_project`. One row per period (and project): energy (kWh), Scope 2 location- and
market-based, Scope 3 embodied, the totals under both Scope 2 methods, water, cost, each with low/high bounds,
the share of energy measured vs estimated, and the factor versions used — in the vocabulary of /metrics
(`warehouse.reporting`). Periods are clipped to their window (`period_start`/`period_end`): a week that
straddles 1 January appears, in a `years` report, as its part in each year. A JSON report also carries the
window, the totals and a methodology block (sources, versions, boundary). The file name in
`Content-Disposition` names the org, the window and the granularity.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from api.deps import AppContext, Ctx, ReadPrincipal
from api.errors import error_responses, validation_error
from api.routers.export import FILE_CONTENT, MEDIA_TYPES, stream_body
from api.routers.metrics import now, read_warehouse
from api.routers.telemetry import check_project
from core.windows import (
    REPORT_GRANULARITIES,
    Granularity,
    Window,
    WindowError,
    next_bucket,
    window,
    year_windows,
)
from warehouse.measures import ROLLUP_MEASURES
from warehouse.reporting import (
    REPORT_INT_FIGURES,
    every_period,
    report_columns,
    report_figures,
    report_row,
    report_sums,
    zero_sums,
)

router = APIRouter(prefix="/report", tags=["report"], responses=error_responses(401, 403, 404, 422, 503))
log = logging.getLogger("joulestream.api.report")

GranularityName = Literal["hourly", "daily", "weekly", "monthly", "yearly"]
BOUNDARY = {
    "included": [
        "Scope 2 (location-based and market-based): electricity of the inference servers and their data centre "
        "(IT energy × PUE), for every request the gateway served and every usage bucket the providers' usage "
        "APIs reported",
        "Scope 3 (category 1, purchased services): the embodied emissions of the servers' hardware, allocated by "
        "IT energy",
        "water consumed on site (cooling) and off site (electricity generation)",
        "the cost of the tokens (the org's price overrides, else the factor set's price book)",
    ],
    "excluded": [
        "training of the models (not attributable per request)",
        "client devices and networks between the client and the provider",
        "idle capacity the providers keep warm",
        "usage not seen by the gateway nor reported by a connected provider usage API",
    ],
    "units": "energy in kWh, CO2e in grams, water in millilitres, cost in USD; periods in UTC",
    "bounds": "low/high: the factor set's low and high energy per token (and measured energy's uncertainty)",
}


@dataclass(frozen=True)
class ReportParams:
    windows: list[Window]
    granularity: Granularity
    granularity_name: str
    project_id: str | None
    by_project: bool

    @property
    def label(self) -> str:
        labels = [w.label for w in self.windows]
        return labels[0] if len(labels) == 1 else f"{labels[0]}-{labels[-1]}"


async def report_params(
    ctx: Ctx,
    principal: ReadPrincipal,
    last: Annotated[
        str | None, Query(max_length=16, description="24h, 7d, 30d, 1y, ytd or <n>h|d|w|y")
    ] = None,
    start: Annotated[
        str | None, Query(max_length=40, description="ISO 8601 date or whole-hour date-time")
    ] = None,
    end: Annotated[str | None, Query(max_length=40, description="ISO 8601; a date includes that day")] = None,
    years: Annotated[
        list[int] | None,
        Query(max_length=101, description="calendar years, repeatable: years=2025&years=2026"),
    ] = None,
    granularity: Annotated[GranularityName, Query(description="period of a row")] = "monthly",
    project: Annotated[
        str | None, Query(min_length=1, max_length=64, description="only this project")
    ] = None,
    group_by_project: Annotated[bool, Query(description="one row per period and project")] = False,
) -> ReportParams:
    g = REPORT_GRANULARITIES[granularity]
    try:
        if years:
            if last is not None or start is not None or end is not None:
                raise WindowError("years", "give years, or last, or start/end — one of them")
            windows = year_windows(years)
        else:
            windows = [window(last=last, start=start, end=end, now=now(), default_last="1y")]
    except WindowError as exc:
        value = {"years": years, "last": last, "start": start, "end": end}.get(exc.field)
        raise validation_error(("query", exc.field), exc.message, str(value)[:100]) from None
    if g == "hour" and any((w.end - w.start).days > 366 for w in windows):
        raise validation_error(
            ("query", "granularity"), "hourly rows cover at most 366 days per window", granularity
        )
    await check_project(ctx, principal.org_id, project)
    return ReportParams(windows, g, granularity, project, group_by_project)


Params = Annotated[ReportParams, Depends(report_params)]


async def _window_rows(ctx: AppContext, org_id: str, p: ReportParams, w: Window) -> list[dict[str, Any]]:
    empty = [] if p.by_project else every_period([], w, p.granularity)  # no warehouse: every period empty
    return await read_warehouse(
        ctx, report_sums, org_id, w, p.granularity, p.project_id, p.by_project, empty=empty
    )


def _row(
    r: dict[str, Any], w: Window, g: Granularity, names: dict[str, str], by_project: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "period_start": max(r["bucket"], w.start),
        "period_end": min(next_bucket(r["bucket"], g), w.end),
    }
    if by_project:
        out["project_id"] = r["project_id"]
        out["project"] = names.get(r["project_id"])
    out.update(report_row(r))
    out["factors_versions"] = ";".join(r["factors_versions"])
    return out


class _Totals:
    """The report's totals: the rows' sums added up (rollup measures), shown with `figures`."""

    def __init__(self) -> None:
        self.sums = zero_sums()
        self.versions: set[str] = set()
        self.rows = 0

    def add(self, r: dict[str, Any]) -> None:
        for c in ROLLUP_MEASURES:
            self.sums[c] += r[c]
        self.versions.update(r["factors_versions"])
        self.rows += 1

    def out(self) -> dict[str, Any]:
        return report_figures(self.sums)


async def _rows(
    ctx: AppContext, org_id: str, p: ReportParams, totals: _Totals
) -> AsyncIterator[list[dict[str, Any]]]:
    names = await run_in_threadpool(ctx.projects.names, org_id) if p.by_project else {}
    for w in p.windows:
        found = await _window_rows(ctx, org_id, p, w)
        for r in found:
            totals.add(r)
        yield [_row(r, w, p.granularity, names, p.by_project) for r in found]


def _windows_out(p: ReportParams) -> list[dict[str, Any]]:
    return [{"start": w.start, "end": w.end, "label": w.label} for w in p.windows]


@router.get("/summary", summary="Preview of a report: row count and totals")
async def report_summary(ctx: Ctx, principal: ReadPrincipal, p: Params) -> dict[str, Any]:
    totals = _Totals()
    async for _ in _rows(ctx, principal.org_id, p, totals):
        pass
    return {
        "windows": _windows_out(p),
        "granularity": p.granularity_name,
        "project_id": p.project_id,
        "group_by_project": p.by_project,
        "row_count": totals.rows,
        "columns": list(report_columns(p.by_project)),
        "totals": totals.out(),
        "factors_versions": sorted(totals.versions),
    }


# --------------------------------------------------------------------------------------------- files


def _cell(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat().replace("+00:00", "Z")
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return v


def _csv(rows: list[dict[str, Any]], columns: tuple[str, ...], header: bool) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if header:
        w.writerow(columns)
    for r in rows:
        w.writerow([_cell(r[c]) for c in columns])
    return buf.getvalue().encode()


def _arrow_schema(columns: tuple[str, ...]) -> pa.Schema:
    def typ(c: str) -> pa.DataType:
        if c in ("period_start", "period_end"):
            return pa.timestamp("s", tz="UTC")
        if c in ("project_id", "project", "factors_versions"):
            return pa.string()
        return pa.int64() if c in REPORT_INT_FIGURES else pa.float64()

    return pa.schema([(c, typ(c)) for c in columns])


def _methodology(ctx: AppContext, versions: list[str]) -> dict[str, Any]:
    sources: dict[str, str] = {}
    for v in versions:
        fv = ctx.factor_versions.get(v)
        if fv is not None:
            sources.update(fv.factor_set.sources)
    current = ctx.factor_versions.current()
    return {
        "factors_versions": versions,
        "current_factors_version": current.factor_set.version if current else None,
        "description": "energy per token by model tier and phase × PUE → kWh; × grid intensity (location- and "
        "market-based) → Scope 2 CO2e; IT energy × embodied factor → Scope 3; water and cost per event. "
        "GET /api/v1/methodology has every value and formula.",
        "boundary": BOUNDARY,
        "sources": sources,
    }


async def _file(ctx: AppContext, org: dict[str, str], p: ReportParams, fmt: str) -> AsyncIterator[bytes]:
    columns = report_columns(p.by_project)
    totals = _Totals()
    if fmt == "csv":
        header = True
        async for rows in _rows(ctx, org["id"], p, totals):
            yield _csv(rows, columns, header)
            header = False
        if header:
            yield _csv([], columns, True)
    elif fmt == "parquet":
        schema = _arrow_schema(columns)
        sink = io.BytesIO()
        writer = pq.ParquetWriter(sink, schema)
        async for rows in _rows(ctx, org["id"], p, totals):
            if rows:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                yield _drain(sink)
        writer.close()
        yield _drain(sink)
    else:
        head = {
            "org": org["slug"],
            "generated_at": now(),
            "windows": _windows_out(p),
            "granularity": p.granularity_name,
            "project_id": p.project_id,
            "group_by_project": p.by_project,
            "columns": list(columns),
        }
        yield b'{"report":' + orjson.dumps(head) + b',"rows":['
        first = True
        async for rows in _rows(ctx, org["id"], p, totals):
            for r in rows:
                yield (b"" if first else b",") + orjson.dumps(r)
                first = False
        versions = sorted(totals.versions)
        methodology = await run_in_threadpool(_methodology, ctx, versions)
        yield (
            b'],"totals":'
            + orjson.dumps({"row_count": totals.rows, **totals.out()})
            + b',"methodology":'
            + orjson.dumps(methodology)
            + b"}"
        )


def _drain(sink: io.BytesIO) -> bytes:
    data = sink.getvalue()
    sink.seek(0)
    sink.truncate()
    return data


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"description": "The report file (attachment)", "content": FILE_CONTENT}},
    summary="Download the report: CSV, JSON (with totals and methodology) or Parquet",
)
async def report_export(
    ctx: Ctx,
    principal: ReadPrincipal,
    p: Params,
    format: Annotated[Literal["csv", "json", "parquet"], Query(description="file format")] = "csv",
) -> StreamingResponse:
    org = {"id": principal.org_id, "slug": principal.org_slug}
    body = _file(ctx, org, p, format)
    try:  # the first chunk before answering: a failing warehouse is still a clean 503
        first = await anext(body)
    except StopAsyncIteration:
        first = b""
    except HTTPException:
        await body.aclose()
        raise
    filename = f"joulestream-{principal.org_slug}-{p.label}-{p.granularity_name}.{format}"
    return StreamingResponse(
        stream_body(first, body, what="report export"),
        media_type=MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
    )
