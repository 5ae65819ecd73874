"""Request dependencies: the app context, authentication (API key or JWT) → `Principal`, scope checks,
pagination and date ranges.

Auth: `Authorization: Bearer js_live_…` (an API key, which carries its org), `Bearer <access token>` from
`POST /auth/login` (first-party, `controlplane.sessions`), or `Bearer <JWT>` from the identity provider when
JWT auth is configured (`controlplane.jwt`). Org resolution (docs/tenancy.md): the key's org → `X-Org-Slug`
with a membership check → the user's default membership. Users known to the control plane (first-party, or
created by the identity webhook) act through their memberships, whose role gives the scopes; other identity
provider tokens act through their claims. Failures:
- 401 + `WWW-Authenticate: Bearer` — no token, unknown/malformed/revoked/expired key, bad JWT;
- 403 — valid credential without the scope, or an `X-Org-Slug` it does not grant;
- 503 — the identity provider's JWKS cannot be fetched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from api.errors import validation_error
from api.telemetry import TelemetryProvider
from controlplane import KEY_PREFIX, ApiKeys, FactorVersions, Orgs, Projects, Workloads
from controlplane.jwt import JwksUnavailable, JwtError, JwtForbidden, JwtVerifier
from controlplane.sessions import SessionError, Sessions, is_first_party
from controlplane.users import Memberships, Users, scopes_for
from core.settings import Settings

Check = Callable[[], Any | Awaitable[Any]]
LastPoll = Callable[[], datetime | None | Awaitable[datetime | None]]
DEFAULT_RANGE_DAYS = 30


@dataclass
class AppContext:
    """Everything the routers need; built once by `create_app`, stored on `app.state.ctx`."""

    settings: Settings
    engine: Engine
    telemetry: TelemetryProvider
    version: str
    jwt: JwtVerifier | None = None
    warehouse_client_factory: Callable[[], Any] | None = None
    warehouse_check: Check | None = None
    kafka_check: Check | None = None
    last_poll: LastPoll | None = None
    health_timeout_s: float = 5.0
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.orgs = Orgs(self.engine)
        self.api_keys = ApiKeys(self.engine)
        self.projects = Projects(self.engine)
        self.workloads = Workloads(self.engine)
        self.factor_versions = FactorVersions(self.engine)
        self.users = Users(self.engine)
        self.memberships = Memberships(self.engine)
        self._sessions: Sessions | None = None

    @property
    def sessions(self) -> Sessions:
        if self._sessions is None:  # the key file under home is made on first use, not at import
            self._sessions = Sessions(self.engine, self.settings)
        return self._sessions


async def get_ctx(request: Request) -> AppContext:
    return request.app.state.ctx


Ctx = Annotated[AppContext, Depends(get_ctx)]


# --------------------------------------------------------------------------------------------- auth


@dataclass(frozen=True)
class Principal:
    org_id: str
    org_slug: str
    scopes: frozenset[str]
    key_id: str | None = None  # API key auth
    subject: str | None = None  # JWT auth (`sub`)
    user_id: str | None = None  # a user of the control plane (first-party login or identity webhook)
    role: str | None = None  # the user's role in this org

    @property
    def method(self) -> str:
        return "api_key" if self.key_id else "jwt"

    @property
    def actor(self) -> str:
        """Who acts, for audit entries: `user:<id>`, `api_key:<id>` or `jwt:<sub>`."""
        if self.user_id:
            return f"user:{self.user_id}"
        return f"api_key:{self.key_id}" if self.key_id else f"jwt:{self.subject}"


_bearer = HTTPBearer(
    auto_error=False,
    description="An API key (`js_live_…`) or, when configured, a JWT from the identity provider.",
)


def _unauthorized(detail: str, *, token_sent: bool) -> HTTPException:
    challenge = 'Bearer error="invalid_token"' if token_sent else "Bearer"
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": challenge})


def get_principal(
    ctx: Ctx,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    x_org_slug: Annotated[
        str | None,
        Header(
            alias="X-Org-Slug",
            max_length=64,
            description="JWT only: act for this org (must be one of the user's memberships).",
        ),
    ] = None,
) -> Principal:
    if credentials is None or not credentials.credentials:
        raise _unauthorized("missing bearer token", token_sent=False)
    return resolve_principal(ctx, credentials.credentials.strip(), x_org_slug)


def _not_found_org() -> HTTPException:
    return HTTPException(404, "organization not found")


def _user_principal(
    ctx: AppContext, user_id: str, slug: str | None, path_scoped: bool, sub: str
) -> Principal:
    if ctx.users.active(user_id) is None:
        raise _unauthorized("this user no longer exists", token_sent=True)
    m = ctx.memberships.resolve(user_id, slug)
    if m is None:
        if slug and path_scoped:
            raise _not_found_org()
        if slug:
            raise HTTPException(403, f"not a member of organization {slug.strip().lower()!r}")
        if not ctx.memberships.for_user(user_id):
            raise HTTPException(
                403, "this user is not a member of any organization: ask an org admin to add you"
            )
        raise HTTPException(403, "no default organization: send the X-Org-Slug header")
    return Principal(
        org_id=m.org_id,
        org_slug=m.org_slug,
        scopes=scopes_for(m.role),
        subject=sub,
        user_id=user_id,
        role=m.role,
    )


def resolve_principal(
    ctx: AppContext, token: str, slug: str | None, *, path_scoped: bool = False
) -> Principal:
    """The principal of a bearer token acting for org `slug` (X-Org-Slug, or the org in the path when
    `path_scoped`: then an org the credential does not reach is 404, never 403)."""
    if token.startswith(KEY_PREFIX):
        key = ctx.api_keys.authenticate(token)
        if key is None:
            raise _unauthorized("invalid, revoked or expired API key", token_sent=True)
        org = ctx.orgs.get(key.org_id)
        if org is None:  # cannot happen with the FK; treat as a dead key
            raise _unauthorized("invalid, revoked or expired API key", token_sent=True)
        if slug and slug.strip().lower() != org.slug:
            if path_scoped:
                raise _not_found_org()
            raise HTTPException(403, f"this API key belongs to another organization than {slug.strip()!r}")
        return Principal(org_id=org.id, org_slug=org.slug, scopes=frozenset(key.scopes), key_id=key.id)
    if is_first_party(token):
        try:
            user_id = ctx.sessions.verify_access(token)
        except SessionError as exc:
            raise _unauthorized(str(exc), token_sent=True) from exc
        return _user_principal(ctx, user_id, slug, path_scoped, user_id)
    if ctx.jwt is None:
        raise _unauthorized("invalid bearer token", token_sent=True)
    try:
        identity = ctx.jwt.verify(token)
    except JwtError as exc:
        raise _unauthorized(str(exc), token_sent=True) from exc
    except JwksUnavailable as exc:
        raise HTTPException(503, "authentication service unavailable, retry later") from exc
    user = ctx.users.by_external_id(identity.subject)
    if user is not None:  # a user the identity webhook created: memberships decide
        return _user_principal(ctx, user.id, slug, path_scoped, identity.subject)
    try:
        org_slug = identity.org_for(slug)
    except JwtForbidden as exc:
        if path_scoped:
            raise _not_found_org() from exc
        raise HTTPException(403, str(exc)) from exc
    org = ctx.orgs.get_by_slug(org_slug)
    if org is None:
        if path_scoped:
            raise _not_found_org()
        raise HTTPException(403, f"unknown organization {org_slug!r}")
    return Principal(
        org_id=org.id, org_slug=org.slug, scopes=frozenset(identity.scopes), subject=identity.subject
    )


def authenticated(ctx: AppContext, authorization: str | None) -> bool:
    """Whether an `Authorization` header carries a valid credential (API key or JWT, any scope). Never
    raises: for routes that show more to an authenticated caller but answer everyone (/health)."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    try:
        get_principal(ctx, HTTPAuthorizationCredentials(scheme="Bearer", credentials=token.strip()))
    except HTTPException:
        return False
    return True


def require_scope(*scopes: str) -> Callable[..., Principal]:
    """Dependency: an authenticated principal holding every one of `scopes` (403 otherwise)."""

    def dependency(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        missing = [s for s in scopes if s not in principal.scopes]
        if missing:
            raise HTTPException(403, f"missing scope: {', '.join(missing)}")
        return principal

    dependency.__name__ = f"require_scope_{'_'.join(scopes)}"
    return dependency


ReadPrincipal = Annotated[Principal, Depends(require_scope("read"))]
AdminPrincipal = Annotated[Principal, Depends(require_scope("admin"))]


# --------------------------------------------------------------------------------------------- pagination


@dataclass(frozen=True)
class Pagination:
    page: int
    page_size: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size

    def info(self, total_items: int) -> dict[str, int]:
        return {
            "page": self.page,
            "page_size": self.page_size,
            "total_items": total_items,
            "total_pages": (total_items + self.page_size - 1) // self.page_size,
        }


def pagination(
    page: Annotated[int, Query(ge=1, le=1_000_000, description="1-based page number")] = 1,
    page_size: Annotated[int, Query(ge=1, le=200, description="items per page (max 200)")] = 50,
) -> Pagination:
    return Pagination(page=page, page_size=page_size)


Page = Annotated[Pagination, Depends(pagination)]


# --------------------------------------------------------------------------------------------- date range


@dataclass(frozen=True)
class DateRange:
    """Inclusive calendar days, UTC."""

    start: date
    end: date

    def as_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


def date_range(
    start_date: Annotated[
        date | None,
        Query(description=f"ISO date, inclusive (default: {DEFAULT_RANGE_DAYS} days before end_date)"),
    ] = None,
    end_date: Annotated[date | None, Query(description="ISO date, inclusive (default: today, UTC)")] = None,
) -> DateRange:
    end = end_date or datetime.now(UTC).date()
    default_start = (
        end - timedelta(days=DEFAULT_RANGE_DAYS) if end.toordinal() > DEFAULT_RANGE_DAYS else date.min
    )
    start = start_date or default_start
    if start > end:
        raise validation_error(("query", "start_date"), "start_date must not be after end_date", str(start))
    return DateRange(start=start, end=end)


Dates = Annotated[DateRange, Depends(date_range)]
