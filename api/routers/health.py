"""GET /health (root, for load balancers) and GET /api/v1/health. Public.

Checks: control-plane database (`SELECT 1`), warehouse and Kafka (injected callables: raising = error,
anything else = ok; not injected = "skipped"), and the freshness of the last provider poll (injected
callable returning the time of the newest successful poll, or None when no poller is configured):
ok under 90 minutes, warning under 180, error beyond. 200 unless a check is "error" (then 503).
Overall status: healthy | degraded (a warning) | unhealthy (an error).

Without credentials the answer is the overall status only (`{"status": …}`, same HTTP status): the checks,
their latencies and errors, and the version are shown to a caller with a valid API key or JWT (any scope),
or to everyone when `JOULESTREAM_HEALTH_DETAILS=true`. An invalid credential is not an error here — the
probe still gets its status.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from api.deps import AppContext, authenticated
from warehouse.client import ping

router = APIRouter(tags=["health"])
log = logging.getLogger("joulestream.api.health")

POLL_WARNING_MIN = 90
POLL_ERROR_MIN = 180
CheckStatus = Literal["ok", "warning", "error", "skipped"]


class CheckResult(BaseModel):
    status: CheckStatus
    latency_ms: int | None = None
    error: str | None = None
    detail: str | None = None
    last_poll_at: datetime | None = None
    minutes_ago: int | None = None


class HealthResponse(BaseModel):
    status: Literal["healthy", "degraded", "unhealthy"]
    checks: dict[str, CheckResult] | None = None  # with credentials (or JOULESTREAM_HEALTH_DETAILS)
    version: str | None = None  # idem


async def _call(fn, timeout: float) -> Any:
    if inspect.iscoroutinefunction(fn):
        return await asyncio.wait_for(fn(), timeout)
    result = await asyncio.wait_for(asyncio.to_thread(fn), timeout)
    if inspect.isawaitable(result):
        result = await asyncio.wait_for(result, timeout)
    return result


def _error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    message = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


async def _timed_check(name: str, fn, timeout: float) -> CheckResult:
    if fn is None:
        return CheckResult(status="skipped", detail="not configured")
    started = time.perf_counter()
    try:
        await _call(fn, timeout)
    except Exception as exc:
        log.warning("health check %s failed: %s", name, exc, exc_info=True)
        return CheckResult(
            status="error", error=_error(exc), latency_ms=round((time.perf_counter() - started) * 1000)
        )
    return CheckResult(status="ok", latency_ms=round((time.perf_counter() - started) * 1000))


def poll_status(last_poll_at: datetime | None, now: datetime) -> CheckResult:
    if last_poll_at is None:
        return CheckResult(status="ok", detail="no pollers configured")
    if last_poll_at.tzinfo is None:
        last_poll_at = last_poll_at.replace(tzinfo=UTC)
    minutes = max(0, int((now - last_poll_at).total_seconds() // 60))
    status: CheckStatus = (
        "ok" if minutes < POLL_WARNING_MIN else "warning" if minutes < POLL_ERROR_MIN else "error"
    )
    return CheckResult(status=status, last_poll_at=last_poll_at.astimezone(UTC), minutes_ago=minutes)


async def _last_poll_check(ctx: AppContext) -> CheckResult:
    if ctx.last_poll is None:
        return CheckResult(status="ok", detail="no pollers configured")
    try:
        last = await _call(ctx.last_poll, ctx.health_timeout_s)
    except Exception as exc:
        log.warning("health check last_poll failed: %s", exc, exc_info=True)
        return CheckResult(status="error", error=_error(exc))
    return poll_status(last, datetime.now(UTC))


def _warehouse_check(ctx: AppContext):
    if ctx.warehouse_check is not None:
        return ctx.warehouse_check
    if ctx.warehouse_client_factory is None:
        return None
    factory = ctx.warehouse_client_factory

    def check() -> None:
        ping(factory())

    return check


def _database_check(ctx: AppContext):
    def ping_db() -> None:
        with ctx.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    return ping_db


@router.get(
    "/health",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "At least one check is in error"}},
    summary="Service health (public status; details with credentials)",
)
async def health(request: Request) -> JSONResponse:
    ctx: AppContext = request.app.state.ctx
    t = ctx.health_timeout_s
    database, warehouse, kafka, last_poll = await asyncio.gather(
        _timed_check("database", _database_check(ctx), t),
        _timed_check("warehouse", _warehouse_check(ctx), t),
        _timed_check("kafka", ctx.kafka_check, t),
        _last_poll_check(ctx),
    )
    checks = {"database": database, "warehouse": warehouse, "kafka": kafka, "last_poll": last_poll}
    statuses = {c.status for c in checks.values()}
    overall = "unhealthy" if "error" in statuses else "degraded" if "warning" in statuses else "healthy"
    authorization = request.headers.get("authorization")
    details = ctx.settings.health_details or (
        authorization is not None and await asyncio.to_thread(authenticated, ctx, authorization)
    )
    body = (
        HealthResponse(status=overall, checks=checks, version=ctx.version)
        if details
        else HealthResponse(status=overall)
    )
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True), status_code=503 if overall == "unhealthy" else 200
    )
