"""Calibration: GET /api/v1/calibration (scope `read`, the caller's org) — per model, the measured energy per
token (GPU telemetry, brought to the IT boundary by the factor set's host factor) against the factor set's
estimate for the same tokens, over the window (`last`, default 30d, or `start`/`end`; optional `project_id`).
`ratio` > 1: the model used more energy than the factor set assumes. The evidence for the next factor
version; formulas in `core/methodology/measured.py`, the read in `warehouse/calibration.py`,
docs/measured-energy.md."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import Ctx, ReadPrincipal
from api.errors import error_responses
from api.routers.metrics import read_warehouse
from api.routers.recommendations import End, Last, Start, _window_or_422
from core.methodology.measured import CalibrationRow
from core.windows import Window
from warehouse.calibration import calibration as calibration_rows

router = APIRouter(tags=["gpu telemetry"], responses=error_responses(401, 403, 422, 503))

ProjectId = Annotated[str | None, Query(min_length=1, max_length=64, description="One project only")]


def _read(client: Any, org_id: str, w: Window, project_id: str | None) -> list[CalibrationRow]:
    return calibration_rows(client, org_id, w.start, w.end, project_id)


@router.get("/calibration", summary="Measured vs estimated J per token, per model")
async def calibration(
    ctx: Ctx,
    principal: ReadPrincipal,
    last: Last = None,
    start: Start = None,
    end: End = None,
    project_id: ProjectId = None,
) -> dict[str, Any]:
    w = _window_or_422(ctx, last, start, end)
    rows = await read_warehouse(ctx, _read, principal.org_id, w, project_id, empty=[])
    return {
        "window": {"start": w.start, "end": w.end, "label": w.label},
        "boundary": "it",
        "data": [r._asdict() for r in rows],
    }
