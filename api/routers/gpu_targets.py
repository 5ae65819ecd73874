"""GPU telemetry targets: /api/v1/gpu-targets. List/read with scope `read`, change with scope `admin`.

A target names where an org's self-served GPUs are scraped (a DCGM exporter + the model servers on those
GPUs, or a Prometheus server), the project their usage is booked to and where they run (`provider`,
`region`: the factor set's PUE and grid). The scraper (`pipelines/telemetry`) reads every live target each
`JOULESTREAM_TELEMETRY_SCRAPE_S`. docs/measured-energy.md.

- POST: 201 with the target; 422 for a body that names no source (or both), a non-http(s) URL or one with
  credentials; 404 for another org's project.
- GET list / GET {id}: with `last_scrape_at` and `last_error` (the last failed scrape's reason).
- DELETE {id}: no longer scraped (204); its measured events stay. Another org's target id is 404.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Response
from fastapi.concurrency import run_in_threadpool

from api.deps import AdminPrincipal, Ctx, ReadPrincipal
from api.errors import error_responses, validation_errors_route
from controlplane import NotFound
from controlplane.gpu_targets import GpuTarget, GpuTargetIn, GpuTargets


def _no_input(err: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in err.items() if k not in ("input", "ctx")}


NoEchoRoute = validation_errors_route(_no_input)  # a refused URL may hold credentials: not echoed


router = APIRouter(
    prefix="/gpu-targets",
    tags=["gpu telemetry"],
    route_class=NoEchoRoute,
    responses=error_responses(401, 403),
)

TargetId = Annotated[str, Path(min_length=1, max_length=64, description="GPU target id (uuid)")]


@router.post(
    "", status_code=201, summary="Register a GPU telemetry target", responses=error_responses(404, 422)
)
async def create_target(ctx: Ctx, principal: AdminPrincipal, body: GpuTargetIn) -> GpuTarget:
    try:
        return await run_in_threadpool(GpuTargets(ctx.engine).create, principal.org_id, body)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None


@router.get("", summary="The org's GPU telemetry targets")
async def list_targets(ctx: Ctx, principal: ReadPrincipal) -> dict[str, list[GpuTarget]]:
    return {"data": await run_in_threadpool(GpuTargets(ctx.engine).list, principal.org_id)}


@router.get("/{target_id}", summary="One GPU telemetry target", responses=error_responses(404))
async def get_target(ctx: Ctx, principal: ReadPrincipal, target_id: TargetId) -> GpuTarget:
    found = await run_in_threadpool(GpuTargets(ctx.engine).get, principal.org_id, target_id)
    if found is None:
        raise HTTPException(404, "GPU target not found")
    return found


@router.delete(
    "/{target_id}", status_code=204, summary="Stop scraping a target", responses=error_responses(404)
)
async def delete_target(ctx: Ctx, principal: AdminPrincipal, target_id: TargetId) -> Response:
    try:
        await run_in_threadpool(GpuTargets(ctx.engine).delete, principal.org_id, target_id)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    return Response(status_code=204)
