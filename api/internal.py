"""Loopback-only endpoints of the embedded runtime (the process that holds the warehouse).

They let operator commands (`joulestream totals`) and tests read the warehouse while another process
holds it, and show live pipeline counters. Every call needs the runtime token from runtime.json.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException

from warehouse import queries
from warehouse.aio import AsyncWarehouse


def internal_router(
    token: str, warehouse: Callable[[], AsyncWarehouse | None], stats: Callable[[], dict]
) -> APIRouter:
    def check(x_joulestream_runtime_token: str = Header(default="")) -> None:
        if not secrets.compare_digest(x_joulestream_runtime_token, token):
            raise HTTPException(401, detail="missing or wrong runtime token")

    router = APIRouter(prefix="/internal/v1", dependencies=[Depends(check)], include_in_schema=False)

    @router.get("/stats")
    async def get_stats() -> dict[str, Any]:
        return stats()

    @router.get("/totals")
    async def get_totals(by: Literal["none", "org", "project", "model", "day"] = "none") -> dict[str, Any]:
        wh = warehouse()
        if wh is None:
            raise HTTPException(503, detail="this runtime does not hold the warehouse")
        total = await wh.run(queries.totals)
        rows = [] if by == "none" else await wh.run(queries.totals_by, by)
        return {"totals": total.model_dump(mode="json"), "rows": [r.model_dump(mode="json") for r in rows]}

    return router
