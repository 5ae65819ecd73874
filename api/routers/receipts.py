"""Receipts of the monthly close: GET /receipts (paid plans), GET /receipts/{id}/pdf. Scope `read` (or
`billing`), the caller's org only. A free-plan org gets 402 with `upgrade_url`."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import JSONResponse, Response

from api.deps import Ctx
from api.errors import error_responses
from api.routers.billing import StatusPrincipal
from controlplane.billing import Receipts, is_paid, verify_url
from core.artifacts import open_store

router = APIRouter(prefix="/receipts", tags=["receipts"], responses=error_responses(401, 403))
UPGRADE_URL = "/api/v1/billing/upgrade"


def receipt_json(r, public_url: str) -> dict[str, Any]:
    return {
        "id": r.id,
        "serial_number": r.serial_number,
        "co2_retired_kg": r.payload["co2_retired_kg"],
        "credit_serial_numbers": r.payload["credit_serial_numbers"],
        "period_start": r.payload["period_start"],
        "period_end": r.payload["period_end"],
        "pdf_url": f"/api/v1/receipts/{r.id}/pdf",
        "verification_url": verify_url(r.serial_number, public_url),
        "created_at": r.created_at.isoformat().replace("+00:00", "Z"),
    }


@router.get(
    "",
    summary="The org's carbon retirement receipts (paid plans)",
    responses={402: {"description": "free plan: `detail` and `upgrade_url`"}},
)
def list_receipts(
    ctx: Ctx,
    principal: StatusPrincipal,
    start_date: date | None = None,
    end_date: date | None = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
):
    org = ctx.orgs.get(principal.org_id)
    assert org is not None
    if not is_paid(org.plan_tier):
        return JSONResponse(
            {
                "detail": f"Receipts require a paid plan. Upgrade at {UPGRADE_URL}.",
                "upgrade_url": UPGRADE_URL,
            },
            status_code=402,
        )
    items, total = Receipts(ctx.engine).list(
        org.id, start_date, end_date, offset=(page - 1) * page_size, limit=page_size
    )
    return {
        "receipts": [receipt_json(r, ctx.settings.public_url) for r in items],
        "pagination": {
            "page": page,
            "page_size": page_size,
            "total_items": total,
            "total_pages": (total + page_size - 1) // page_size,
        },
    }


@router.get(
    "/{receipt_id}/pdf",
    summary="Download the branded PDF receipt",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}, **error_responses(404)},
)
def receipt_pdf(receipt_id: str, ctx: Ctx, principal: StatusPrincipal) -> Response:
    r = Receipts(ctx.engine).get(receipt_id, org_id=principal.org_id)
    if r is None or not r.pdf_key:
        raise HTTPException(404, "receipt not found or PDF not yet generated")
    data = open_store(ctx.settings).get(r.pdf_key)
    if data is None:
        raise HTTPException(404, "receipt not found or PDF not yet generated")
    return Response(
        data,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{r.serial_number}.pdf"'},
    )
