"""Loopback-only endpoints of the runtime (the process that holds the embedded warehouse; warehouse/runtime.py).

They let operator commands (`joulestream totals`) and tests read the warehouse while another process holds
it, and show live pipeline counters. Every call needs the runtime token of runtime.json in the
`X-Joulestream-Runtime-Token` header: `runtime_token(token)` is that check, shared by every internal router.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from clickhouse_connect.driver import Client
from fastapi import APIRouter, Depends, Header, HTTPException

from warehouse import calibration, queries
from warehouse.aio import AsyncWarehouse
from warehouse.runtime import TOKEN_HEADER, token_matches


def runtime_token(token: str) -> Any:
    """The dependency that refuses (401) a call without this runtime's token."""

    def check(given: str = Header(default="", alias=TOKEN_HEADER)) -> None:
        if not token_matches(given, token):
            raise HTTPException(401, detail="missing or wrong runtime token")

    return Depends(check)


def held(warehouse: Callable[[], AsyncWarehouse | None]) -> AsyncWarehouse:
    """The warehouse this runtime holds, or 503 while it does not (yet) hold one."""
    wh = warehouse()
    if wh is None:
        raise HTTPException(503, detail="this runtime does not hold the warehouse")
    return wh


TotalsBy = Literal["none", "org", "project", "model", "day", "region"]


def totals_payload(client: Client, by: TotalsBy = "none") -> dict[str, Any]:
    """What `joulestream totals` shows, read on a warehouse client: the totals, and with `by` one row per
    group carrying only the keys it is grouped by (the others are None in `TotalsRow`, and left out)."""
    total = queries.totals(client)
    rows = [] if by == "none" else queries.totals_by(client, by)
    return {
        "totals": total.model_dump(mode="json"),
        "rows": [r.model_dump(mode="json", exclude_none=True) for r in rows],
    }


def internal_router(
    token: str, warehouse: Callable[[], AsyncWarehouse | None], stats: Callable[[], dict]
) -> APIRouter:
    router = APIRouter(prefix="/internal/v1", dependencies=[runtime_token(token)], include_in_schema=False)

    @router.get("/stats")
    async def get_stats() -> dict[str, Any]:
        return stats()

    @router.get("/totals")
    async def get_totals(by: TotalsBy = "none") -> dict[str, Any]:
        return await held(warehouse).run(totals_payload, by)

    @router.get("/calibration")
    async def get_calibration(org_id: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        return await held(warehouse).run(calibration_payload, org_id, start, end)

    return router


def calibration_payload(client: Client, org_id: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """What `joulestream calibration` shows (warehouse/calibration.py)."""
    return [r._asdict() for r in calibration.calibration(client, org_id, start, end)]
