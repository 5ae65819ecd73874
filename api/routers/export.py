"""Export: GET /api/v1/export/telemetry?format=csv|json|parquet. Scope `read`, the caller's org only.

`format` defaults to csv. One row per day × project × provider × model × factor version (the daily rollup), columns
`EXPORT_COLUMNS`; at most a 90-day window (`end_date - start_date <= 90 days`, else 400 with the reason);
default window: the 30 days before end_date (default today, UTC). The body is streamed from ClickHouse
chunk by chunk (memory does not grow with the row count):

* csv — a header line, then one line per row;
* json — `{"data": [rows…], "export_metadata": {exported_at, total_records, filters_applied}}`; the
  metadata comes after the rows, once they are counted;
* parquet — row group by row group, footer last.

`Content-Disposition: attachment; filename="telemetry-<end_date>.<format>"`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import StreamingResponse

from api.deps import Ctx, Dates, ReadPrincipal
from api.errors import error_responses
from api.routers.telemetry import ModelFilter, ProjectFilter, project_names
from warehouse.export import EXPORT_COLUMNS
from warehouse.telemetry import Scope

router = APIRouter(prefix="/export", tags=["export"], responses=error_responses(401, 403))
log = logging.getLogger("joulestream.api.export")

MAX_WINDOW_DAYS = 90
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "parquet": "application/vnd.apache.parquet",
}
# the OpenAPI content of a streamed file in one of the three formats
FILE_CONTENT = {
    "text/csv": {"schema": {"type": "string"}},
    "application/json": {"schema": {"type": "object"}},
    "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
}
_DOC = (
    "Columns: " + ", ".join(EXPORT_COLUMNS) + ". One row per day × project × provider × model × factor "
    "version. Streamed."
)


@router.get(
    "/telemetry",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The export file (attachment). " + _DOC,
            "content": FILE_CONTENT,
        },
        **error_responses(400, 404, 503),
    },
    summary="Export daily telemetry as CSV, JSON or Parquet (max 90 days)",
)
async def export_telemetry(
    ctx: Ctx,
    principal: ReadPrincipal,
    dates: Dates,
    format: Annotated[Literal["csv", "json", "parquet"], Query(description="file format")] = "csv",
    project_id: ProjectFilter = None,
    model: ModelFilter = None,
) -> StreamingResponse:
    span = (dates.end - dates.start).days
    if span > MAX_WINDOW_DAYS:
        raise HTTPException(
            400,
            f"the export window is at most {MAX_WINDOW_DAYS} days: {dates.start.isoformat()} to "
            f"{dates.end.isoformat()} spans {span} days; split the export into smaller windows",
        )
    names = await project_names(ctx, principal.org_id, project_id)
    filters = {"start_date": dates.start.isoformat(), "end_date": dates.end.isoformat(), "format": format}
    if project_id is not None:
        filters["project_id"] = project_id
    if model is not None:
        filters["model"] = model
    metadata = {
        "exported_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "filters_applied": filters,
    }
    scope = Scope(principal.org_id, dates.start, dates.end, project_id=project_id, model=model)

    chunks = ctx.telemetry.export(scope, format, names, metadata)  # NullTelemetry: a file without rows
    try:  # open the query before answering, so a failure is still a clean 503
        first = await anext(chunks)
    except StopAsyncIteration:
        first = b""
    except Exception as exc:
        await chunks.aclose()
        log.error("export failed to start: %s", exc, exc_info=True)
        raise HTTPException(503, "telemetry store unavailable, retry later") from exc
    body = stream_body(first, chunks)
    filename = f"telemetry-{dates.end.isoformat()}.{format}"
    return StreamingResponse(
        body,
        media_type=MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
    )


async def stream_body(first: bytes, rest: AsyncIterator[bytes], what: str = "export") -> AsyncIterator[bytes]:
    """A streamed file's body: its first chunk (read before answering, so a failure is still a clean status)
    and the rest; a failure mid-stream cuts the body short (the headers are gone) and is logged."""
    try:
        if first:
            yield first
        async for chunk in rest:
            yield chunk
    except Exception:  # headers are gone: all we can do is cut the body short (the client sees it)
        log.exception("%s failed mid-stream", what)
        raise
    finally:
        await rest.aclose()
