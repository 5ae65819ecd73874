"""The inference gateway as an ASGI app: an OpenAI-compatible FastAPI app with carbon-aware routing, energy
headers, signed receipts, budgets and durable usage publishing. See docs/gateway.md.

    app = create_gateway_app(load_settings(), load_routes("routes.yaml"))
    uvicorn.run(app, host="127.0.0.1", port=8788)

The request handling is `pipelines.gateway.gateway.Gateway`; booking (footprint, usage event, receipt) is
`booking.py`; the stream relay `relay.py`. The app's lifespan starts and stops the background parts
(`app.state.gateway.start()/stop()`); when the app is mounted inside another ASGI app (whose lifespan does
not reach mounted apps), call those two yourself.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from controlplane import get_engine
from controlplane.factor_resolver import FactorResolver
from core.artifacts import open_store
from core.metrics import check_access, exposition
from core.ratelimit import PublicRateLimit
from core.receipts import Keyring
from core.settings import Settings
from pipelines.gateway.batch_runner import BatchRunner
from pipelines.gateway.batches import batch_router
from pipelines.gateway.config import GatewayConfig
from pipelines.gateway.errors import GatewayError
from pipelines.gateway.gateway import Gateway

_RECEIPT_ID_RE = re.compile(r"^rcpt_[0-9a-f]{32}$")
HOT_PATHS = {"/v1/chat/completions": "chat", "/v1/completions": "completions", "/v1/embeddings": "embeddings"}


class GatewayApp(FastAPI):
    """FastAPI, with the three inference routes served straight from the ASGI entry point: they skip the
    routing and middleware layers, which the gateway does not use — it parses, validates and answers errors
    itself. Every other path (models, receipts, health, docs) goes through FastAPI; the inference routes are
    declared there too, for the OpenAPI document."""

    gateway: Gateway

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            endpoint = HOT_PATHS.get(path)
            if endpoint is not None:
                response = await self.gateway.handle(Request(scope, receive), endpoint)
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_gateway_app(
    settings: Settings,
    routes: GatewayConfig,
    *,
    engine: Engine | None = None,
    factors: FactorResolver | None = None,
    keyring: Keyring | None = None,
    spool_dir: str | Path | None = None,
    publisher_options: dict[str, Any] | None = None,
    batch_runner: bool = False,
    runner_options: dict[str, Any] | None = None,
) -> FastAPI:
    """The gateway as a FastAPI app (routes under /v1, plus /health). `app.state.gateway` is the `Gateway`.

    settings           Kafka / topic prefix / data dir / control-plane URL
    routes             the routing file (`pipelines.gateway.config.load_routes`)
    engine             control-plane engine (default `get_engine(settings.database)`), already migrated
    factors            the factor resolver (default `FactorResolver(engine)`: the control plane's current
                       version, re-read every 10 s; built-in v1.0 while it cannot be read)
    keyring            receipt signing keys (default `Keyring.load(settings)`)
    spool_dir          default `routes.spool.dir` or `$JOULESTREAM_HOME/gateway/spool`
    publisher_options  `UsagePublisher` keyword overrides (timeouts; tests)
    batch_runner       also run the batch runner in this process (`app.state.batch_runner`; docs/batch.md)
    runner_options     `BatchRunner` keyword overrides (lease, clock; tests)
    """
    engine = engine or get_engine(settings.database)
    if factors is None:
        factors = FactorResolver(engine)
    factors.refresh()
    keyring = keyring or Keyring.load(settings)
    spool = Path(spool_dir or routes.spool.dir or settings.home / "gateway" / "spool")
    gw = Gateway(
        settings,
        routes,
        engine=engine,
        factors=factors,
        keyring=keyring,
        spool_dir=spool,
        publisher_options=publisher_options,
    )

    store = open_store(settings)
    runner = BatchRunner(gw, store, **(runner_options or {})) if batch_runner else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gw.start()
        if runner is not None:
            runner.start()
        try:
            yield
        finally:
            if runner is not None:
                await runner.stop()
            await gw.stop()

    app = GatewayApp(
        title="joulestream inference gateway",
        description="OpenAI-compatible gateway with carbon-aware routing, energy headers and signed receipts.",
        lifespan=lifespan,
        docs_url="/v1/docs",
        openapi_url="/v1/openapi.json",
        redoc_url=None,
    )
    app.state.gateway = gw
    app.gateway = gw
    app.state.batch_runner = runner
    app.include_router(batch_router(settings, gw.auth, engine, store))

    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        status = exc.status_code if exc.status_code in (404, 405) else 400
        msg = (
            f"Unknown path {request.method} {request.url.path}"
            if exc.status_code == 404
            else f"Method {request.method} not allowed on {request.url.path}"
            if exc.status_code == 405
            else str(exc.detail)
        )
        return GatewayError(status, msg, code="unknown_url" if status == 404 else None).response()

    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        # locations and messages only: never the input back (it may be large)
        where = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))[:100]}: {str(e.get('msg', ''))[:200]}"
            for e in exc.errors()[:3]
        )
        return GatewayError(422, f"Invalid request: {where}", code="invalid_request").response()

    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]

    @app.post("/v1/chat/completions", summary="Chat completions (OpenAI shape)")
    async def chat_completions(request: Request) -> Response:
        return await gw.handle(request, "chat")

    @app.post("/v1/completions", summary="Legacy text completions (OpenAI shape)")
    async def completions(request: Request) -> Response:
        return await gw.handle(request, "completions")

    @app.post("/v1/embeddings", summary="Embeddings (OpenAI shape)")
    async def embeddings(request: Request) -> Response:
        return await gw.handle(request, "embeddings")

    @app.get("/v1/models", summary="Models with their routing tiers and cost tier")
    async def models(request: Request) -> Response:
        try:
            await gw.auth.caller(
                request.headers.get("authorization"), ("ingest", "read"), request.headers.get("x-org-slug")
            )
        except GatewayError as err:
            return err.response()
        return Response(
            orjson.dumps({"object": "list", "data": gw.router.model_list()}), media_type="application/json"
        )

    public_limit = PublicRateLimit(settings.public_rate_limit, gw.limiter.limiter)  # the budgets' store
    limit_off_loop = not settings.rate_limit_storage.startswith("memory://")  # a network store

    @app.get(
        "/v1/receipts/public-key",
        summary="Public keys that verify receipts (no auth; JOULESTREAM_PUBLIC_RATE_LIMIT per client)",
    )
    async def public_key(request: Request) -> Response:
        host = request.client.host if request.client else None
        if limit_off_loop:
            wait = await asyncio.to_thread(public_limit.check, "gateway-public-key", host)
        else:
            wait = public_limit.check("gateway-public-key", host)
        if wait is not None:
            return GatewayError(
                429,
                f"Rate limit reached: {public_limit.description} per client on this route.",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(int(wait))},
            ).response()
        keys = gw.keyring.public_keys()
        return Response(
            orjson.dumps({"algorithm": "ed25519", **keys[0], "keys": keys}), media_type="application/json"
        )

    @app.get("/v1/receipts/{receipt_id}", summary="A signed receipt of the caller's org")
    async def receipt(receipt_id: str, request: Request) -> Response:
        try:
            caller = await gw.auth.caller(
                request.headers.get("authorization"), ("ingest", "read"), request.headers.get("x-org-slug")
            )
        except GatewayError as err:
            return err.response()
        rec = await gw.receipts.get(caller.org_id, receipt_id) if _RECEIPT_ID_RE.match(receipt_id) else None
        if rec is None:
            return GatewayError(
                404,
                f"No receipt {receipt_id!r} for this organization.",
                param="receipt_id",
                code="receipt_not_found",
            ).response()
        return Response(
            orjson.dumps({"id": receipt_id, "object": "receipt", **rec.model_dump()}),
            media_type="application/json",
        )

    @app.get("/prometheus/metrics", summary="Operational metrics, Prometheus text format (operator token)")
    async def prometheus_metrics(request: Request) -> Response:
        denied = check_access(settings, request.headers.get("authorization"))
        if denied is not None:
            return Response(
                orjson.dumps({"detail": denied.detail}),
                status_code=denied.status,
                headers=denied.headers,
                media_type="application/json",
            )
        body, content_type = exposition()
        return Response(body, media_type=content_type)

    @app.get(
        "/health",
        summary="Status (public); Kafka state, spool depth and versions with an API key or "
        "JOULESTREAM_HEALTH_DETAILS",
    )
    async def health(request: Request) -> Response:
        status, body = gw.health()
        if not settings.health_details:
            try:
                await gw.auth.caller(
                    request.headers.get("authorization"),
                    ("ingest", "read"),
                    request.headers.get("x-org-slug"),
                )
            except GatewayError:  # no or a bad key: the status only, never an auth error for a probe
                body = {"status": body["status"]}
        return Response(orjson.dumps(body), status_code=status, media_type="application/json")

    return app
