"""Authentication: POST /auth/login, POST /auth/refresh (first-party sessions, `controlplane.sessions`) and
POST /auth/webhook (the identity provider's events, `controlplane.identity`).

- login: email + password (argon2id) → an access and a refresh JWT. Attempts are rate-limited per account
  (`settings.login_rate_limit_account`) and per client IP (`login_rate_limit_ip`), counted whether they
  succeed or not: 429 with `Retry-After`. A wrong email and a wrong password are the same 401.
- refresh: a refresh token → a new pair; the old refresh token is spent. Presenting a spent one is reuse:
  401, and every token of that sign-in is revoked.
- webhook: Clerk's Svix-signed events, verified with the `svix` library against
  `settings.identity_webhook_secret` (svix-id, svix-timestamp within 5 minutes, svix-signature). A missing
  or bad signature → 400; no secret configured → 503; a verified event → 200 `{"received": true, …}`,
  applied once per svix-id (a replay is acknowledged, not re-applied); unknown event types → 200, ignored.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from api.deps import Ctx
from api.errors import ErrorBody, error_responses
from controlplane.errors import ControlPlaneError
from controlplane.identity import handle_identity_event
from controlplane.sessions import SessionError
from core.ratelimit import PublicRateLimit

router = APIRouter(prefix="/auth", tags=["authentication"])
log = logging.getLogger("joulestream.api.auth")


class LoginBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class RefreshBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: str = Field(min_length=1, max_length=4096)


class Tokens(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int  # seconds, the access token's lifetime


def _limiters(ctx) -> tuple[PublicRateLimit, PublicRateLimit]:
    lims = ctx.extras.get("login_rate_limiters")
    if lims is None:
        s = ctx.settings
        lims = ctx.extras.setdefault(
            "login_rate_limiters",
            (
                PublicRateLimit(s.login_rate_limit_account, s.rate_limit_storage),
                PublicRateLimit(s.login_rate_limit_ip, s.rate_limit_storage),
            ),
        )
    return lims


@router.post(
    "/login",
    summary="Sign in with email and password: an access and a refresh token",
    responses={**error_responses(401, 422), 429: {"model": ErrorBody, "description": "too many attempts"}},
)
def login(body: LoginBody, request: Request, ctx: Ctx) -> Tokens:
    per_account, per_ip = _limiters(ctx)
    account = hashlib.sha256(body.email.strip().lower().encode()).hexdigest()[:32]
    for limiter, scope, key, what in (
        (per_ip, "login-ip", request.client.host if request.client else None, "from this address"),
        (per_account, "login-account", account, "for this account"),
    ):
        wait = limiter.check(scope, key)
        if wait is not None:
            raise HTTPException(
                429,
                f"too many sign-in attempts {what} ({limiter.description}); retry later",
                headers={"Retry-After": str(int(wait))},
            )
    user = ctx.users.authenticate(body.email, body.password)
    if user is None:
        raise HTTPException(401, "wrong email or password", headers={"WWW-Authenticate": "Bearer"})
    pair = ctx.sessions.issue(user.id)
    return Tokens(
        access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in
    )


@router.post(
    "/refresh",
    summary="Rotate a refresh token: a new access and refresh token (reuse revokes the sign-in)",
    responses=error_responses(401, 422),
)
def refresh(body: RefreshBody, ctx: Ctx) -> Tokens:
    try:
        pair = ctx.sessions.refresh(body.refresh_token.strip())
    except SessionError as exc:
        raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from exc
    return Tokens(
        access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in
    )


@router.post(
    "/webhook",
    summary="Identity provider (Clerk) events, authenticated by their Svix signature",
    responses={
        400: {"model": ErrorBody, "description": "missing or invalid signature"},
        **error_responses(503),
    },
)
async def identity_webhook(
    request: Request,
    ctx: Ctx,
    svix_id: Annotated[str | None, Header(alias="svix-id", max_length=255)] = None,
) -> dict[str, Any]:
    from svix.webhooks import Webhook, WebhookVerificationError

    headers = {
        k.lower(): v for k, v in request.headers.items() if k.lower().startswith(("svix-", "webhook-"))
    }
    if not svix_id or "svix-signature" not in headers or "svix-timestamp" not in headers:
        raise HTTPException(400, "missing Svix signature headers (svix-id, svix-timestamp, svix-signature)")
    secret = ctx.settings.identity_webhook_secret
    if secret is None or not secret.get_secret_value():
        raise HTTPException(
            503, "the identity webhook is not configured (JOULESTREAM_IDENTITY_WEBHOOK_SECRET)"
        )
    payload = await request.body()
    try:
        verifier = Webhook(secret.get_secret_value())
    except ValueError as exc:  # not a whsec_… base64 secret
        log.error("JOULESTREAM_IDENTITY_WEBHOOK_SECRET is not a Svix secret (whsec_…)")
        raise HTTPException(503, "the identity webhook is misconfigured") from exc
    try:
        verifier.verify(payload, headers)
    except (WebhookVerificationError, ValueError) as exc:  # ValueError: a malformed signature header
        raise HTTPException(400, "invalid Svix signature") from exc
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(400, "the body is not a JSON event") from exc
    if not isinstance(event, dict):
        raise HTTPException(400, "the body is not a JSON event")
    try:
        outcome = await run_in_threadpool(handle_identity_event, ctx.engine, svix_id, event)
    except ControlPlaneError as exc:  # data the rules refuse: acknowledged (a retry would not help)
        outcome = f"ignored: {exc}"
    log.info("identity event %s (%s): %s", svix_id, str(event.get("type"))[:100], outcome)
    return {"received": True, "duplicate": outcome == "duplicate"}
