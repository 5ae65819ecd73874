"""The FastAPI application factory.

    from api.app import create_app
    app = create_app(load_settings(), telemetry=..., kafka_check=..., last_poll=...)

Routes live under /api/v1 (OpenAPI at /api/v1/openapi.json, docs at /api/v1/docs); /health is also served
at the root for load balancers. The control-plane database must be migrated first (`joulestream migrate`,
or the start of `up` / `worker`); `create_app` seeds the built-in carbon factor set (idempotent).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import metadata
from typing import Any

from fastapi import FastAPI
from sqlalchemy import Engine

from api.deps import AppContext, Check, LastPoll
from api.errors import install_error_handlers
from api.routers import (
    audit,
    auth,
    balance,
    billing,
    calibration,
    carbon_factors,
    connections,
    dashboard,
    export,
    gpu_targets,
    health,
    methodology,
    metrics,
    ops,
    orgs,
    prices,
    projects,
    public,
    receipts,
    recommendations,
    report,
    sustainability,
)
from api.routers import telemetry as telemetry_routes
from api.telemetry import NullTelemetry, TelemetryProvider
from controlplane import FactorVersions, get_engine
from controlplane.jwt import JwtSettings, JwtVerifier
from core.settings import Settings, load_settings

API_PREFIX = "/api/v1"


def _version() -> str:
    try:
        return metadata.version("joulestream")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    warehouse_client_factory: Callable[[], Any] | None = None,
    warehouse_check: Check | None = None,
    kafka_check: Check | None = None,
    last_poll: LastPoll | None = None,
    telemetry: TelemetryProvider | None = None,
    jwt_settings: JwtSettings | None = None,
    seed_factors: bool = True,
    health_timeout_s: float = 5.0,
) -> FastAPI:
    """Build the API.

    settings                  default `load_settings()`; `settings.database` picks the control-plane DB
    engine                    use this engine instead of `get_engine(settings.database)`
    warehouse_client_factory  `() -> clickhouse_connect client`; kept on the context for warehouse-backed
                              routers, and pinged (`command("SELECT 1")`) by /health unless warehouse_check
    warehouse_check, kafka_check  `() -> Any` or `async () -> Any`: raise when unhealthy
    last_poll                 `() -> datetime | None` (sync or async): newest successful provider poll,
                              None when no poller is configured
    telemetry                 TelemetryProvider (api.telemetry); default: the warehouse-backed
                              api.telemetry_provider.WarehouseTelemetry when warehouse_client_factory is
                              given, else NullTelemetry (zeros)
    jwt_settings              default `JwtSettings.from_settings(settings)` (None → API keys only)
    seed_factors              publish the built-in factor set v1.0 when the (migrated) database has none
    """
    settings = settings or load_settings()
    engine = engine or get_engine(settings.database)
    if seed_factors:
        FactorVersions(engine).ensure_seeded()
    jwt_settings = jwt_settings or JwtSettings.from_settings(settings)
    version = _version()
    if telemetry is None and warehouse_client_factory is not None:
        from api.telemetry_provider import WarehouseTelemetry

        telemetry = WarehouseTelemetry(client_factory=warehouse_client_factory)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from api.kpis import KpiRefresher

        refresher = KpiRefresher(app.state.ctx, settings.kpi_refresh_s)  # the KPI cache's schedule
        app.state.ctx.extras["kpi_refresher"] = refresher
        refresher.start()
        try:
            yield
        finally:
            await refresher.stop()

    app = FastAPI(
        lifespan=lifespan,
        title="joulestream API",
        version=version,
        description="Energy and carbon of AI inference: projects, telemetry, carbon factors, methodology.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        swagger_ui_oauth2_redirect_url=f"{API_PREFIX}/docs/oauth2-redirect",
        redoc_url=None,
    )
    app.state.ctx = AppContext(
        settings=settings,
        engine=engine,
        telemetry=telemetry or NullTelemetry(),
        version=version,
        jwt=JwtVerifier(jwt_settings) if jwt_settings else None,
        warehouse_client_factory=warehouse_client_factory,
        warehouse_check=warehouse_check,
        kafka_check=kafka_check,
        last_poll=last_poll,
        health_timeout_s=health_timeout_s,
    )
    install_error_handlers(app, max_body_bytes=settings.api_max_body_bytes)

    app.include_router(health.router)  # GET /health for load balancers
    app.include_router(health.router, prefix=API_PREFIX)
    app.include_router(projects.router, prefix=API_PREFIX)
    app.include_router(carbon_factors.router, prefix=API_PREFIX)
    app.include_router(methodology.router, prefix=API_PREFIX)
    app.include_router(prices.router, prefix=API_PREFIX)
    app.include_router(telemetry_routes.router, prefix=API_PREFIX)
    app.include_router(export.router, prefix=API_PREFIX)
    app.include_router(metrics.router, prefix=API_PREFIX)
    app.include_router(report.router, prefix=API_PREFIX)
    app.include_router(recommendations.router, prefix=API_PREFIX)
    app.include_router(sustainability.router, prefix=API_PREFIX)
    app.include_router(connections.router, prefix=API_PREFIX)
    app.include_router(gpu_targets.router, prefix=API_PREFIX)
    app.include_router(calibration.router, prefix=API_PREFIX)
    app.include_router(billing.router, prefix=API_PREFIX)
    app.include_router(receipts.router, prefix=API_PREFIX)
    app.include_router(audit.router, prefix=API_PREFIX)
    app.include_router(auth.router, prefix=API_PREFIX)  # /auth/login, /auth/refresh, /auth/webhook
    app.include_router(orgs.router, prefix=API_PREFIX)  # /orgs, members, API keys, audit log
    app.include_router(balance.router, prefix=API_PREFIX)  # /orgs/{slug}/balance, transactions
    app.include_router(public.router)  # /public/receipts/verify/{serial}: no auth
    app.include_router(ops.router, prefix=API_PREFIX)  # /version, /config
    app.include_router(ops.prometheus_router)  # /prometheus/metrics: the operator token (docs/operations.md)
    dashboard.install(
        app, API_PREFIX
    )  # / → /app/ (the web dashboard), /api/v1/dashboard/* (docs/dashboard.md)
    return app
