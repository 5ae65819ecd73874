"""Loopback endpoints of the runtime for the monthly close (`/internal/v1/close/…`, runtime token required).

The process that holds the embedded warehouse (`joulestream up`) answers the close's warehouse queries for
Dagster runs and `joulestream close-month` started in other processes (warehouse/runtime.py,
orchestration/resources.py, docs/monthly-close.md): the same functions of `warehouse/close.py`, run on the
warehouse thread. Events come back as an Arrow IPC stream.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import pyarrow as pa
from fastapi import APIRouter
from fastapi.responses import Response

from api.internal import held, runtime_token
from warehouse import close as close_queries
from warehouse.aio import AsyncWarehouse

ARROW_STREAM = "application/vnd.apache.arrow.stream"


def close_router(token: str, warehouse: Callable[[], AsyncWarehouse | None]) -> APIRouter:
    router = APIRouter(
        prefix="/internal/v1/close", dependencies=[runtime_token(token)], include_in_schema=False
    )

    def _wh() -> AsyncWarehouse:
        return held(warehouse)

    @router.get("/orgs")
    async def orgs(start: date, end: date, cutoff: datetime) -> dict[str, Any]:
        return {"orgs": await _wh().run(close_queries.close_orgs, start, end, cutoff)}

    @router.get("/totals")
    async def totals(
        org_id: str, start: date, end: date, cutoff: datetime, adjustment_from: datetime | None = None
    ) -> dict[str, Any]:
        return await _wh().run(close_queries.close_totals, org_id, start, end, cutoff, adjustment_from)

    @router.get("/events")
    async def events(
        org_id: str, start: date, end: date, cutoff: datetime, adjustment_from: datetime | None = None
    ) -> Response:
        table = await _wh().run(close_queries.close_events, org_id, start, end, cutoff, adjustment_from)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return Response(sink.getvalue().to_pybytes(), media_type=ARROW_STREAM)

    return router
