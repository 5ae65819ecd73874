"""API-key authentication for the gateway, with a short-lived cache off the database.

`Authorization: Bearer js_live_…` → the control plane's `ApiKeys.authenticate` → the key's org, and the
key's workload (`Workloads.ensure_active(org, "gateway_key", key.id)`: the org's Default project unless
the key was re-mapped to another project). Results are cached per key hash for `ttl_s` (default 30 s):
a revoked key or a re-mapped workload takes effect within that time. Unknown keys are cached for at most
5 s. Concurrent first requests with the same key share one database lookup.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine

from controlplane import ApiKey, ApiKeys, Orgs, Workloads, hash_key
from pipelines.gateway.errors import GatewayError, unauthorized

NEGATIVE_TTL_S = 5.0
MAX_ENTRIES = 50_000


@dataclass(frozen=True)
class Caller:
    org_id: str
    org_slug: str
    plan_tier: str
    key_id: str
    scopes: frozenset[str]
    project_id: str
    workload_id: str


class Authenticator:
    def __init__(self, engine: Engine, ttl_s: float = 30.0) -> None:
        self.engine, self.ttl_s = engine, ttl_s
        self.keys, self.orgs, self.workloads = ApiKeys(engine), Orgs(engine), Workloads(engine)
        self._cache: dict[str, tuple[float, Caller | None]] = {}
        self._inflight: dict[str, asyncio.Future[Caller | None]] = {}

    def _lookup(self, token: str) -> Caller | None:
        key = self.keys.authenticate(token)
        return None if key is None else self._caller(key)

    def caller_for_key(self, org_id: str, key_id: str) -> Caller | None:
        """The caller of a stored key id (the batch runner runs a batch's lines as the key that created it);
        None once the key is revoked or expired. Blocking: call it off the event loop."""
        key = self.keys.get(key_id, org_id)
        return None if key is None or not key.is_usable(datetime.now(UTC)) else self._caller(key)

    def _caller(self, key: ApiKey) -> Caller | None:
        org = self.orgs.get(key.org_id)
        if org is None:
            return None
        workload = self.workloads.ensure_active(org.id, "gateway_key", key.id)
        return Caller(
            org_id=org.id,
            org_slug=org.slug,
            plan_tier=org.plan_tier,
            key_id=key.id,
            scopes=frozenset(key.scopes),
            project_id=workload.project_id,
            workload_id=workload.id,
        )

    async def caller(self, authorization: str | None, scope: str | tuple[str, ...] = "ingest") -> Caller:
        """The caller for an Authorization header, or GatewayError 401 / 403."""
        if not authorization:
            raise unauthorized("You didn't provide an API key. Send `Authorization: Bearer js_live_…`.")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthorized("Malformed Authorization header: expected `Bearer js_live_…`.")
        h = hash_key(token)
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
                    found = await asyncio.to_thread(self._lookup, token)
                except Exception as exc:
                    fut.set_exception(exc)
                    fut.exception()  # retrieved: no "never retrieved" warning when nobody else waits
                    raise GatewayError(
                        503,
                        "authentication is temporarily unavailable, retry",
                        type="api_error",
                        code="auth_unavailable",
                    ) from exc
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
                    raise GatewayError(
                        503,
                        "authentication is temporarily unavailable, retry",
                        type="api_error",
                        code="auth_unavailable",
                    ) from exc
        if found is None:
            raise unauthorized("Incorrect API key provided, or the key is revoked or expired.")
        wanted = (scope,) if isinstance(scope, str) else scope
        if not any(s in found.scopes for s in wanted):
            raise GatewayError(
                403,
                f"This API key lacks the `{' or '.join(wanted)}` scope this endpoint needs.",
                type="permission_error",
                code="missing_scope",
            )
        return found

    def invalidate(self) -> None:
        self._cache.clear()
