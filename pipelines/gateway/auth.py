"""Authentication for the gateway (API keys and first-party JWTs), with a short-lived cache off the database.

`Authorization: Bearer js_live_…` → the control plane's `ApiKeys.authenticate` → the key's org, and the
key's workload (`Workloads.ensure_active(org, "gateway_key", key.id)`: the org's Default project unless
the key was re-mapped to another project). `Bearer <access token>` (POST /api/v1/auth/login) → the user,
and the org resolved like the API's: `X-Org-Slug` with a membership check, else the default membership;
no membership → 403 saying so. The user's role gives the scopes (a viewer cannot call models); its
workload is `gateway_key` with ref `user:<id>`. An identity-provider JWT (when `JOULESTREAM_JWT_*` is
configured) acts like on the API: a user the identity webhook created through its memberships, another
through the token's org claims.

Results are cached per (token hash, X-Org-Slug) for `ttl_s` (default 30 s), but every request first reads
the control plane's revocation counter (`auth_epochs`, one primary-key row; `controlplane.users`): when a
key was revoked or rotated, a role changed, a membership or a user removed, or a sign-in revoked since the
cache was filled, the cache is dropped — so those take effect on the next request. A key rotated with a
grace period stops at its (cached) expiry. Unknown keys are cached for at most 5 s. Concurrent first
requests with the same credential share one database lookup.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from controlplane import KEY_PREFIX, ApiKey, ApiKeys, Orgs, Workloads, hash_key
from controlplane.jwt import JwtError, JwtForbidden, JwtVerifier
from controlplane.sessions import SessionError, Sessions, is_first_party
from controlplane.users import Memberships, Users, current_epoch, scopes_for
from pipelines.gateway.errors import GatewayError, unauthorized

NEGATIVE_TTL_S = 5.0
MAX_ENTRIES = 50_000


@dataclass(frozen=True)
class Caller:
    org_id: str
    org_slug: str
    plan_tier: str
    key_id: str | None
    scopes: frozenset[str]
    project_id: str
    workload_id: str
    user_id: str | None = None  # a signed-in user (JWT) instead of an API key
    expires_at: datetime | None = None  # the key's expiry (a rotated key's grace end)


def _unavailable() -> GatewayError:
    return GatewayError(
        503, "authentication is temporarily unavailable, retry", type="api_error", code="auth_unavailable"
    )


class NoMembership(Exception):
    """A valid user token that reaches no org (→ 403 with the message)."""


class Authenticator:
    def __init__(
        self,
        engine: Engine,
        ttl_s: float = 30.0,
        sessions: Sessions | None = None,
        jwt: JwtVerifier | None = None,
    ) -> None:
        self.engine, self.ttl_s, self.jwt = engine, ttl_s, jwt
        self.keys, self.orgs, self.workloads = ApiKeys(engine), Orgs(engine), Workloads(engine)
        self.users, self.memberships, self.sessions = Users(engine), Memberships(engine), sessions
        self._cache: dict[str, tuple[float, Caller | NoMembership | None]] = {}
        self._inflight: dict[str, asyncio.Future[Caller | NoMembership | None]] = {}
        self._epoch: int | None = None
        self._next_read: asyncio.Future[int] | None = None
        self._reader: asyncio.Task[None] | None = None

    def _lookup(self, token: str, org_slug: str | None) -> Caller | NoMembership | None:
        if not token.startswith(KEY_PREFIX) and self.sessions is not None and is_first_party(token):
            return self._lookup_user(token, org_slug)
        if not token.startswith(KEY_PREFIX) and self.jwt is not None:
            return self._lookup_idp(token, org_slug)
        key = self.keys.authenticate(token)
        return None if key is None else self._caller(key, org_slug)

    def caller_for_key(self, org_id: str, key_id: str) -> Caller | None:
        """The caller of a stored key id (the batch runner runs a batch's lines as the key that created it);
        None once the key is revoked or expired. Blocking: call it off the event loop."""
        key = self.keys.get(key_id, org_id)
        caller = None if key is None or not key.is_usable(datetime.now(UTC)) else self._caller(key)
        return caller if isinstance(caller, Caller) else None

    def _caller(self, key: ApiKey, org_slug: str | None = None) -> Caller | NoMembership | None:
        """The caller of an authenticated key; NoMembership when `X-Org-Slug` names another org."""
        org = self.orgs.get(key.org_id)
        if org is None:
            return None
        if org_slug and org_slug.strip().lower() != org.slug:
            return NoMembership(f"This API key belongs to another organization than {org_slug.strip()!r}.")
        return self._in(org, key.id, frozenset(key.scopes), key_id=key.id, expires_at=key.expires_at)

    def _in(self, org: Any, source: str, scopes: frozenset[str], **who: Any) -> Caller:
        """A caller acting in `org` through its gateway workload of `source` (a key id, `jwt:<sub>`,
        `user:<id>`); `who`: key_id / user_id / expires_at."""
        workload = self.workloads.ensure_active(org.id, "gateway_key", source[:200])
        return Caller(
            org_id=org.id,
            org_slug=org.slug,
            plan_tier=org.plan_tier,
            scopes=scopes,
            project_id=workload.project_id,
            workload_id=workload.id,
            **{"key_id": None, **who},
        )

    def _lookup_idp(self, token: str, org_slug: str | None) -> Caller | NoMembership | None:
        """An identity-provider JWT: a user the webhook created acts through its memberships; another
        acts through the token's org claims (like the API)."""
        assert self.jwt is not None
        try:
            identity = self.jwt.verify(token)  # JwksUnavailable propagates: 503
        except JwtError:
            return None
        user = self.users.by_external_id(identity.subject)
        if user is not None:
            return self._user_caller(user.id, org_slug)
        try:
            org = self.orgs.get_by_slug(identity.org_for(org_slug))
        except JwtForbidden as exc:
            return NoMembership(str(exc))
        if org is None:
            return NoMembership("The token's organization is unknown here.")
        who = f"jwt:{identity.subject}"
        return self._in(org, who, frozenset(identity.scopes), user_id=who)

    def _lookup_user(self, token: str, org_slug: str | None) -> Caller | NoMembership | None:
        assert self.sessions is not None
        try:
            user_id = self.sessions.verify_access(token)
        except SessionError:
            return None
        return self._user_caller(user_id, org_slug)

    def _user_caller(self, user_id: str, org_slug: str | None) -> Caller | NoMembership | None:
        if self.users.active(user_id) is None:
            return None
        m = self.memberships.resolve(user_id, org_slug)
        if m is None:
            if org_slug:
                return NoMembership(f"You are not a member of organization {org_slug.strip().lower()!r}.")
            if not self.memberships.for_user(user_id):
                return NoMembership(
                    "This user is not a member of any organization: ask an org admin to add you."
                )
            return NoMembership("No default organization: send the X-Org-Slug header.")
        org = self.orgs.get(m.org_id)
        if org is None:
            return None
        return self._in(org, f"user:{user_id}", scopes_for(m.role), user_id=user_id)

    async def _check_epoch(self) -> None:
        """Drop the cache when the control plane's revocation counter moved (see the module docstring).

        Reads are coalesced without going stale: a request waits for a read that *starts after it arrived*
        (the next one), and every request waiting then shares it — one read per read-time, however many
        requests are in flight, and still none answered from a counter read before it came in."""
        fut = self._next_read
        if fut is None:
            fut = self._next_read = asyncio.get_running_loop().create_future()
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read_epochs(), name="gateway-auth-epoch")
        epoch = await fut
        if epoch != self._epoch:
            if self._epoch is None or epoch > self._epoch:
                self._cache.clear()
                self._epoch = epoch

    async def _read_epochs(self) -> None:
        while self._next_read is not None:
            fut, self._next_read = (
                self._next_read,
                None,
            )  # this read starts now; later arrivals wait for the next
            try:
                fut.set_result(await asyncio.to_thread(current_epoch, self.engine))
            except Exception as exc:  # noqa: BLE001 - handed to every waiter, which answers 503
                fut.set_exception(exc)
                fut.exception()  # retrieved: no "never retrieved" warning when nobody waits any more

    async def caller(
        self,
        authorization: str | None,
        scope: str | tuple[str, ...] = "ingest",
        org_slug: str | None = None,
    ) -> Caller:
        """The caller for an Authorization header (and X-Org-Slug), or GatewayError 401 / 403."""
        if not authorization:
            raise unauthorized("You didn't provide an API key. Send `Authorization: Bearer js_live_…`.")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthorized("Malformed Authorization header: expected `Bearer js_live_…`.")
        org_slug = (org_slug or "").strip()[:64] or None
        h = hash_key(f"{token}\0{org_slug}" if org_slug else token)
        try:
            await self._check_epoch()
        except Exception as exc:
            raise _unavailable() from exc
        now = time.monotonic()
        hit = self._cache.get(h)
        if hit is not None and hit[0] > now:
            found = hit[1]
        else:
            fut = self._inflight.get(h)
            if fut is None:
                fut = asyncio.get_running_loop().create_future()
                self._inflight[h] = fut
                try:
                    found = await asyncio.to_thread(self._lookup, token, org_slug)
                except Exception as exc:
                    fut.set_exception(exc)
                    fut.exception()  # retrieved: no "never retrieved" warning when nobody else waits
                    raise _unavailable() from exc
                finally:
                    self._inflight.pop(h, None)
                fut.set_result(found)
                if len(self._cache) >= MAX_ENTRIES:
                    self._cache.clear()
                self._cache[h] = (now + (self.ttl_s if found else min(self.ttl_s, NEGATIVE_TTL_S)), found)
            else:
                try:
                    found = await fut
                except Exception as exc:
                    raise _unavailable() from exc
        if isinstance(found, NoMembership):
            raise GatewayError(403, str(found), type="permission_error", code="no_membership")
        if found is None or (found.expires_at is not None and found.expires_at <= datetime.now(UTC)):
            raise unauthorized("Incorrect API key provided, or the key is revoked or expired.")
        wanted = (scope,) if isinstance(scope, str) else scope
        if not any(s in found.scopes for s in wanted):
            raise GatewayError(
                403,
                f"This {'role' if found.user_id else 'API key'} lacks the `{' or '.join(wanted)}` scope "
                "this endpoint needs.",
                type="permission_error",
                code="missing_scope",
            )
        return found

    def invalidate(self) -> None:
        self._cache.clear()
