"""Billing periods: one per org and calendar month, and the close's state machine.

Table `billing_periods` (`controlplane.schema`, migration `0030_billing`): `month` = "YYYY-MM", created on
demand. Status `open` → `closing` → `closed`, or `failed` (a failed close can be retried: failed → closing).
`cutoff` is the `ingested_at` instant the close reads the warehouse as of; it is recorded once, the first
time the close starts, and never changes, so a re-run reads exactly the same ledger rows. `figures` is the
frozen result (JSON): totals, the late-event adjustment, the upper bound the retirement covers.

Concurrency (SQLite and PostgreSQL alike):

- Every writing transaction starts with an UPDATE of the period's row (`lock_period`). On PostgreSQL that
  takes the row lock, so two closes of the *same* period queue up and the second sees the first's result;
  on SQLite the first write takes the database write lock (waiting with the busy timeout) before anything
  is read, so no transaction ever upgrades a stale read snapshot.
- Credits are taken with a compare-and-swap: `UPDATE credit_blocks SET allocated_tonnes = :seen + n
  WHERE id = :id AND allocated_tonnes = :seen`. A concurrent close of *another* period that took the same
  block first makes the UPDATE match no row (PostgreSQL re-checks the WHERE after the other transaction
  commits); we re-read the block and try again. The unique (block_id, first_index) of `credit_allocations`
  is the last line of defence: a serial can never be allocated twice.
- A receipt number is taken by incrementing the month's counter in the same transaction that inserts the
  receipt: a rolled-back close never leaves a gap, and the counter's row lock serialises numbering.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection, Engine, and_, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from controlplane._util import aware_utc
from controlplane._util import new_id as _new_id
from controlplane._util import now as _now
from controlplane.errors import Conflict, Invalid, NotFound
from controlplane.schema import billing_periods

PAID_PLANS = ("starter", "growth", "scale", "enterprise")
MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$")

PeriodStatus = Literal["open", "closing", "closed", "failed"]


def _period_row(conn: Any, period_id: str) -> Any:
    """The period's row (raises NoResultFound for an unknown id)."""
    return conn.execute(select(billing_periods).where(billing_periods.c.id == period_id)).mappings().one()


class Period(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    org_id: str
    month: str
    period_start: date
    period_end: date
    status: PeriodStatus
    cutoff: datetime | None
    adjustment_from: datetime | None
    closing_since: datetime | None
    figures: dict[str, Any] | None
    co2_kg: float | None
    co2_kg_high: float | None
    credits_retired_kg: float | None
    error: str | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None

    @property
    def end_exclusive(self) -> date:
        return self.period_end + timedelta(days=1)


def _period(row: Mapping[str, Any]) -> Period:
    d = dict(row)
    d["figures"] = json.loads(d["figures"]) if d.get("figures") else None
    return Period(**d)


def parse_month(month: str | date) -> tuple[str, date, date]:
    """ "2026-10" (or a date in it) → ("2026-10", first day, last day)."""
    if isinstance(month, date):
        y, m = month.year, month.month
    else:
        mm = MONTH_RE.match(month.strip()[:7]) if month else None
        if not mm or not 1 <= int(mm.group(2)) <= 12:
            raise Invalid(f"invalid month {month!r}: use YYYY-MM")
        y, m = int(mm.group(1)), int(mm.group(2))
    start = date(y, m, 1)
    nxt = date(y + (m == 12), m % 12 + 1, 1)
    return f"{y:04d}-{m:02d}", start, nxt - timedelta(days=1)


def is_paid(plan_tier: str) -> bool:
    return plan_tier in PAID_PLANS


def lock_period(conn: Connection, period_id: str) -> None:
    """First statement of every writing transaction on a period: see the module docstring."""
    n = conn.execute(
        update(billing_periods).where(billing_periods.c.id == period_id).values(updated_at=_now())
    ).rowcount
    if not n:
        raise NotFound("billing period not found")


class BillingPeriods:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def ensure(self, org_id: str, month: str | date) -> Period:
        """The org's period for `month`, created (open) when missing."""
        key, start, end = parse_month(month)
        existing = self.get_for(org_id, key)
        if existing:
            return existing
        now = _now()
        row = {
            "id": _new_id(),
            "org_id": org_id,
            "month": key,
            "period_start": start,
            "period_end": end,
            "status": "open",
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(billing_periods).values(**row))
        except IntegrityError:
            found = self.get_for(org_id, key)
            if found is None:
                raise NotFound("organization not found") from None
            return found
        got = self.get(row["id"])
        assert got is not None
        return got

    def get(self, period_id: str, org_id: str | None = None) -> Period | None:
        cond = billing_periods.c.id == period_id
        if org_id is not None:
            cond = and_(cond, billing_periods.c.org_id == org_id)
        with self.engine.connect() as conn:
            row = conn.execute(select(billing_periods).where(cond)).mappings().first()
        return _period(row) if row else None

    def get_for(self, org_id: str, month: str) -> Period | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(billing_periods).where(
                        billing_periods.c.org_id == org_id, billing_periods.c.month == month
                    )
                )
                .mappings()
                .first()
            )
        return _period(row) if row else None

    def list(
        self, org_id: str | None = None, month: str | None = None, statuses: Iterable[str] | None = None
    ) -> list[Period]:
        q = select(billing_periods)
        if org_id is not None:
            q = q.where(billing_periods.c.org_id == org_id)
        if month is not None:
            q = q.where(billing_periods.c.month == month)
        if statuses is not None:
            q = q.where(billing_periods.c.status.in_(list(statuses)))
        with self.engine.connect() as conn:
            rows = (
                conn.execute(q.order_by(billing_periods.c.month, billing_periods.c.org_id)).mappings().all()
            )
        return [_period(r) for r in rows]

    def begin_close(self, period_id: str, cutoff: datetime) -> Period:
        """Start (or resume) a close: status → closing; `cutoff` and the adjustment window are recorded the
        first time only. A closed period is returned unchanged (a re-run regenerates identical artefacts)."""
        cutoff = _ms(cutoff)
        with self.engine.begin() as conn:
            lock_period(conn, period_id)
            row = _period_row(conn, period_id)
            if row["status"] == "closed":
                return _period(row)
            later_closed = conn.execute(
                select(func.count()).where(
                    billing_periods.c.org_id == row["org_id"],
                    billing_periods.c.month > row["month"],
                    billing_periods.c.status == "closed",
                )
            ).scalar_one()
            if later_closed:
                raise Conflict(
                    f"period {row['month']} precedes a closed period of this org: its late events were "
                    "carried into that close as an adjustment, so it cannot be closed on its own"
                )
            values: dict[str, Any] = {"status": "closing", "attempts": row["attempts"] + 1, "error": None}
            if row["cutoff"] is None:
                prev = conn.execute(
                    select(func.max(billing_periods.c.cutoff)).where(
                        billing_periods.c.org_id == row["org_id"],
                        billing_periods.c.month < row["month"],
                        billing_periods.c.status == "closed",
                    )
                ).scalar_one_or_none()
                values["cutoff"] = cutoff
                values["adjustment_from"] = aware_utc(prev)
            if row["status"] != "closing" or row["closing_since"] is None:
                values["closing_since"] = _now()
            conn.execute(update(billing_periods).where(billing_periods.c.id == period_id).values(**values))
            row = _period_row(conn, period_id)
        return _period(row)

    def record_figures(self, period_id: str, figures: dict[str, Any]) -> Period:
        """Freeze the close's figures. Recording different figures on a period that has some raises Conflict
        (the ledger rows up to a cutoff never change, so this means a bug or a tampered warehouse)."""
        text = json.dumps(figures, sort_keys=True, separators=(",", ":"))
        with self.engine.begin() as conn:
            lock_period(conn, period_id)
            row = _period_row(conn, period_id)
            if row["figures"] is not None:
                if json.loads(row["figures"]) != json.loads(text):
                    raise Conflict(
                        f"period {row['month']} already has different figures frozen: a closed period never "
                        "changes (late events belong to the next period)"
                    )
                return _period(row)
            conn.execute(
                update(billing_periods)
                .where(billing_periods.c.id == period_id)
                .values(
                    figures=text,
                    co2_kg=figures.get("co2_kg"),
                    co2_kg_high=figures.get("co2_kg_high"),
                )
            )
            row = _period_row(conn, period_id)
        return _period(row)

    def mark_closed(self, period_id: str, credits_retired_kg: float | None) -> Period:
        with self.engine.begin() as conn:
            lock_period(conn, period_id)
            row = _period_row(conn, period_id)
            if row["status"] != "closed":
                conn.execute(
                    update(billing_periods)
                    .where(billing_periods.c.id == period_id)
                    .values(
                        status="closed", closed_at=_now(), credits_retired_kg=credits_retired_kg, error=None
                    )
                )
        got = self.get(period_id)
        assert got is not None
        return got

    def mark_failed(self, period_id: str, error: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(billing_periods)
                .where(billing_periods.c.id == period_id, billing_periods.c.status != "closed")
                .values(status="failed", error=error[:500], updated_at=_now())
            )

    def due_closing(self, older_than: timedelta, now: datetime | None = None) -> list[Period]:
        """Periods in `closing` since at least `older_than` (the sensor's 48 h)."""
        limit = (now or _now()) - older_than
        with self.engine.connect() as conn:
            rows = (
                conn.execute(
                    select(billing_periods)
                    .where(billing_periods.c.status == "closing", billing_periods.c.closing_since <= limit)
                    .order_by(billing_periods.c.closing_since)
                )
                .mappings()
                .all()
            )
        return [_period(r) for r in rows]


def _ms(dt: datetime) -> datetime:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise Invalid("cutoff must be timezone-aware")
    dt = dt.astimezone(UTC)
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)
