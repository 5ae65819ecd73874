"""Organizations: /api/v1/orgs — my memberships, one org, members, API keys and the audit log
(balance and transactions: `api/routers/balance.py`).

Every `/orgs/{slug}/…` route resolves the org from the path: an API key reaches its own org only, a user
the orgs they are a member of; any other slug is 404 (never 403, so a slug's existence is not revealed).
Within the org, the role (users) or the scopes (keys) decide: `read` (every role) to look, `admin` (admins,
admin keys) to change members, keys and to read the audit log — else 403. Removing or demoting the last
admin is 409. Changes that end someone's access (key revoked or rotated, role changed, member removed)
take effect on the next request at the API and the gateway (the revocation counter, docs/tenancy.md), and
each is appended to the org's audit log.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, ConfigDict, Field

from api.deps import Ctx, Page, Principal, _bearer, _unauthorized, resolve_principal
from api.errors import error_responses, validation_error
from controlplane import KEY_PREFIX, ApiKey, NotFound
from controlplane.jwt import JwksUnavailable, JwtError
from controlplane.sessions import SessionError, is_first_party
from controlplane.users import AuditLog, Membership

router = APIRouter(prefix="/orgs", tags=["organizations"], responses=error_responses(401, 403, 404))

Slug = Annotated[str, Path(min_length=1, max_length=64, description="The organization's slug")]
RoleName = Literal["admin", "member", "viewer"]


def org_access(scope: str):
    """Dependency: the principal acting for the org in the path, holding `scope` (403 otherwise)."""

    def dependency(
        slug: Slug,
        ctx: Ctx,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        if credentials is None or not credentials.credentials:
            raise _unauthorized("missing bearer token", token_sent=False)
        p = resolve_principal(ctx, credentials.credentials.strip(), slug, path_scoped=True)
        if scope not in p.scopes:
            who = f"role {p.role}" if p.role else "this credential"
            raise HTTPException(403, f"{who} cannot do this: it needs the {scope} scope")
        return p

    dependency.__name__ = f"org_access_{scope}"
    return dependency


OrgReader = Annotated[Principal, Depends(org_access("read"))]
OrgAdmin = Annotated[Principal, Depends(org_access("admin"))]


def _membership_json(m: Membership) -> dict[str, Any]:
    return {"slug": m.org_slug, "name": m.org_name, "role": m.role, "is_default": m.is_default}


def _me(ctx, credentials: HTTPAuthorizationCredentials | None) -> tuple[str | None, Principal | None]:
    """(user id, None) for a user of the control plane; (None, principal) for an API key or an identity
    provider token of a user the control plane does not know."""
    if credentials is None or not credentials.credentials:
        raise _unauthorized("missing bearer token", token_sent=False)
    token = credentials.credentials.strip()
    if not token.startswith(KEY_PREFIX) and is_first_party(token):
        try:
            user_id = ctx.sessions.verify_access(token)
        except SessionError as exc:
            raise _unauthorized(str(exc), token_sent=True) from exc
        if ctx.users.active(user_id) is None:
            raise _unauthorized("this user no longer exists", token_sent=True)
        return user_id, None
    if not token.startswith(KEY_PREFIX) and ctx.jwt is not None:
        try:
            user = ctx.users.by_external_id(ctx.jwt.verify(token).subject)
        except (JwtError, JwksUnavailable):  # resolve_principal answers it below
            user = None
        if user is not None:
            return user.id, None
    return None, resolve_principal(ctx, token, None)


@router.get("", summary="My organizations (memberships) and which one is the default")
def my_orgs(
    ctx: Ctx, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> dict[str, Any]:
    user_id, principal = _me(ctx, credentials)
    if user_id is not None:
        return {"organizations": [_membership_json(m) for m in ctx.memberships.for_user(user_id)]}
    assert principal is not None
    org = ctx.orgs.get(principal.org_id)
    assert org is not None
    return {"organizations": [{"slug": org.slug, "name": org.name, "role": None, "is_default": True}]}


class DefaultBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slug: str = Field(min_length=1, max_length=64)


@router.put("/default", summary="Set my default organization (users only)")
def set_default(
    body: DefaultBody,
    ctx: Ctx,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> dict[str, Any]:
    user_id, principal = _me(ctx, credentials)
    if user_id is None:
        assert principal is not None
        if body.slug.strip().lower() != principal.org_slug:
            raise HTTPException(404, "organization not found")
        raise HTTPException(400, "only a signed-in user has a default organization (not an API key)")
    m = ctx.memberships.resolve(user_id, body.slug)
    if m is None:
        raise HTTPException(404, "organization not found")
    return _membership_json(ctx.memberships.set_default(user_id, m.org_id))


@router.get("/{slug}", summary="One organization")
def get_org(ctx: Ctx, p: OrgReader) -> dict[str, Any]:
    org = ctx.orgs.get(p.org_id)
    assert org is not None
    return {
        "id": org.id,
        "slug": org.slug,
        "name": org.name,
        "plan_tier": org.plan_tier,
        "created_at": org.created_at,
        "my_role": p.role,
    }


# --------------------------------------------------------------------------------------------- members


def _member_json(m: Membership) -> dict[str, Any]:
    return {"user_id": m.user_id, "email": m.email, "role": m.role, "joined_at": m.created_at}


class MemberAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=3, max_length=320)
    role: RoleName = "member"


class RoleBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: RoleName


UserId = Annotated[str, Path(min_length=1, max_length=64)]


@router.get("/{slug}/members", summary="Members and their roles")
def list_members(ctx: Ctx, p: OrgReader) -> dict[str, Any]:
    return {"members": [_member_json(m) for m in ctx.memberships.for_org(p.org_id)]}


@router.post("/{slug}/members", status_code=201, summary="Add a member by email (admins)")
def add_member(body: MemberAdd, ctx: Ctx, p: OrgAdmin) -> dict[str, Any]:
    user = ctx.users.by_email(body.email)
    if user is None or user.deleted_at is not None:
        raise HTTPException(404, "no user with this email: they must have an account first")
    return _member_json(ctx.memberships.add(p.org_id, user.id, body.role, actor=p.actor))


@router.patch("/{slug}/members/{user_id}", summary="Change a member's role (admins; not the last admin)")
def change_role(user_id: UserId, body: RoleBody, ctx: Ctx, p: OrgAdmin) -> dict[str, Any]:
    return _member_json(ctx.memberships.set_role(p.org_id, user_id, body.role, actor=p.actor))


@router.delete(
    "/{slug}/members/{user_id}", status_code=204, summary="Remove a member (admins; not the last admin)"
)
def remove_member(user_id: UserId, ctx: Ctx, p: OrgAdmin) -> Response:
    ctx.memberships.remove(p.org_id, user_id, actor=p.actor)
    return Response(status_code=204)


# --------------------------------------------------------------------------------------------- API keys


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    scopes: list[Literal["read", "ingest", "admin", "billing"]] = Field(min_length=1, max_length=4)
    expires_at: datetime | None = None


class KeyRotate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_seconds: int = Field(default=0, ge=0, le=30 * 24 * 3600, description="old secret valid this long")


KeyId = Annotated[str, Path(min_length=1, max_length=64)]


def _key_json(k: ApiKey) -> dict[str, Any]:
    return {
        "id": k.id,
        "name": k.name,
        "prefix": k.prefix,
        "scopes": list(k.scopes),
        "created_at": k.created_at,
        "last_used_at": k.last_used_at,
        "expires_at": k.expires_at,
        "revoked_at": k.revoked_at,
    }


@router.get("/{slug}/api-keys", summary="The org's API keys (prefix only; admins)")
def list_keys(ctx: Ctx, p: OrgAdmin) -> dict[str, Any]:
    return {"api_keys": [_key_json(k) for k in ctx.api_keys.list(p.org_id)]}


@router.post("/{slug}/api-keys", status_code=201, summary="Create an API key; the key is shown once (admins)")
def create_key(body: KeyCreate, ctx: Ctx, p: OrgAdmin) -> dict[str, Any]:
    if body.expires_at is not None and body.expires_at.tzinfo is None:
        raise validation_error(
            ("body", "expires_at"), "must carry a timezone (e.g. 2027-01-01T00:00:00Z)", str(body.expires_at)
        )
    key, plaintext = ctx.api_keys.create(p.org_id, body.scopes, body.name, body.expires_at)
    AuditLog(ctx.engine).append(
        p.org_id, p.actor, "api_key.created", f"api_key:{key.id}", scopes=list(key.scopes)
    )
    return {**_key_json(key), "key": plaintext}


@router.post(
    "/{slug}/api-keys/{key_id}/rotate", summary="A new secret; the old one ends now or after a grace"
)
def rotate_key(key_id: KeyId, ctx: Ctx, p: OrgAdmin, body: KeyRotate | None = None) -> dict[str, Any]:
    grace = timedelta(seconds=body.grace_seconds) if body else None
    key, plaintext = ctx.api_keys.rotate(key_id, p.org_id, grace)
    AuditLog(ctx.engine).append(
        p.org_id, p.actor, "api_key.rotated", f"api_key:{key_id}", new_key=key.id,
        grace_seconds=body.grace_seconds if body else 0,
    )  # fmt: skip
    return {**_key_json(key), "key": plaintext, "replaces": key_id}


@router.delete("/{slug}/api-keys/{key_id}", summary="Revoke an API key (admins)")
def revoke_key(key_id: KeyId, ctx: Ctx, p: OrgAdmin) -> dict[str, Any]:
    before = ctx.api_keys.get(key_id, p.org_id)
    if before is None:
        raise NotFound("API key not found")
    key = ctx.api_keys.revoke(key_id, p.org_id)
    if before.revoked_at is None:
        AuditLog(ctx.engine).append(p.org_id, p.actor, "api_key.revoked", f"api_key:{key_id}")
    return _key_json(key)


# --------------------------------------------------------------------------------------------- audit log


@router.get("/{slug}/audit-log", summary="Who changed keys, members, roles and the balance (admins)")
def audit_log(ctx: Ctx, p: OrgAdmin, page: Page, request: Request) -> dict[str, Any]:
    items, total = AuditLog(ctx.engine).list(p.org_id, offset=page.offset, limit=page.page_size)
    return {"entries": items, "pagination": page.info(total)}
