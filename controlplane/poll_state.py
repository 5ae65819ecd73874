"""Provider connections, the pollers' side: which connections are due, leases, per-bucket state, and the
outcome of each poll (success, failure, disabled key). Works across orgs.

Scheduling columns of `connections` (`controlplane.schema`): `next_poll_at` (NULL = due now), `poll_cursor`
(the start of the newest bucket fully fetched; the next poll starts at min(cursor, now - lookback)),
`consecutive_failures`, `last_error` (never contains the key), `lease_owner`/`lease_until` (a poller claims
a connection with one guarded UPDATE, so several poller processes never poll the same connection at once).

`connection_buckets`: what the poller last published for each provider bucket (event_id): a hash of the
figures, the revision and the event itself. It makes re-polling idempotent — an unchanged bucket keeps its
(event_id, revision) — and a correction gets a higher revision. It also pins a bucket's attribution: later
revisions keep the workload/project of the first one, so re-mapping a connection never moves history.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, func, insert, or_, select, update

from controlplane._util import aware_utc
from controlplane.connections import (
    IS_LIVE,
    SELECT_CONNECTION,
    WORKLOAD_KIND,
    Connection,
    connection_from_row,
)
from controlplane.models import Workload
from controlplane.schema import LAST_ERROR_MAX, connection_buckets, connections
from controlplane.workloads import Workloads


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


class PollState:
    """The pollers' view of the connections (all orgs)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get_any(self, connection_id: str) -> Connection | None:
        """A live connection by id, whatever its org (pollers)."""
        return self._one(connections.c.id == connection_id, IS_LIVE)

    def due(self, now: datetime, limit: int = 100) -> list[str]:
        """Ids of live, not disabled, unleased connections whose poll is due or that have a sync request."""
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(connections.c.id)
                    .where(
                        IS_LIVE,
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
                    IS_LIVE,
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

    def active_workload(self, org_id: str, connection_id: str) -> Workload:
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
        notes: Sequence[str] = (),
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
                .where(connections.c.id == connection_id, IS_LIVE)
                .values(
                    status="active",
                    last_polled_at=now,
                    poll_cursor=cursor,
                    next_poll_at=next_poll_at,
                    consecutive_failures=0,
                    last_error=None,
                    poll_notes=json.dumps([n[:500] for n in notes[:20]]) if notes else None,
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
                .where(connections.c.id == connection_id, IS_LIVE)
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
                    IS_LIVE,
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
                .where(connections.c.id == connection_id, IS_LIVE)
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
                    IS_LIVE, connections.c.status != "disabled"
                )
            ).scalar_one_or_none()
        if isinstance(value, str):  # SQLite's max() over the text column bypasses the type decorator
            value = datetime.fromisoformat(value)
        return aware_utc(value)

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
            row = conn.execute(SELECT_CONNECTION.where(*conds)).mappings().first()
        return connection_from_row(row) if row else None
