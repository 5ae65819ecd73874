"""Provider connections (an org's admin key for OpenAI / Anthropic / OpenRouter usage APIs) and the pollers'
per-bucket state.

Tables (migration `0020_connections`, on the shared `controlplane.schema.metadata`):

- `connections`: one row per registered provider key. The key itself is never here: `secret_ref` is a
  `core.secrets` reference (NaCl ciphertext or an AWS ARN), cleared when the connection is deleted. At most
  one live (not deleted) connection per org and provider. Deleting is soft (`deleted_at`): the connection's
  workloads (and so its telemetry history) keep resolving. Status: `active` (polled on schedule), `error`
  (N consecutive failures: still retried, at the longest backoff; a success makes it active again),
  `disabled` (the provider answered 401/403: never polled again; register the key anew).
- `connection_buckets`: what the poller last published for each provider bucket (event_id): a hash of the
  figures, the revision and the event itself. It makes re-polling idempotent — an unchanged bucket keeps its
  (event_id, revision) — and a correction gets a higher revision. It also pins a bucket's attribution:
  later revisions keep the workload/project of the first one, so re-mapping a connection never moves
  history.

Scheduling columns: `next_poll_at` (NULL = due now), `poll_cursor` (the start of the newest bucket fully
fetched; the next poll starts at min(cursor, now - lookback)), `consecutive_failures`, `last_error` (never
contains the key), `lease_owner`/`lease_until` (a poller claims a connection with one guarded UPDATE, so
several poller processes never poll the same connection at once), `sync_requested_at` (a manual sync asks
for an immediate poll), `last_sync_request_at` (rate limit of manual syncs).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Engine,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from controlplane.errors import Conflict, Invalid, NotFound
from controlplane.repos import Projects, Workloads
from controlplane.schema import UTCDateTime, metadata, projects, workloads

PROVIDERS = ("openai", "anthropic", "openrouter")
STATUSES = ("active", "error", "disabled")
WORKLOAD_KIND = "connection"
SYNC_MIN_INTERVAL = timedelta(minutes=5)
LAST_ERROR_MAX = 500

Provider = Literal["openai", "anthropic", "openrouter"]
Status = Literal["active", "error", "disabled"]


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


connections = Table(
    "connections",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "org_id", String(36), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("provider", String(20), nullable=False),
    Column("status", String(20), nullable=False, server_default="active"),
    Column("secret_ref", Text(), nullable=True),  # core.secrets reference; NULL once deleted
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("deleted_at", UTCDateTime(), nullable=True),
    Column("last_polled_at", UTCDateTime(), nullable=True),  # last successful poll
    Column("last_attempt_at", UTCDateTime(), nullable=True),
    Column("next_poll_at", UTCDateTime(), nullable=True),
    Column("poll_cursor", UTCDateTime(), nullable=True),
    Column("consecutive_failures", Integer(), nullable=False, server_default=text("0")),
    Column("last_error", String(LAST_ERROR_MAX), nullable=True),
    Column("sync_requested_at", UTCDateTime(), nullable=True),
    Column("sync_job_id", String(36), nullable=True),
    Column("last_sync_request_at", UTCDateTime(), nullable=True),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", UTCDateTime(), nullable=True),
    CheckConstraint(_in("provider", PROVIDERS), name="provider"),
    CheckConstraint(_in("status", STATUSES), name="status"),
    Index(
        "uq_connections_org_id_provider_live",
        "org_id",
        "provider",
        unique=True,
        sqlite_where=text("deleted_at IS NULL"),
        postgresql_where=text("deleted_at IS NULL"),
    ),
)

connection_buckets = Table(
    "connection_buckets",
    metadata,
    Column(
        "connection_id",
        String(36),
        ForeignKey("connections.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("event_id", String(200), primary_key=True),
    Column("bucket_start", UTCDateTime(), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("revision", BigInteger(), nullable=False),
    Column("event", Text(), nullable=False),  # the UsageEvent JSON last published for this bucket
    Column("updated_at", UTCDateTime(), nullable=False),
    Index("ix_connection_buckets_connection_id_bucket_start", "connection_id", "bucket_start"),
)


def _now() -> datetime:
    return datetime.now(UTC)


def new_connection_id() -> str:
    return str(uuid.uuid4())


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
    # the secret's reference (never the secret): excluded from dumps and repr
    secret_ref: str | None = Field(default=None, exclude=True, repr=False)


@dataclass(frozen=True)
class BucketState:
    event_id: str
    bucket_start: datetime
    content_hash: str
    revision: int
    event: str  # JSON


@dataclass(frozen=True)
class BucketWrite:
    event_id: str
    bucket_start: datetime
    content_hash: str
    revision: int
    event: str


_cols = [c for c in connections.c if c.name not in ("lease_owner", "lease_until")]
_select = (
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
_live = connections.c.deleted_at.is_(None)


def _model(row) -> Connection:
    return Connection.model_validate(dict(row))


class Connections:
    """Repository of provider connections. API-side methods take `org_id` (another org's id is NotFound);
    poller-side methods (`due`, `claim`, `record_*`) work across orgs."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ----------------------------------------------------------------------------------------- API side

    def live_for_provider(self, org_id: str, provider: str) -> Connection | None:
        return self._one(connections.c.org_id == org_id, connections.c.provider == provider, _live)

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
                        id=str(uuid.uuid4()),
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
        return self._one(connections.c.org_id == org_id, connections.c.id == connection_id, _live)

    def list(self, org_id: str) -> list[Connection]:
        with self.engine.connect() as conn:
            rows = (
                conn.execute(
                    _select.where(connections.c.org_id == org_id, _live).order_by(
                        connections.c.created_at, connections.c.id
                    )
                )
                .mappings()
                .all()
            )
        return [_model(r) for r in rows]

    def delete(self, org_id: str, connection_id: str, now: datetime | None = None) -> Connection:
        """Soft-delete: erase the secret reference, deactivate the workload, drop the poller state. The
        caller removes the secret from its store first (`SecretStore.delete(found.secret_ref)`)."""
        now = now or _now()
        with self.engine.begin() as conn:
            n = conn.execute(
                update(connections)
                .where(connections.c.org_id == org_id, connections.c.id == connection_id, _live)
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
        job_id = str(uuid.uuid4())
        # one guarded UPDATE: concurrent requests cannot both pass the rate limit
        with self.engine.begin() as conn:
            n = conn.execute(
                update(connections)
                .where(
                    connections.c.id == connection_id,
                    connections.c.org_id == org_id,
                    connections.c.status == "active",
                    _live,
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

    # ----------------------------------------------------------------------------------------- poller side

    def get_any(self, connection_id: str) -> Connection | None:
        """A live connection by id, whatever its org (pollers)."""
        return self._one(connections.c.id == connection_id, _live)

    def due(self, now: datetime, limit: int = 100) -> list[str]:
        """Ids of live, not disabled, unleased connections whose poll is due or that have a sync request."""
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(connections.c.id)
                    .where(
                        _live,
                        connections.c.status != "disabled",
                        connections.c.secret_ref.is_not(None),
                        or_(
                            connections.c.next_poll_at.is_(None),
                            connections.c.next_poll_at <= now,
                            connections.c.sync_requested_at.is_not(None),
                        ),
                        or_(connections.c.lease_until.is_(None), connections.c.lease_until < now),
                    )
                    .order_by(
                        connections.c.sync_requested_at.is_(None),
                        connections.c.next_poll_at.asc().nulls_first(),
                    )
                    .limit(limit)
                ).scalars()
            )

    def claim(self, connection_id: str, owner: str, now: datetime, lease: timedelta) -> Connection | None:
        """Take the connection's lease (one guarded UPDATE); None when another poller holds it or it is gone."""
        with self.engine.begin() as conn:
            n = conn.execute(
                update(connections)
                .where(
                    connections.c.id == connection_id,
                    _live,
                    connections.c.status != "disabled",
                    or_(connections.c.lease_until.is_(None), connections.c.lease_until < now),
                )
                .values(lease_owner=owner[:64], lease_until=now + lease, last_attempt_at=now)
            ).rowcount
        return self.get_any(connection_id) if n else None

    def release(self, connection_id: str, owner: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(connections)
                .where(connections.c.id == connection_id, connections.c.lease_owner == owner[:64])
                .values(lease_owner=None, lease_until=None)
            )

    def postpone(self, connection_id: str, owner: str, *, next_poll_at: datetime) -> None:
        """Try again at `next_poll_at` without counting a failure (our side failed, e.g. Kafka), and release."""
        with self.engine.begin() as conn:
            conn.execute(
                update(connections)
                .where(connections.c.id == connection_id, connections.c.lease_owner == owner[:64])
                .values(next_poll_at=next_poll_at, lease_owner=None, lease_until=None)
            )

    def active_workload(self, org_id: str, connection_id: str):
        """The connection's active workload (re-created in the Default project if it has none)."""
        return Workloads(self.engine).ensure_active(org_id, WORKLOAD_KIND, connection_id)

    def bucket_states(self, connection_id: str, since: datetime | None = None) -> dict[str, BucketState]:
        conds = [connection_buckets.c.connection_id == connection_id]
        if since is not None:
            conds.append(connection_buckets.c.bucket_start >= since)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    connection_buckets.c.event_id,
                    connection_buckets.c.bucket_start,
                    connection_buckets.c.content_hash,
                    connection_buckets.c.revision,
                    connection_buckets.c.event,
                ).where(*conds)
            ).all()
        return {r.event_id: BucketState(*r) for r in rows}

    def record_success(
        self,
        connection_id: str,
        owner: str,
        *,
        now: datetime,
        claimed_at: datetime,
        cursor: datetime,
        next_poll_at: datetime,
        writes: Iterable[BucketWrite] = (),
        prune_before: datetime | None = None,
    ) -> None:
        """After the events are acknowledged by Kafka: store the bucket states, advance the cursor, reset
        failures (error → active), clear a sync request served by this poll, release the lease."""
        writes = list(writes)
        with self.engine.begin() as conn:
            if writes:
                ids = [w.event_id for w in writes]
                for i in range(0, len(ids), 500):
                    conn.execute(
                        delete(connection_buckets).where(
                            connection_buckets.c.connection_id == connection_id,
                            connection_buckets.c.event_id.in_(ids[i : i + 500]),
                        )
                    )
                conn.execute(
                    insert(connection_buckets),
                    [
                        {
                            "connection_id": connection_id,
                            "event_id": w.event_id,
                            "bucket_start": w.bucket_start,
                            "content_hash": w.content_hash,
                            "revision": w.revision,
                            "event": w.event,
                            "updated_at": now,
                        }
                        for w in writes
                    ],
                )
            if prune_before is not None:
                conn.execute(
                    delete(connection_buckets).where(
                        connection_buckets.c.connection_id == connection_id,
                        connection_buckets.c.bucket_start < prune_before,
                    )
                )
            conn.execute(
                update(connections)
                .where(connections.c.id == connection_id, _live)
                .values(
                    status="active",
                    last_polled_at=now,
                    poll_cursor=cursor,
                    next_poll_at=next_poll_at,
                    consecutive_failures=0,
                    last_error=None,
                    updated_at=now,
                )
            )
            self._finish(conn, connection_id, owner, claimed_at)

    def record_failure(
        self,
        connection_id: str,
        owner: str,
        *,
        now: datetime,
        claimed_at: datetime,
        error: str,
        next_poll_at: datetime,
        max_failures: int,
    ) -> Connection | None:
        """One more consecutive failure; status `error` once `max_failures` is reached."""
        with self.engine.begin() as conn:
            conn.execute(
                update(connections)
                .where(connections.c.id == connection_id, _live)
                .values(
                    consecutive_failures=connections.c.consecutive_failures + 1,
                    last_error=error[:LAST_ERROR_MAX],
                    next_poll_at=next_poll_at,
                    updated_at=now,
                )
            )
            conn.execute(
                update(connections)
                .where(
                    connections.c.id == connection_id,
                    _live,
                    connections.c.status == "active",
                    connections.c.consecutive_failures >= max_failures,
                )
                .values(status="error")
            )
            self._finish(conn, connection_id, owner, claimed_at)
        return self.get_any(connection_id)

    def disable(
        self, connection_id: str, owner: str, *, now: datetime, claimed_at: datetime, error: str
    ) -> None:
        """The provider rejected the key (401/403): never poll again."""
        with self.engine.begin() as conn:
            conn.execute(
                update(connections)
                .where(connections.c.id == connection_id, _live)
                .values(
                    status="disabled",
                    consecutive_failures=connections.c.consecutive_failures + 1,
                    last_error=error[:LAST_ERROR_MAX],
                    next_poll_at=None,
                    updated_at=now,
                )
            )
            self._finish(conn, connection_id, owner, claimed_at)

    def last_poll_at(self) -> datetime | None:
        """The newest successful poll of any live, not disabled connection (for /health); None if none."""
        with self.engine.connect() as conn:
            value = conn.execute(
                select(func.max(connections.c.last_polled_at)).where(
                    _live, connections.c.status != "disabled"
                )
            ).scalar_one_or_none()
        if value is None:
            return None
        if isinstance(value, str):  # SQLite's max() over the text column bypasses the type decorator
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    # ----------------------------------------------------------------------------------------- helpers

    @staticmethod
    def _finish(conn, connection_id: str, owner: str, claimed_at: datetime) -> None:
        conn.execute(
            update(connections)
            .where(
                connections.c.id == connection_id,
                connections.c.sync_requested_at.is_not(None),
                connections.c.sync_requested_at <= claimed_at,
            )
            .values(sync_requested_at=None)
        )
        conn.execute(
            update(connections)
            .where(connections.c.id == connection_id, connections.c.lease_owner == owner[:64])
            .values(lease_owner=None, lease_until=None)
        )

    def _one(self, *conds) -> Connection | None:
        with self.engine.connect() as conn:
            row = conn.execute(_select.where(*conds)).mappings().first()
        return _model(row) if row else None
