"""Provider connections: /api/v1/connections. List/read with scope `read`, change with scope `admin`.

Rules:
- POST registers a provider admin key (`openai | anthropic | openrouter`, optional `project_id`, default the
  org's Default project). The key is checked against the provider's usage API first: a key that is not an
  admin/management key, or that the provider rejects, is a 400 with the reason; a provider that cannot be
  reached answers 502 (429 from the provider: 503 + Retry-After). 409 when the org already has a
  connection for that provider. The key is then stored through the secret store (`core.secrets`): only a
  reference reaches the database, and the key never appears in a response, a log line or an error (even
  422 bodies are scrubbed).
- GET list / GET {id}: status (active | error | disabled), last_polled_at, consecutive_failures, last_error,
  project.
- DELETE {id}: removes the secret, deactivates the workload; telemetry history stays (204).
- POST {id}/sync: asks the pollers for an immediate poll (202 + job_id); 409 when the connection is in
  error or disabled; at most one per connection per 5 minutes (429 + Retry-After).
- PUT {id}/project: re-map to another project (a new workload; the old one is deactivated, history stays).
Another org's connection or project id is 404.

Wiring (all optional, on `app.state.ctx.extras`): `secret_store` (a `core.secrets.SecretStore`; default
`SecretStores.from_settings(settings)`, which needs JOULESTREAM_MASTER_KEY outside the embedded demo — without
it these routes answer 503), `provider_base_urls` ({provider: url}; default JOULESTREAM_<P>_BASE_URL or the
public APIs), `provider_http` (an httpx.AsyncClient for key validation).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from api.deps import AdminPrincipal, AppContext, Ctx, ReadPrincipal
from api.errors import error_responses, validation_errors_route
from controlplane import Conflict, NotFound
from controlplane.connections import Connection, Connections, SyncRateLimited, new_connection_id
from core.secrets import LOCAL_PREFIX, SecretStore, SecretStoreError, SecretStores, redact
from providers import base_urls, client_for
from providers.base import AuthError, HttpPolicy, ProviderError, RateLimited

log = logging.getLogger("joulestream.api.connections")

SECRET_FIELDS = {"api_key"}
MASK = "**********"
VALIDATION_POLICY = HttpPolicy(timeout_s=15.0, max_attempts=2, backoff_s=0.5, max_retry_after_s=2.0)


def _scrub(value: Any, depth: int = 0) -> Any:
    """`value` with every secret field masked; below 32 levels everything is (the 422 echoes a short
    preview anyway, api/errors.py, and a 1,000-level body must not exhaust the recursion)."""
    if isinstance(value, dict | list) and depth >= 32:
        return MASK
    if isinstance(value, dict):
        return {k: MASK if k in SECRET_FIELDS else _scrub(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, depth + 1) for v in value]
    return value


def _scrub_error(err: dict[str, Any]) -> dict[str, Any]:
    loc = tuple(err.get("loc") or ())
    if "input" in err:
        err["input"] = MASK if SECRET_FIELDS & set(map(str, loc)) else _scrub(err["input"])
    return err


ScrubbedRoute = validation_errors_route(_scrub_error)  # 422 bodies echo the input: the key is masked


router = APIRouter(
    prefix="/connections",
    tags=["connections"],
    route_class=ScrubbedRoute,
    responses=error_responses(401, 403),
)

ConnectionId = Annotated[str, Path(min_length=1, max_length=64, description="Connection id (uuid)")]
ProviderName = Literal["openai", "anthropic", "openrouter"]


class ConnectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: ProviderName
    api_key: SecretStr = Field(
        description="The provider's admin key (OpenAI `sk-admin-…`, Anthropic `sk-ant-admin…`, OpenRouter "
        "management key). Validated against the provider, stored encrypted, never returned.",
        examples=["sk-admin-..."],
    )
    project_id: str | None = Field(
        default=None, min_length=1, max_length=64, description="Default: the org's Default project"
    )

    @field_validator("api_key")
    @classmethod
    def _key_shape(cls, v: SecretStr) -> SecretStr:
        raw = v.get_secret_value()
        if raw != raw.strip() or not raw:
            raise ValueError("must not be blank or have surrounding whitespace")
        if not 8 <= len(raw) <= 1000:
            raise ValueError("must be 8 to 1000 characters")
        if any(ord(c) < 33 or ord(c) > 126 for c in raw):
            raise ValueError("must be printable ASCII without spaces")
        return v


class ProjectRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project_id: str = Field(min_length=1, max_length=64)


class ConnectionOut(BaseModel):
    id: str
    provider: str
    status: Literal["active", "error", "disabled"]
    last_polled_at: datetime | None
    consecutive_failures: int
    last_error: str | None
    next_poll_at: datetime | None
    project_id: str | None
    project_name: str | None
    created_at: datetime
    poll_notes: list[str] = Field(
        default_factory=list,
        description="What the last successful poll noticed and worked around: OpenRouter BYOK usage left to "
        "another connection, bucket shapes it skipped, inconsistent figures (docs/pollers.md)",
    )


class ConnectionList(BaseModel):
    connections: list[ConnectionOut]


class SyncOut(BaseModel):
    message: str
    job_id: str
    connection_id: str


class ProjectMapOut(BaseModel):
    id: str
    provider: str
    project_id: str | None
    project_name: str | None


def _out(c: Connection) -> ConnectionOut:
    return ConnectionOut(
        id=c.id,
        provider=c.provider,
        status=c.status,
        last_polled_at=c.last_polled_at,
        consecutive_failures=c.consecutive_failures,
        last_error=c.last_error,
        next_poll_at=c.next_poll_at,
        project_id=c.project_id,
        project_name=c.project_name,
        created_at=c.created_at,
        poll_notes=c.poll_notes,
    )


def _repo(ctx: AppContext) -> Connections:
    repo = ctx.extras.get("connections_repo")
    if repo is None:
        repo = ctx.extras["connections_repo"] = Connections(ctx.engine)
    return repo


def _store(ctx: AppContext) -> SecretStore:
    store = ctx.extras.get("secret_store")
    if store is None:
        try:
            store = SecretStores.from_settings(ctx.settings)
        except SecretStoreError as exc:
            log.error("secret store unavailable: %s", exc)
            raise HTTPException(
                503, f"provider connections are unavailable: the secret store is not configured ({exc})"
            ) from None
        ctx.extras["secret_store"] = store
    return store


def _get(ctx: AppContext, org_id: str, connection_id: str) -> Connection:
    found = _repo(ctx).get(org_id, connection_id)
    if found is None:
        raise NotFound("connection not found")
    return found


async def _validate_key(ctx: AppContext, provider: str, key: str) -> None:
    urls = ctx.extras.get("provider_base_urls") or base_urls(ctx.settings)
    client = client_for(
        provider,
        key,
        base_url=urls.get(provider),
        http=ctx.extras.get("provider_http"),
        policy=VALIDATION_POLICY,
    )
    problem = client.check_key_format()
    if problem:
        raise HTTPException(400, problem)
    try:
        async with client:
            await client.validate()
    except AuthError as exc:
        raise HTTPException(400, f"API key validation failed: {redact(str(exc), key)}") from None
    except RateLimited as exc:
        retry = str(int(exc.retry_after or 60) + 1)
        raise HTTPException(
            503,
            f"could not validate the key: {provider} is rate-limiting requests; retry later",
            headers={"Retry-After": retry},
        ) from None
    except ProviderError as exc:
        log.warning(
            "key validation failed upstream", extra={"provider": provider, "error": redact(str(exc), key)}
        )
        raise HTTPException(
            502, f"could not validate the key with {provider}: {redact(str(exc), key)}; retry later"
        ) from None


@router.post(
    "",
    status_code=201,
    response_model=ConnectionOut,
    responses=error_responses(400, 404, 409, 502, 503),
    summary="Register a provider admin key (validated against the provider first)",
)
async def create_connection(body: ConnectionCreate, ctx: Ctx, principal: AdminPrincipal) -> ConnectionOut:
    repo, org_id = _repo(ctx), principal.org_id
    key = body.api_key.get_secret_value()

    def precheck() -> None:
        if body.project_id is not None and ctx.projects.get(org_id, body.project_id) is None:
            raise NotFound("project not found")
        if repo.live_for_provider(org_id, body.provider) is not None:
            raise Conflict(f"A connection for {body.provider} already exists in this organization.")

    await run_in_threadpool(precheck)
    store = _store(ctx)
    await _validate_key(ctx, body.provider, key)

    cid = new_connection_id()
    try:
        ref = await run_in_threadpool(store.put, cid, key)
    except SecretStoreError as exc:
        log.error("storing a provider key failed", extra={"provider": body.provider, "error": str(exc)})
        raise HTTPException(503, "the secret store is unavailable; retry later") from None
    try:
        created = await run_in_threadpool(
            repo.create, org_id, body.provider, ref, body.project_id, connection_id=cid
        )
    except BaseException:
        try:
            await run_in_threadpool(store.delete, ref)
        except SecretStoreError:
            log.warning(
                "could not remove the secret of a connection that was not created",
                extra={"connection_id": cid},
            )
        raise
    log.info("connection created", extra={"connection_id": cid, "org_id": org_id, "provider": body.provider})
    return _out(created)


@router.get("", response_model=ConnectionList, summary="List the org's provider connections")
def list_connections(ctx: Ctx, principal: ReadPrincipal) -> ConnectionList:
    return ConnectionList(connections=[_out(c) for c in _repo(ctx).list(principal.org_id)])


@router.get(
    "/{connection_id}", response_model=ConnectionOut, responses=error_responses(404), summary="One connection"
)
def get_connection(connection_id: ConnectionId, ctx: Ctx, principal: ReadPrincipal) -> ConnectionOut:
    return _out(_get(ctx, principal.org_id, connection_id))


@router.delete(
    "/{connection_id}",
    status_code=204,
    response_class=Response,
    responses=error_responses(404, 503),
    summary="Remove a connection (deletes its key; telemetry history stays)",
)
def delete_connection(connection_id: ConnectionId, ctx: Ctx, principal: AdminPrincipal) -> Response:
    found = _get(ctx, principal.org_id, connection_id)
    if found.secret_ref:
        try:
            # a local reference is the ciphertext itself (erased below): no master key needed to delete
            store = SecretStores() if found.secret_ref.startswith(LOCAL_PREFIX) else _store(ctx)
            store.delete(found.secret_ref)
        except SecretStoreError as exc:
            log.error("removing a provider key failed", extra={"connection_id": found.id, "error": str(exc)})
            raise HTTPException(503, "the secret store is unavailable; retry later") from None
    _repo(ctx).delete(principal.org_id, connection_id)
    log.info("connection deleted", extra={"connection_id": found.id, "org_id": principal.org_id})
    return Response(status_code=204)


@router.post(
    "/{connection_id}/sync",
    status_code=202,
    response_model=SyncOut,
    responses={**error_responses(404, 409), 429: {"description": "At most one sync per 5 minutes"}},
    summary="Enqueue an immediate poll of this connection",
)
def sync_connection(connection_id: ConnectionId, ctx: Ctx, principal: AdminPrincipal) -> SyncOut:
    try:
        job_id = _repo(ctx).request_sync(principal.org_id, connection_id)
    except SyncRateLimited as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": str(exc.retry_after_s)}) from None
    return SyncOut(message="Sync job enqueued", job_id=job_id, connection_id=connection_id)


@router.put(
    "/{connection_id}/project",
    response_model=ProjectMapOut,
    responses=error_responses(404, 409),
    summary="Re-map the connection to another project (history stays on the old one)",
)
def map_connection(
    connection_id: ConnectionId, body: ProjectRef, ctx: Ctx, principal: AdminPrincipal
) -> ProjectMapOut:
    c = _repo(ctx).set_project(principal.org_id, connection_id, body.project_id)
    return ProjectMapOut(id=c.id, provider=c.provider, project_id=c.project_id, project_name=c.project_name)
