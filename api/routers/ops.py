"""Operations: GET /api/v1/version, GET /api/v1/config (read scope) and GET /prometheus/metrics (the operator
token). docs/operations.md says what each answers and how /prometheus/metrics is protected.

/config describes the deployment without a secret in it: backends as kind + host + port + database (never a
URL's user, password or query string), topic names, the default factor version, feature switches. Secret
settings (master key, signing key, Stripe keys, the metrics token) appear only as "configured: yes/no".
"""

from __future__ import annotations

import asyncio
from typing import Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from api.deps import Ctx, ReadPrincipal
from api.errors import error_responses, install_error_handlers
from core.buildinfo import build_info
from core.methodology.factors import LATEST_VERSION
from core.metrics import check_access, exposition
from core.settings import Settings

router = APIRouter(tags=["operations"], responses=error_responses(401, 403))
prometheus_router = APIRouter(tags=["operations"])


# --------------------------------------------------------------------------------------------- models


class VersionOut(BaseModel):
    version: str = Field(description="The joulestream package version")
    git_commit: str | None = Field(description="The commit running, when the code runs from a git checkout")
    python: str
    factors_version: str = Field(
        description="The factor version new events are enriched with (the control plane's current one)"
    )
    factors_builtin_latest: str = Field(description="The newest factor set shipped with this build")


class Address(BaseModel):
    """Where a backend is, without credentials: the scheme, host and port of its URL, and its database."""

    kind: str = Field(description="chdb, http, https, sqlite, postgresql, …")
    host: str | None = None
    port: int | None = None
    path: str | None = Field(default=None, description="The file of an embedded engine (chdb, SQLite)")
    database: str | None = None


class ArtifactsOut(BaseModel):
    kind: str = Field(description="local or s3")
    location: str = Field(description="The directory, or bucket/prefix")
    endpoint: str | None = Field(default=None, description="The S3-compatible endpoint, when not AWS's")


class KafkaOut(BaseModel):
    kind: Literal["embedded", "external"]
    bootstrap: list[str] = Field(description="host:port of each bootstrap server")
    topic_prefix: str
    topics: dict[str, str] = Field(description="raw, enriched, dlq → topic name")


class MetricsOut(BaseModel):
    token_configured: bool
    open: bool = Field(description="/prometheus/metrics answers without a token")
    per_org: bool = Field(description="per-org energy and CO2e series are exported")


class PollersOut(BaseModel):
    interval_s: float
    lookback_h: float
    backfill_days: float
    max_failures: int
    tick_s: float
    base_urls: dict[str, str] = Field(description="provider → usage API base URL, where one is configured")


class FeaturesOut(BaseModel):
    jwt_auth: bool
    stripe_billing: bool
    stripe_webhooks: bool
    secret_store: str
    master_key_configured: bool
    signing_key_configured: bool
    artifacts: ArtifactsOut
    metrics: MetricsOut
    pollers: PollersOut


class ConfigOut(BaseModel):
    version: str
    public_url: str
    kafka: KafkaOut
    clickhouse: Address
    control_plane: Address
    factors_version: str
    features: FeaturesOut


# --------------------------------------------------------------------------------------------- helpers


def address(url: str, database: str | None = None) -> Address:
    """The parts of `url` that are not secret. Its user, password, query and fragment are never read."""
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError:
        return Address(kind="unparseable")
    kind = u.scheme.lower().split("+", 1)[0] or "unknown"
    if kind == "chdb":  # chdb:///abs/path (the settings' default is chdb:////abs/path)
        path = "/" + u.path.lstrip("/") if u.path.startswith("/") else u.path
        return Address(kind=kind, path=path or None, database=database)
    if kind == "sqlite":  # SQLAlchemy: sqlite:///relative or sqlite:////absolute
        return Address(kind=kind, path=u.path[1:] or None)
    return Address(kind=kind, host=u.hostname, port=port, database=database or u.path.strip("/") or None)


def clean_url(url: str) -> str:
    """scheme://host[:port]/path of `url`: no user, password, query or fragment."""
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError:
        return ""
    host = u.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{u.scheme}://{host}{f':{port}' if port else ''}{u.path}"


def _bootstrap(kafka: str) -> list[str]:
    out = []
    for server in kafka.split(","):
        server = server.strip().rsplit("@", 1)[-1]  # never a SASL user:password@
        out.append(server.split("://", 1)[-1])
    return [s for s in out if s]


def public_config(settings: Settings, factors_version: str, version: str) -> ConfigOut:
    s = settings
    if s.artifacts:
        u = urlsplit(s.artifacts)
        artifacts = ArtifactsOut(
            kind=u.scheme or "local",
            location=f"{u.hostname or ''}{u.path}",
            endpoint=clean_url(s.artifacts_endpoint) if s.artifacts_endpoint else None,
        )
    else:
        artifacts = ArtifactsOut(kind="local", location=str(s.home / "artifacts"))
    urls = {
        "openai": s.openai_base_url,
        "anthropic": s.anthropic_base_url,
        "openrouter": s.openrouter_base_url,
    }
    return ConfigOut(
        version=version,
        public_url=clean_url(s.public_url),
        kafka=KafkaOut(
            kind="embedded" if s.kafka_embedded else "external",
            bootstrap=_bootstrap(s.kafka),
            topic_prefix=s.topic_prefix,
            topics={"raw": s.raw_topic, "enriched": s.enriched_topic, "dlq": s.dlq_topic},
        ),
        clickhouse=address(s.clickhouse, s.ch_database),
        control_plane=address(s.database),
        factors_version=factors_version,
        features=FeaturesOut(
            jwt_auth=s.jwt_configured,
            stripe_billing=s.stripe_api_key is not None,
            stripe_webhooks=s.stripe_webhook_secret is not None,
            secret_store=s.secret_store,
            master_key_configured=s.master_key is not None,
            signing_key_configured=s.signing_key is not None,
            artifacts=artifacts,
            metrics=MetricsOut(
                token_configured=s.metrics_token is not None, open=s.metrics_open, per_org=s.metrics_per_org
            ),
            pollers=PollersOut(
                interval_s=s.poll_interval_s,
                lookback_h=s.poll_lookback_h,
                backfill_days=s.poll_backfill_days,
                max_failures=s.poll_max_failures,
                tick_s=s.poll_tick_s,
                base_urls={p: clean_url(u) for p, u in urls.items() if u},
            ),
        ),
    )


async def _factors_version(ctx: Ctx) -> str:
    current = await asyncio.to_thread(ctx.factor_versions.current)
    return current.version if current is not None else LATEST_VERSION


# --------------------------------------------------------------------------------------------- routes


@router.get("/version", response_model=VersionOut, summary="The running build and the default factor version")
async def get_version(ctx: Ctx, principal: ReadPrincipal) -> VersionOut:
    info = build_info()
    return VersionOut(
        version=ctx.version,
        git_commit=info.git_commit,
        python=info.python,
        factors_version=await _factors_version(ctx),
        factors_builtin_latest=LATEST_VERSION,
    )


@router.get(
    "/config",
    response_model=ConfigOut,
    summary="The deployment's non-sensitive configuration (backends, topics, switches; never a secret)",
)
async def get_config(ctx: Ctx, principal: ReadPrincipal) -> ConfigOut:
    return public_config(ctx.settings, await _factors_version(ctx), ctx.version)


def _prometheus(settings: Settings, authorization: str | None) -> Response:
    denied = check_access(settings, authorization)
    if denied is not None:
        return JSONResponse({"detail": denied.detail}, status_code=denied.status, headers=denied.headers)
    body, content_type = exposition()
    return Response(body, media_type=content_type)


@prometheus_router.get(
    "/prometheus/metrics",
    summary="Operational metrics in the Prometheus text format (Bearer JOULESTREAM_METRICS_TOKEN)",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition format 0.0.4"},
        **error_responses(401, 403),
    },
)
async def prometheus_metrics(request: Request, ctx: Ctx) -> Response:
    return _prometheus(ctx.settings, request.headers.get("authorization"))


def prometheus_app(settings: Settings) -> FastAPI:
    """An app serving /prometheus/metrics alone (`joulestream poll --metrics-port`, `worker --metrics-port`)."""
    app = FastAPI(title="joulestream metrics", openapi_url=None, docs_url=None, redoc_url=None)
    install_error_handlers(app)

    @app.get("/prometheus/metrics")
    async def metrics_only(request: Request) -> Response:
        return _prometheus(settings, request.headers.get("authorization"))

    return app
