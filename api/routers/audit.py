"""GET /export/audit-pack/{year}/{month}: the monthly audit pack zip (paid plans; free → 403; not generated
yet → 404). Scope `read` (or `billing`), the caller's org only."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Path
from fastapi.responses import Response

from api.deps import Ctx
from api.errors import error_responses
from api.routers.billing import StatusPrincipal, month_bounds
from controlplane.billing import BillingPeriods, Receipts, is_paid
from core.artifacts import open_store

router = APIRouter(prefix="/export", tags=["export"], responses=error_responses(401, 403))


@router.get(
    "/audit-pack/{year}/{month}",
    summary="Download the monthly audit pack (zip; paid plans)",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}}, **error_responses(404)},
)
def audit_pack(
    ctx: Ctx,
    principal: StatusPrincipal,
    year: int = Path(ge=2000, le=2100),
    month: int = Path(ge=1, le=12),
) -> Response:
    org = ctx.orgs.get(principal.org_id)
    assert org is not None
    if not is_paid(org.plan_tier):
        raise HTTPException(403, "audit packs require a paid plan")
    key, _, _ = month_bounds(year, month)
    period = BillingPeriods(ctx.engine).get_for(org.id, key)
    receipt = Receipts(ctx.engine).for_period(period.id) if period else None
    data = None
    if receipt is not None and receipt.audit_pack_key:
        data = open_store(ctx.settings).get(receipt.audit_pack_key)
    if data is None:
        raise HTTPException(404, f"the audit pack for {key} has not been generated yet")
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="audit-pack-{org.slug}-{key}.zip"'},
    )
