"""Provider connections, the tenant side: an org's admin key for the OpenAI / Anthropic / OpenRouter usage
APIs — register, list, re-map to a project, request a sync, delete.

Table `connections` (`controlplane.schema`, migration `0020_connections`). The key itself is never stored:
`secret_ref` is a `core.secrets` reference (NaCl ciphertext or an AWS ARN), cleared when the connection is
deleted. At most one live (not deleted) connection per org and provider. Deleting is soft (`deleted_at`):
the connection's workloads (and so its telemetry history) keep resolving. Status: `active` (polled on
schedule), `error` (N consecutive failures: still retried, at the longest backoff; a success makes it active
again), `disabled` (the provider answered 401/403: never polled again; register the key anew).
`sync_requested_at` asks the pollers for an immediate poll; `last_sync_request_at` rate-limits manual
syncs. The pollers' side (leases, cursors, bucket states, failures) is `controlplane.poll_state`.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine, and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from controlplane._util import new_id as _new_id
from controlplane._util import now as _now
from controlplane.errors import Conflict, Invalid, NotFound
from controlplane.projects import Projects
from controlplane.schema import PROVIDERS, connection_buckets, connections, projects, workloads
from controlplane.workloads import Workloads

WORKLOAD_KIND = "connection"
SYNC_MIN_INTERVAL = timedelta(minutes=5)

Provider = Literal["openai", "anthropic", "openrouter"]
Status = Literal["active", "error", "disabled"]


def new_connection_id() -> str:
    """A fresh connection id (the API uses it to name the secret before the row exists)."""
    return _new_id()


class SyncRateLimited(Conflict):
    """A manual sync was requested less than `SYNC_MIN_INTERVAL` after the previous one."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            f"a sync was requested less than {int(SYNC_MIN_INTERVAL.total_seconds() // 60)} minutes ago; "
            f"retry in {retry_after_s} s"
        )
        self.retry_after_s = retry_after_s


class Connection(BaseModel):
    """A connection as stored, with its current project (from the active workload)."""

    model_config = ConfigDict(frozen=True)

    id: str
    org_id: str
    provider: Provider
    status: Status
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None
    last_polled_at: datetime | None = None
    last_attempt_at: datetime | None = None
    next_poll_at: datetime | None = None
    poll_cursor: datetime | None = None
    consecutive_failures: int = 0
    last_error: str | None = None
    sync_requested_at: datetime | None = None
    sync_job_id: str | None = None
    last_sync_request_at: datetime | None = None
    workload_id: str | None = None
    project_id: str | None = None
    project_name: str | None = None
    poll_notes: list[str] = Field(
        default_factory=list
    )  # the last successful poll's notes (pollers, issue 21)
    # the secret's reference (never the secret): excluded from dumps and repr
    secret_ref: str | None = Field(default=None, exclude=True, repr=False)


_cols = [c for c in connections.c if c.name not in ("lease_owner", "lease_until")]
SELECT_CONNECTION = (
    select(
        *_cols,
        workloads.c.id.label("workload_id"),
        workloads.c.project_id,
        projects.c.name.label("project_name"),
    )
    .select_from(connections)
    .outerjoin(
        workloads,
        and_(
            workloads.c.org_id == connections.c.org_id,
            workloads.c.kind == WORKLOAD_KIND,
            workloads.c.ref_id == connections.c.id,
            workloads.c.is_active.is_(True),
        ),
    )
    .outerjoin(projects, projects.c.id == workloads.c.project_id)
)
IS_LIVE = connections.c.deleted_at.is_(None)


def connection_from_row(row) -> Connection:
    values = dict(row)
    notes = values.get("poll_notes")
    values["poll_notes"] = json.loads(notes) if notes else []
    return Connection.model_validate(values)


class Connections:
    """Repository of an org's provider connections: every method takes `org_id` (another org's id is
    NotFound). The pollers use `controlplane.poll_state.PollState`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def live_for_provider(self, org_id: str, provider: str) -> Connection | None:
        return self._one(connections.c.org_id == org_id, connections.c.provider == provider, IS_LIVE)

    def create(
        self,
        org_id: str,
        provider: str,
        secret_ref: str,
        project_id: str | None = None,
        *,
        connection_id: str | None = None,
        now: datetime | None = None,
    ) -> Connection:
        """A new active connection mapped to `project_id` (default: the org's Default project), with its
        workload, in one transaction. Conflict when the org already has a live one for `provider`."""
        if provider not in PROVIDERS:
            raise Invalid(f"unknown provider {provider!r}; providers: {', '.join(PROVIDERS)}")
        if project_id is None:
            project_id = Projects(self.engine).ensure_default_project(org_id).id
        elif Projects(self.engine).get(org_id, project_id) is None:
            raise NotFound("project not found")
        now = now or _now()
        cid = connection_id or new_connection_id()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(connections).values(
                        id=cid,
                        org_id=org_id,
                        provider=provider,
                        status="active",
                        secret_ref=secret_ref,
                        created_at=now,
                        updated_at=now,
                        consecutive_failures=0,
                    )
                )
                conn.execute(
                    insert(workloads).values(
                        id=_new_id(),
                        org_id=org_id,
                        project_id=project_id,
                        kind=WORKLOAD_KIND,
                        ref_id=cid,
                        is_active=True,
                        created_at=now,
                        deactivated_at=None,
                    )
                )
        except IntegrityError as exc:
            raise Conflict(f"A connection for {provider} already exists in this organization.") from exc
        found = self.get(org_id, cid)
        assert found is not None
        return found

    def get(self, org_id: str, connection_id: str) -> Connection | None:
        return self._one(connections.c.org_id == org_id, connections.c.id == connection_id, IS_LIVE)

    def list(self, org_id: str) -> list[Connection]:
        with self.engine.connect() as conn:
            rows = (
                conn.execute(
                    SELECT_CONNECTION.where(connections.c.org_id == org_id, IS_LIVE).order_by(
                        connections.c.created_at, connections.c.id
                    )
                )
                .mappings()
                .all()
            )
        return [connection_from_row(r) for r in rows]

    def delete(self, org_id: str, connection_id: str, now: datetime | None = None) -> Connection:
        """Soft-delete: erase the secret reference, deactivate the workload, drop the poller state. The
        caller removes the secret from its store first (`SecretStore.delete(found.secret_ref)`)."""
        now = now or _now()
        with self.engine.begin() as conn:
            n = conn.execute(
                update(connections)
                .where(connections.c.org_id == org_id, connections.c.id == connection_id, IS_LIVE)
                .values(
                    deleted_at=now,
                    updated_at=now,
                    secret_ref=None,
                    sync_requested_at=None,
                    next_poll_at=None,
                )
            ).rowcount
            if not n:
                raise NotFound("connection not found")
            conn.execute(
                update(workloads)
                .where(
                    workloads.c.org_id == org_id,
                    workloads.c.kind == WORKLOAD_KIND,
                    workloads.c.ref_id == connection_id,
                    workloads.c.is_active.is_(True),
                )
                .values(is_active=False, deactivated_at=now)
            )
            conn.execute(
                delete(connection_buckets).where(connection_buckets.c.connection_id == connection_id)
            )
        row = self._one(connections.c.org_id == org_id, connections.c.id == connection_id)
        assert row is not None
        return row

    def request_sync(
        self,
        org_id: str,
        connection_id: str,
        now: datetime | None = None,
        min_interval: timedelta = SYNC_MIN_INTERVAL,
    ) -> str:
        """Ask the pollers for an immediate poll; returns a job id. Conflict when the connection is in
        error/disabled, SyncRateLimited within `min_interval` of the previous request."""
        now = now or _now()
        found = self.get(org_id, connection_id)
        if found is None:
            raise NotFound("connection not found")
        if found.status != "active":
            raise Conflict(
                f"connection is {found.status}: "
                + (
                    "the provider rejected its key; register the key again"
                    if found.status == "disabled"
                    else "polling keeps failing (see last_error); it is retried automatically"
                )
            )
        job_id = _new_id()
        # one guarded UPDATE: concurrent requests cannot both pass the rate limit
        with self.engine.begin() as conn:
            n = conn.execute(
                update(connections)
                .where(
                    connections.c.id == connection_id,
                    connections.c.org_id == org_id,
                    connections.c.status == "active",
                    IS_LIVE,
                    or_(
                        connections.c.last_sync_request_at.is_(None),
                        connections.c.last_sync_request_at <= now - min_interval,
                    ),
                )
                .values(sync_requested_at=now, last_sync_request_at=now, sync_job_id=job_id, updated_at=now)
            ).rowcount
        if n:
            return job_id
        again = self.get(org_id, connection_id)
        if again is None:
            raise NotFound("connection not found")
        if again.status != "active":
            raise Conflict(f"connection is {again.status}")
        last = again.last_sync_request_at or now
        wait = (last + min_interval - now).total_seconds()
        raise SyncRateLimited(max(1, int(wait + 0.999)))

    def set_project(self, org_id: str, connection_id: str, project_id: str) -> Connection:
        """Re-map: a new workload under `project_id`, the old one deactivated (history stays on it)."""
        if self.get(org_id, connection_id) is None:
            raise NotFound("connection not found")
        Workloads(self.engine).remap(org_id, WORKLOAD_KIND, connection_id, project_id)
        found = self.get(org_id, connection_id)
        if found is None:  # deleted concurrently
            raise NotFound("connection not found")
        return found

    def _one(self, *conds) -> Connection | None:
        with self.engine.connect() as conn:
            row = conn.execute(SELECT_CONNECTION.where(*conds)).mappings().first()
        return connection_from_row(row) if row else None
