"""The sustainability score: GET /api/v1/sustainability (scope `read`, the caller's org) → `overall_score` 0–100
and `dimension_scores` (each with its score, weight and what drove it) over the window (`last`, default 30d,
or `start`/`end`) and, for the trend, the window of the same length before it. Formulas and weights:
`core/insights/score.py`, docs/insights.md."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from api.deps import Ctx, ReadPrincipal
from api.errors import error_responses
from api.routers.recommendations import End, Last, Start, _window_or_422
from api.routers.telemetry import warehouse_call
from api.savings import factor_set, price_of
from core.insights import Routing
from core.insights.score import score
from core.windows import Window
from warehouse import insights as wh_insights

router = APIRouter(tags=["recommendations"], responses=error_responses(401, 403, 422, 503))


def _read(client: Any, org_id: str, w: Window, prev: Window) -> tuple[list, list, Routing]:
    return (
        wh_insights.usage(client, org_id, w),
        wh_insights.usage(client, org_id, prev),
        wh_insights.routing(client, org_id, w),
    )


@router.get("/sustainability", summary="The sustainability score (0–100) and its dimensions")
async def sustainability(
    ctx: Ctx, principal: ReadPrincipal, last: Last = None, start: Start = None, end: End = None
) -> dict[str, Any]:
    w = _window_or_422(ctx, last, start, end)
    prev = Window(w.start - (w.end - w.start), w.start, f"before {w.label}")
    read = getattr(ctx.telemetry, "read", None)
    usage, before, routing = (
        ([], [], None) if read is None else await warehouse_call(read, _read, principal.org_id, w, prev)
    )
    fs = await run_in_threadpool(factor_set, ctx)
    prices = await run_in_threadpool(price_of, ctx, principal.org_id, fs)
    out = score(usage, before, prices, routing)
    return {"window": {"start": w.start, "end": w.end, "label": w.label}, **out}
