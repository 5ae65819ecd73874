"""The API with the billing, receipts, audit-pack and public routers (added here if create_app does not
include them yet)."""

from __future__ import annotations


def with_close_routes(app):
    from api.routers import audit, billing, public, receipts

    paths = {getattr(r, "path", "") for r in app.routes}
    if "/api/v1/billing/status" not in paths:
        app.include_router(billing.router, prefix="/api/v1")
    if "/api/v1/receipts" not in paths:
        app.include_router(receipts.router, prefix="/api/v1")
    if "/api/v1/export/audit-pack/{year}/{month}" not in paths:
        app.include_router(audit.router, prefix="/api/v1")
    if "/public/receipts/verify/{serial_number}" not in paths:
        app.include_router(public.router)
    return app
