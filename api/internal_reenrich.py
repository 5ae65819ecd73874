"""Loopback endpoints of the runtime for re-enrichment (`/internal/v1/reenrich/…`, runtime token required).

When `joulestream up` holds the embedded warehouse, `joulestream reenrich` (cli/reenrich.py) runs in another
process and asks the runtime for the live rows (warehouse/reenrich.py, an Arrow IPC stream) and to write the
recomputed revisions through the ledger writer — the same functions it calls on a warehouse it opens itself,
run here on the warehouse thread. The figures are computed by the command, not here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

import orjson
import pyarrow as pa
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from api.internal import held, runtime_token
from warehouse.aio import AsyncWarehouse
from warehouse.ledger import write_enriched
from warehouse.reenrich import live_months, live_page
from warehouse.staging import UnfitRows

ARROW_STREAM = "application/vnd.apache.arrow.stream"


def reenrich_router(token: str, warehouse: Callable[[], AsyncWarehouse | None]) -> APIRouter:
    router = APIRouter(
        prefix="/internal/v1/reenrich", dependencies=[runtime_token(token)], include_in_schema=False
    )

    @router.get("/months")
    async def months(since: date, org_id: str | None = None) -> dict[str, Any]:
        return {"months": await held(warehouse).run(live_months, since, org_id)}

    @router.get("/page")
    async def page(org_id: str, start: date, end: date, since: date, after: str, limit: int) -> Response:
        table = await held(warehouse).run(live_page, org_id, start, end, since, after, min(limit, 50_000))
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return Response(sink.getvalue().to_pybytes(), media_type=ARROW_STREAM)

    @router.post("/write")
    async def write(request: Request) -> dict[str, int]:
        try:
            rows = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            raise HTTPException(422, detail=f"body is not JSON: {exc}") from exc
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise HTTPException(422, detail="body must be a JSON array of enriched events")
        try:
            result = await held(warehouse).run(write_enriched, rows)
        except (UnfitRows, ValueError, TypeError, KeyError) as exc:
            raise HTTPException(422, detail=f"rows do not fit the ledger: {exc}") from exc
        return result._asdict()

    return router
