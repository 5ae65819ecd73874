"""The web dashboard (docs/dashboard.md): the static single-page app at `/app/` (`/` redirects there) and the
three routes it needs beyond the public API — everything it shows comes from the public `/api/v1` routes.

- `POST /api/v1/dashboard/sign-in` (no auth, the public rate limit): exchanges a one-time sign-in link token
  (`controlplane.signin_links`, printed by `joulestream up`) for a session key; 401 when the token is unknown,
  used or expired.
- `GET /api/v1/dashboard/session`: who the credential is (org, scopes) and, for admins, the Dagster UI's URL.
- `POST /api/v1/dashboard/sign-out`: revokes the credential when it is a session key a link opened (a key the
  user typed is theirs: it is only forgotten by the page).

The app's files are in `api/dashboard/static/`; the chart library is copied into its `vendor/` at install time
(`make` runs `npm ci` in `api/dashboard/`), never fetched at run time. The pages carry a strict CSP
(same-origin only) and `Referrer-Policy: no-referrer`, so a sign-in token in the URL's fragment goes nowhere.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from api.deps import Ctx, Principal, get_principal
from api.errors import error_responses
from api.routers.public import _limiter
from controlplane.signin_links import SESSION_KEY_NAME, SignInLinks

STATIC = Path(__file__).resolve().parent.parent / "dashboard" / "static"
VENDOR = STATIC / "vendor"
APP_PATH = "/app/"
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

router = APIRouter(prefix="/dashboard", tags=["dashboard"])
pages = APIRouter(include_in_schema=False)


class SignInIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=200, description="the token of a sign-in link")


class SignInOut(BaseModel):
    api_key: str = Field(description="a session key: keep it for this browser session only")
    org_slug: str
    scopes: list[str]
    expires_at: datetime


class SessionOut(BaseModel):
    org_slug: str
    org_name: str | None
    scopes: list[str]
    method: str
    session_key: bool = Field(description="a key a sign-in link opened (sign-out revokes it)")
    expires_at: datetime | None
    dagster_url: str | None = Field(description="the operators' Dagster UI; admins only, when configured")


@router.post(
    "/sign-in",
    response_model=SignInOut,
    summary="Exchange a one-time sign-in link token for a session key (no auth)",
    responses={**error_responses(401, 422), 429: {"description": "the public rate limit"}},
)
def sign_in(body: SignInIn, request: Request, ctx: Ctx) -> SignInOut:
    limiter = _limiter(ctx)
    wait = limiter.check("dashboard-sign-in", request.client.host if request.client else None)
    if wait is not None:
        raise HTTPException(
            429, f"rate limit: {limiter.description} per client", headers={"Retry-After": str(int(wait))}
        )
    session = SignInLinks(ctx.engine).exchange(
        body.token, timedelta(seconds=ctx.settings.dashboard_session_s)
    )
    if session is None:
        raise HTTPException(401, "this sign-in link is invalid, already used or expired: ask for a new one")
    org = ctx.orgs.get(session.key.org_id)
    assert session.key.expires_at is not None
    return SignInOut(
        api_key=session.plaintext,
        org_slug=org.slug if org else "",
        scopes=list(session.key.scopes),
        expires_at=session.key.expires_at,
    )


Authenticated = Annotated[Principal, Depends(get_principal)]


@router.get(
    "/session",
    response_model=SessionOut,
    summary="Who this credential is",
    responses=error_responses(401, 403),
)
def session(ctx: Ctx, principal: Authenticated) -> SessionOut:
    org = ctx.orgs.get(principal.org_id)
    key = ctx.api_keys.get(principal.key_id, principal.org_id) if principal.key_id else None
    return SessionOut(
        org_slug=principal.org_slug,
        org_name=org.name if org else None,
        scopes=sorted(principal.scopes),
        method=principal.method,
        session_key=key is not None and key.name == SESSION_KEY_NAME,
        expires_at=key.expires_at if key else None,
        dagster_url=ctx.settings.dagster_url if "admin" in principal.scopes else None,
    )


@router.post(
    "/sign-out",
    status_code=204,
    summary="End the session (revokes a session key a sign-in link opened)",
    responses=error_responses(401, 403),
)
def sign_out(ctx: Ctx, principal: Authenticated) -> Response:
    key = ctx.api_keys.get(principal.key_id, principal.org_id) if principal.key_id else None
    if key is not None and key.name == SESSION_KEY_NAME:
        ctx.api_keys.revoke(key.id, principal.org_id)
    return Response(status_code=204)


@pages.get("/")
def root() -> RedirectResponse:
    return RedirectResponse(APP_PATH, status_code=307)


@pages.get("/app")
def app_redirect() -> RedirectResponse:
    return RedirectResponse(APP_PATH, status_code=307)


@pages.get(APP_PATH)
def index() -> Any:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)


class _Static(StaticFiles):
    async def get_response(self, path: str, scope: Any) -> Any:
        response = await super().get_response(path, scope)
        response.headers.update({"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})
        return response


def install(app: FastAPI, api_prefix: str) -> None:
    """The dashboard's API routes under `api_prefix`, its pages at `/` and `/app/`, its files at `/app/static/`."""
    app.include_router(router, prefix=api_prefix)
    app.include_router(pages)
    app.mount("/app/static", _Static(directory=STATIC, check_dir=False), name="dashboard-static")
