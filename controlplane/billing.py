"""Billing periods, the carbon-credit inventory and its allocations, monthly receipts, processed Stripe events.

Tables (migration `0030_billing`, on the shared `controlplane.schema.metadata`):

- `billing_periods`: one per org and calendar month (`month` = "YYYY-MM"), created on demand. Status
  `open` → `closing` → `closed`, or `failed` (a failed close can be retried: failed → closing). `cutoff` is
  the `ingested_at` instant the close reads the warehouse as of; it is recorded once, the first time the close
  starts, and never changes, so a re-run reads exactly the same ledger rows. `figures` is the frozen result
  (JSON): totals, the late-event adjustment, the upper bound the retirement covers.
- `credit_blocks`: the operator-loaded inventory (`joulestream credits load FILE.csv`): a registry's block
  of consecutive serial numbers, one serial = one tonne CO2e. `allocated_tonnes` counts the block's serials
  handed out, always from the start of the block.
- `credit_allocations`: which serials (block, first index, count) cover which period.
- `receipt_counters` / `receipts`: receipts numbered `CL-YYYYMM-NNNNN`, unique and gap-free per month.
- `stripe_events`: the Stripe event ids already processed (webhook idempotency).

Concurrency (SQLite and PostgreSQL alike):

- Every writing transaction starts with an UPDATE of the period's row (`_lock_period`). On PostgreSQL that
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

import csv
import io
import json
import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    func,
    insert,
    select,
    update,
)
from sqlalchemy import Engine as _Engine
from sqlalchemy.exc import IntegrityError

from controlplane.errors import Conflict, Invalid, NotFound
from controlplane.schema import PLAN_TIERS, UTCDateTime, metadata, organizations

PERIOD_STATUSES = ("open", "closing", "closed", "failed")
PAID_PLANS = ("starter", "growth", "scale", "enterprise")
SERIAL_RE = re.compile(r"^CL-(\d{4})(\d{2})-(\d{5})$")
MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$")
KG_PER_TONNE = 1000.0

PeriodStatus = Literal["open", "closing", "closed", "failed"]


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


billing_periods = Table(
    "billing_periods",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("org_id", String(36), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("month", String(7), nullable=False),  # "YYYY-MM"
    Column("period_start", Date(), nullable=False),
    Column("period_end", Date(), nullable=False),  # last day, inclusive
    Column("status", String(10), nullable=False, server_default="open"),
    Column("cutoff", UTCDateTime(), nullable=True),
    Column("adjustment_from", UTCDateTime(), nullable=True),  # previous close's cutoff (late events)
    Column("closing_since", UTCDateTime(), nullable=True),
    Column("figures", Text(), nullable=True),  # JSON, frozen by the first successful totals step
    Column("co2_kg", Float(), nullable=True),
    Column("co2_kg_high", Float(), nullable=True),
    Column("credits_retired_kg", Float(), nullable=True),
    Column("error", String(500), nullable=True),
    Column("attempts", Integer(), nullable=False, server_default="0"),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("closed_at", UTCDateTime(), nullable=True),
    CheckConstraint(_in("status", PERIOD_STATUSES), name="status"),
    UniqueConstraint("org_id", "month"),
    Index("ix_billing_periods_month_status", "month", "status"),
)

credit_blocks = Table(
    "credit_blocks",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("registry", String(50), nullable=False),
    Column("serial_block", String(200), nullable=False, unique=True),
    Column("serial_prefix", String(150), nullable=False),
    Column("first_number", BigInteger(), nullable=False),
    Column("width", Integer(), nullable=False),
    Column("project", String(200), nullable=False),
    Column("vintage", Integer(), nullable=False),
    Column("tonnes", Integer(), nullable=False),
    Column("allocated_tonnes", Integer(), nullable=False, server_default="0"),
    Column("loaded_at", UTCDateTime(), nullable=False),
    CheckConstraint("tonnes > 0", name="tonnes"),
    CheckConstraint("allocated_tonnes >= 0 AND allocated_tonnes <= tonnes", name="allocated"),
)

credit_allocations = Table(
    "credit_allocations",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "period_id",
        String(36),
        ForeignKey("billing_periods.id", ondelete="RESTRICT"),
        nullable=False,
        index=True,
    ),
    Column("block_id", String(36), ForeignKey("credit_blocks.id", ondelete="RESTRICT"), nullable=False),
    Column("first_index", Integer(), nullable=False),
    Column("count", Integer(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    UniqueConstraint("block_id", "first_index"),
    CheckConstraint("count > 0", name="count"),
)

receipt_counters = Table(
    "receipt_counters",
    metadata,
    Column("month", String(7), primary_key=True),
    Column("last_seq", Integer(), nullable=False),
)

receipts = Table(
    "receipts",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("org_id", String(36), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column(
        "period_id",
        String(36),
        ForeignKey("billing_periods.id", ondelete="RESTRICT"),
        nullable=False,
        unique=True,
    ),
    Column("month", String(7), nullable=False),
    Column("seq", Integer(), nullable=False),
    Column("serial_number", String(20), nullable=False, unique=True),
    Column("payload", Text(), nullable=False),  # canonical JSON of the signed payload
    Column("payload_hash", String(64), nullable=False),
    Column("signature", Text(), nullable=False),  # base64 Ed25519 over the canonical JSON
    Column("key_version", String(64), nullable=False),
    Column("public_key", String(64), nullable=False),  # base64, as published
    Column("co2_retired_kg", Float(), nullable=False),
    Column("pdf_key", Text(), nullable=True),
    Column("pdf_sha256", String(64), nullable=True),
    Column("audit_pack_key", Text(), nullable=True),
    Column("audit_pack_sha256", String(64), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    UniqueConstraint("month", "seq"),
    Index("ix_receipts_org_id_month", "org_id", "month"),
)

stripe_events = Table(
    "stripe_events",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("type", String(100), nullable=False),
    Column("org_id", String(36), nullable=True),
    Column("outcome", String(200), nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
)


# --------------------------------------------------------------------------------------------- models


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True)


class Period(_Row):
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


class CreditBlock(_Row):
    id: str
    registry: str
    serial_block: str
    serial_prefix: str
    first_number: int
    width: int
    project: str
    vintage: int
    tonnes: int
    allocated_tonnes: int
    loaded_at: datetime

    def serial(self, index: int) -> str:
        return f"{self.serial_prefix}{self.first_number + index:0{self.width}d}"

    @property
    def available(self) -> int:
        return self.tonnes - self.allocated_tonnes


class Allocation(_Row):
    block_id: str
    registry: str
    project: str
    vintage: int
    first_index: int
    count: int
    serials: tuple[str, ...]


class Receipt(_Row):
    id: str
    org_id: str
    period_id: str
    month: str
    seq: int
    serial_number: str
    payload: dict[str, Any]
    payload_canonical: str
    payload_hash: str
    signature: str
    key_version: str
    public_key: str
    co2_retired_kg: float
    pdf_key: str | None
    pdf_sha256: str | None
    audit_pack_key: str | None
    audit_pack_sha256: str | None
    created_at: datetime

    def signed_record(self) -> dict[str, Any]:
        """The receipt as a `core.receipts.SignedRecord` mapping."""
        return {
            "payload": self.payload,
            "sha256": self.payload_hash,
            "signature": self.signature,
            "key_version": self.key_version,
            "algorithm": "ed25519",
        }


def _period(row: Mapping[str, Any]) -> Period:
    d = dict(row)
    d["figures"] = json.loads(d["figures"]) if d.get("figures") else None
    return Period(**d)


def _receipt(row: Mapping[str, Any]) -> Receipt:
    d = dict(row)
    d["payload_canonical"] = d["payload"]
    d["payload"] = json.loads(d["payload"])
    return Receipt(**d)


# --------------------------------------------------------------------------------------------- helpers


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return str(uuid.uuid4())


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


def previous_month(month: str) -> str:
    _, start, _ = parse_month(month)
    return parse_month(start - timedelta(days=1))[0]


def public_base_url() -> str:
    """Where the public API is reachable (`JOULESTREAM_PUBLIC_URL`), for verification links."""
    import os

    return (os.environ.get("JOULESTREAM_PUBLIC_URL") or "http://127.0.0.1:8787").rstrip("/")


def verify_url(serial: str) -> str:
    return f"{public_base_url()}/public/receipts/verify/{serial}"


def format_serial(month: str, seq: int) -> str:
    return f"CL-{month[:4]}{month[5:7]}-{seq:05d}"


def tonnes_needed(co2_kg: float) -> int:
    """Whole tonnes (one credit serial each) that cover `co2_kg`."""
    if co2_kg <= 0:
        return 0
    return math.ceil(co2_kg / KG_PER_TONNE - 1e-12)


def is_paid(plan_tier: str) -> bool:
    return plan_tier in PAID_PLANS


def _lock_period(conn: Connection, period_id: str) -> None:
    """First statement of every writing transaction on a period: see the module docstring."""
    n = conn.execute(
        update(billing_periods).where(billing_periods.c.id == period_id).values(updated_at=_now())
    ).rowcount
    if not n:
        raise NotFound("billing period not found")


# --------------------------------------------------------------------------------------------- periods


class BillingPeriods:
    def __init__(self, engine: _Engine) -> None:
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

    def previous_cutoff(self, org_id: str, month: str) -> datetime | None:
        """The cutoff of the org's latest closed period before `month` (the late-event window's start)."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.max(billing_periods.c.cutoff)).where(
                    billing_periods.c.org_id == org_id,
                    billing_periods.c.month < month,
                    billing_periods.c.status == "closed",
                )
            ).scalar_one_or_none()

    def begin_close(self, period_id: str, cutoff: datetime) -> Period:
        """Start (or resume) a close: status → closing; `cutoff` and the adjustment window are recorded the
        first time only. A closed period is returned unchanged (a re-run regenerates identical artefacts)."""
        cutoff = _ms(cutoff)
        with self.engine.begin() as conn:
            _lock_period(conn, period_id)
            row = (
                conn.execute(select(billing_periods).where(billing_periods.c.id == period_id))
                .mappings()
                .one()
            )
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
                values["adjustment_from"] = _aware(prev)
            if row["status"] != "closing" or row["closing_since"] is None:
                values["closing_since"] = _now()
            conn.execute(update(billing_periods).where(billing_periods.c.id == period_id).values(**values))
            row = (
                conn.execute(select(billing_periods).where(billing_periods.c.id == period_id))
                .mappings()
                .one()
            )
        return _period(row)

    def record_figures(self, period_id: str, figures: dict[str, Any]) -> Period:
        """Freeze the close's figures. Recording different figures on a period that has some raises Conflict
        (the ledger rows up to a cutoff never change, so this means a bug or a tampered warehouse)."""
        text = json.dumps(figures, sort_keys=True, separators=(",", ":"))
        with self.engine.begin() as conn:
            _lock_period(conn, period_id)
            row = (
                conn.execute(select(billing_periods).where(billing_periods.c.id == period_id))
                .mappings()
                .one()
            )
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
            row = (
                conn.execute(select(billing_periods).where(billing_periods.c.id == period_id))
                .mappings()
                .one()
            )
        return _period(row)

    def mark_closed(self, period_id: str, credits_retired_kg: float | None) -> Period:
        with self.engine.begin() as conn:
            _lock_period(conn, period_id)
            row = (
                conn.execute(select(billing_periods).where(billing_periods.c.id == period_id))
                .mappings()
                .one()
            )
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


def _aware(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


# --------------------------------------------------------------------------------------------- credits

_BLOCK_RE = re.compile(r"^(?P<prefix>.*?)(?P<first>\d+)(?:-(?P<last>\d+))?$")
CSV_COLUMNS = ("registry", "serial_block", "project", "vintage", "tonnes")


@dataclass(frozen=True)
class BlockSpec:
    registry: str
    serial_block: str
    project: str
    vintage: int
    tonnes: int
    prefix: str
    first_number: int
    width: int


def parse_block(
    registry: str, serial_block: str, project: str, vintage: int | str, tonnes: int | str
) -> BlockSpec:
    """One inventory line. `serial_block` is `<prefix><first>-<last>` (e.g. `VCS-1234-2024-000001-000500`;
    `last - first + 1` must equal `tonnes`) or `<prefix><first>` (the block then spans `tonnes` serials)."""
    serial_block = serial_block.strip()
    registry, project = registry.strip(), project.strip()
    if not registry or not project:
        raise Invalid("registry and project must not be blank")
    try:
        t = int(str(tonnes).strip())
        v = int(str(vintage).strip())
    except ValueError:
        raise Invalid(f"{serial_block}: tonnes and vintage must be whole numbers") from None
    if t <= 0:
        raise Invalid(f"{serial_block}: tonnes must be positive (one serial per tonne)")
    if not 1990 <= v <= 2100:
        raise Invalid(f"{serial_block}: implausible vintage {v}")
    m = _BLOCK_RE.match(serial_block)
    if not m:
        raise Invalid(f"serial block {serial_block!r}: expected <prefix><first>-<last> or <prefix><first>")
    prefix, first_s, last_s = m.group("prefix"), m.group("first"), m.group("last")
    if last_s is not None and (len(first_s) != len(last_s) or int(last_s) < int(first_s)):
        # not a range (e.g. "VCS-1205-2024-000001": the last number starts the block)
        prefix, first_s, last_s = f"{prefix}{first_s}-", last_s, None
    if last_s is not None:
        first, last = int(first_s), int(last_s)
        if last - first + 1 != t:
            raise Invalid(f"serial block {serial_block!r} holds {last - first + 1} serials, not {t} tonnes")
        width = max(len(first_s), len(last_s))
    else:
        first, width = int(first_s), len(first_s)
    return BlockSpec(registry, serial_block, project, v, t, prefix, first, width)


class Credits:
    def __init__(self, engine: _Engine) -> None:
        self.engine = engine

    def load_csv(self, text: str) -> tuple[int, int]:
        """Load inventory lines (header: registry,serial_block,project,vintage,tonnes). Returns (blocks
        added, blocks already present). All or nothing: one bad line rejects the file. Serial ranges must
        not overlap each other or the existing inventory."""
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise Invalid(
                f"credit CSV lacks column(s) {', '.join(missing)}; expected {', '.join(CSV_COLUMNS)}"
            )
        specs = []
        for i, line in enumerate(reader, start=2):
            try:
                specs.append(parse_block(**{c: line[c] or "" for c in CSV_COLUMNS}))
            except Invalid as exc:
                raise Invalid(f"line {i}: {exc}") from None
        now = _now()
        added = existing = 0
        with self.engine.begin() as conn:
            present = {r.serial_block: r for r in conn.execute(select(credit_blocks)).mappings().all()}
            ranges = [
                (
                    r["serial_prefix"],
                    r["first_number"],
                    r["first_number"] + r["tonnes"] - 1,
                    r["serial_block"],
                )
                for r in present.values()
            ]
            for s in specs:
                if s.serial_block in present:
                    old = present[s.serial_block]
                    if (old["registry"], old["project"], old["vintage"], old["tonnes"]) != (
                        s.registry,
                        s.project,
                        s.vintage,
                        s.tonnes,
                    ):
                        raise Conflict(f"serial block {s.serial_block} is already loaded with other details")
                    existing += 1
                    continue
                lo, hi = s.first_number, s.first_number + s.tonnes - 1
                for prefix, a, b, name in ranges:
                    if prefix == s.prefix and lo <= b and a <= hi:
                        raise Conflict(f"serial block {s.serial_block} overlaps {name}")
                ranges.append((s.prefix, lo, hi, s.serial_block))
                conn.execute(
                    insert(credit_blocks).values(
                        id=_new_id(),
                        registry=s.registry,
                        serial_block=s.serial_block,
                        serial_prefix=s.prefix,
                        first_number=s.first_number,
                        width=s.width,
                        project=s.project,
                        vintage=s.vintage,
                        tonnes=s.tonnes,
                        allocated_tonnes=0,
                        loaded_at=now,
                    )
                )
                present[s.serial_block] = {}  # type: ignore[assignment]
                added += 1
        return added, existing

    def blocks(self) -> list[CreditBlock]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(credit_blocks).order_by(*_BLOCK_ORDER)).mappings().all()
        return [CreditBlock(**dict(r)) for r in rows]

    def available_tonnes(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(
                        func.coalesce(func.sum(credit_blocks.c.tonnes - credit_blocks.c.allocated_tonnes), 0)
                    )
                ).scalar_one()
            )

    def allocations(self, period_id: str) -> list[Allocation]:
        with self.engine.connect() as conn:
            return _allocations(conn, period_id)

    def allocate(self, period_id: str, tonnes: int, max_attempts: int = 50) -> list[Allocation]:
        """Allocate `tonnes` serials to the period, oldest vintage first; idempotent (a period that has
        allocations gets them back). Raises Invalid when the inventory cannot cover it (nothing allocated)."""
        if tonnes < 0:
            raise Invalid("tonnes must not be negative")
        with self.engine.begin() as conn:
            _lock_period(conn, period_id)
            existing = _allocations(conn, period_id)
            if existing:
                have = sum(a.count for a in existing)
                if have != tonnes:
                    raise Conflict(f"period already holds {have} t of credits, not {tonnes} t")
                return existing
            if tonnes == 0:
                return []
            remaining = tonnes
            now = _now()
            for _ in range(max_attempts):
                if remaining == 0:
                    break
                rows = (
                    conn.execute(
                        select(credit_blocks)
                        .where(credit_blocks.c.allocated_tonnes < credit_blocks.c.tonnes)
                        .order_by(*_BLOCK_ORDER)
                    )
                    .mappings()
                    .all()
                )
                if sum(r["tonnes"] - r["allocated_tonnes"] for r in rows) < remaining:
                    raise Invalid(
                        f"credit inventory exhausted: this close needs {tonnes} t, "
                        f"{sum(r['tonnes'] - r['allocated_tonnes'] for r in rows) + tonnes - remaining} t available"
                    )
                for r in rows:
                    take = min(remaining, r["tonnes"] - r["allocated_tonnes"])
                    seen = r["allocated_tonnes"]
                    won = conn.execute(
                        update(credit_blocks)
                        .where(credit_blocks.c.id == r["id"], credit_blocks.c.allocated_tonnes == seen)
                        .values(allocated_tonnes=seen + take)
                    ).rowcount
                    if not won:  # another close took serials of this block first: re-read and retry
                        break
                    conn.execute(
                        insert(credit_allocations).values(
                            id=_new_id(),
                            period_id=period_id,
                            block_id=r["id"],
                            first_index=seen,
                            count=take,
                            created_at=now,
                        )
                    )
                    remaining -= take
                    if remaining == 0:
                        break
            if remaining:
                raise Conflict("could not allocate credits: too much contention, retry the close")
            return _allocations(conn, period_id)


_BLOCK_ORDER = (credit_blocks.c.vintage, credit_blocks.c.loaded_at, credit_blocks.c.serial_block)


def _allocations(conn: Connection, period_id: str) -> list[Allocation]:
    rows = (
        conn.execute(
            select(credit_allocations, credit_blocks)
            .join(credit_blocks, credit_blocks.c.id == credit_allocations.c.block_id)
            .where(credit_allocations.c.period_id == period_id)
            .order_by(credit_blocks.c.vintage, credit_blocks.c.serial_block, credit_allocations.c.first_index)
        )
        .mappings()
        .all()
    )
    out = []
    for r in rows:
        block = CreditBlock(**{c.name: r[c] for c in credit_blocks.c})
        first, count = r[credit_allocations.c.first_index], r[credit_allocations.c.count]
        out.append(
            Allocation(
                block_id=block.id,
                registry=block.registry,
                project=block.project,
                vintage=block.vintage,
                first_index=first,
                count=count,
                serials=tuple(block.serial(first + i) for i in range(count)),
            )
        )
    return out


# --------------------------------------------------------------------------------------------- receipts


class Receipts:
    def __init__(self, engine: _Engine) -> None:
        self.engine = engine

    def issue(self, period_id: str, build: Callable[[str], tuple[dict[str, Any], dict[str, Any]]]) -> Receipt:
        """The period's receipt, created once. `build(serial_number)` returns (payload, signed record
        mapping: sha256, signature, key_version, public_key); the serial is taken from the month's counter
        in the same transaction, so numbers are unique and gap-free."""
        self._ensure_counter(period_id)
        with self.engine.begin() as conn:
            _lock_period(conn, period_id)
            row = conn.execute(select(receipts).where(receipts.c.period_id == period_id)).mappings().first()
            if row:
                return _receipt(row)
            period = (
                conn.execute(select(billing_periods).where(billing_periods.c.id == period_id))
                .mappings()
                .one()
            )
            month = period["month"]
            n = conn.execute(
                update(receipt_counters)
                .where(receipt_counters.c.month == month)
                .values(last_seq=receipt_counters.c.last_seq + 1)
            ).rowcount
            if not n:
                raise Conflict(f"receipt counter of {month} is missing")
            seq = conn.execute(
                select(receipt_counters.c.last_seq).where(receipt_counters.c.month == month)
            ).scalar_one()
            serial = format_serial(month, seq)
            payload, signed = build(serial)
            row = {
                "id": _new_id(),
                "org_id": period["org_id"],
                "period_id": period_id,
                "month": month,
                "seq": seq,
                "serial_number": serial,
                "payload": signed["canonical"],
                "payload_hash": signed["sha256"],
                "signature": signed["signature"],
                "key_version": signed["key_version"],
                "public_key": signed["public_key"],
                "co2_retired_kg": payload["co2_retired_kg"],
                "created_at": _now(),
            }
            conn.execute(insert(receipts).values(**row))
            got = conn.execute(select(receipts).where(receipts.c.id == row["id"])).mappings().one()
        return _receipt(got)

    def _ensure_counter(self, period_id: str) -> None:
        """The month's counter row exists (created at 0 in its own transaction; a concurrent creator wins)."""
        with self.engine.connect() as conn:
            month = conn.execute(
                select(billing_periods.c.month).where(billing_periods.c.id == period_id)
            ).scalar_one_or_none()
            if month is None:
                raise NotFound("billing period not found")
            if conn.execute(
                select(receipt_counters.c.month).where(receipt_counters.c.month == month)
            ).first():
                return
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(receipt_counters).values(month=month, last_seq=0))
        except IntegrityError:
            pass  # created by a concurrent close

    def set_artifact(
        self, receipt_id: str, kind: Literal["pdf", "audit_pack"], key: str, sha256: str
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(receipts)
                .where(receipts.c.id == receipt_id)
                .values(**{f"{kind}_key": key, f"{kind}_sha256": sha256})
            )

    def get(self, receipt_id: str, org_id: str | None = None) -> Receipt | None:
        cond = receipts.c.id == receipt_id
        if org_id is not None:
            cond = and_(cond, receipts.c.org_id == org_id)
        return self._one(cond)

    def for_period(self, period_id: str) -> Receipt | None:
        return self._one(receipts.c.period_id == period_id)

    def by_serial(self, serial: str) -> Receipt | None:
        return self._one(receipts.c.serial_number == serial)

    def list(
        self,
        org_id: str,
        start: date | None = None,
        end: date | None = None,
        offset: int = 0,
        limit: int = 20,
    ) -> tuple[list[Receipt], int]:
        """The org's receipts whose period overlaps [start, end], newest period first, and the total count."""
        q = select(receipts).join(billing_periods, billing_periods.c.id == receipts.c.period_id)
        q = q.where(receipts.c.org_id == org_id)
        if start is not None:
            q = q.where(billing_periods.c.period_end >= start)
        if end is not None:
            q = q.where(billing_periods.c.period_start <= end)
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(q.subquery())).scalar_one()
            rows = (
                conn.execute(
                    q.order_by(receipts.c.month.desc(), receipts.c.seq.desc()).offset(offset).limit(limit)
                )
                .mappings()
                .all()
            )
        return [_receipt(r) for r in rows], int(total)

    def _one(self, cond) -> Receipt | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(receipts).where(cond)).mappings().first()
        return _receipt(row) if row else None


# --------------------------------------------------------------------------------------------- Stripe events


@dataclass(frozen=True)
class StripePlans:
    """Stripe price id ↔ plan tier (`JOULESTREAM_STRIPE_PRICES="starter=price_…,growth=price_…,…"`)."""

    prices: Mapping[str, str]  # plan → price id

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StripePlans:
        raw = env.get("JOULESTREAM_STRIPE_PRICES") or ""
        prices = {p: f"price_joulestream_{p}" for p in ("starter", "growth", "scale")}
        for item in filter(None, (s.strip() for s in raw.split(","))):
            plan, _, price = item.partition("=")
            if plan.strip() in prices and price.strip():
                prices[plan.strip()] = price.strip()
        return cls(prices)

    def plan_for_price(self, price_id: str | None) -> str | None:
        for plan, price in self.prices.items():
            if price == price_id:
                return plan
        return None


def stripe_client(
    api_key: str | None = None, api_base: str | None = None, env: Mapping[str, str] | None = None
):
    """A `stripe.StripeClient` (the real library). `STRIPE_API_KEY`; `STRIPE_API_BASE` points it elsewhere
    than api.stripe.com (a local stub in tests). Raises Invalid when no API key is configured."""
    import os

    import stripe

    e = os.environ if env is None else env
    key = api_key or e.get("STRIPE_API_KEY")
    if not key:
        raise Invalid("Stripe is not configured (STRIPE_API_KEY)")
    base = api_base or e.get("STRIPE_API_BASE")
    kwargs: dict[str, Any] = {"max_network_retries": 0}
    if base:
        kwargs["base_addresses"] = {"api": base.rstrip("/")}
    return stripe.StripeClient(key, **kwargs)


def _first_price(obj: Mapping[str, Any]) -> str | None:
    """The price id of the first line of an invoice or the first item of a subscription."""
    for path in (("lines", "data"), ("items", "data")):
        container = obj.get(path[0]) or {}
        items = container.get(path[1]) if isinstance(container, Mapping) else None
        for item in items or []:
            price = item.get("price") or (item.get("pricing") or {}).get("price_details", {}).get("price")
            if isinstance(price, Mapping):
                price = price.get("id")
            if isinstance(price, str):
                return price
            plan = item.get("plan")
            if isinstance(plan, Mapping) and isinstance(plan.get("id"), str):
                return plan["id"]
    return None


def handle_stripe_event(
    engine: _Engine, event: Mapping[str, Any], plans: StripePlans, now: datetime | None = None
) -> str:
    """Apply a verified Stripe event once (idempotent per event id). Returns a short outcome string.

    - invoice.payment_succeeded: plan from the invoice's price; the org's earliest open period that has
      ended (or, when none, last month's) → closing (the sensor closes it 48 h later);
    - invoice.payment_failed: the earliest open/closing period that has ended → failed;
    - customer.subscription.updated: plan from the subscription's price (canceled/unpaid → free);
    - customer.subscription.deleted: plan → free.
    The event id is recorded in the same transaction as its effects: a replay changes nothing."""
    now = now or _now()
    event_id, etype = str(event.get("id") or ""), str(event.get("type") or "")
    if not event_id:
        raise Invalid("Stripe event without id")
    obj = ((event.get("data") or {}).get("object")) or {}
    customer = obj.get("customer")
    if isinstance(customer, Mapping):
        customer = customer.get("id")
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(stripe_events).values(
                    id=event_id, type=etype[:100], org_id=None, outcome="processing", received_at=now
                )
            )
            org = None
            if isinstance(customer, str) and customer:
                org = (
                    conn.execute(select(organizations).where(organizations.c.stripe_customer_id == customer))
                    .mappings()
                    .first()
                )
            if org is None and isinstance((obj.get("metadata") or {}).get("org_id"), str):
                org = (
                    conn.execute(select(organizations).where(organizations.c.id == obj["metadata"]["org_id"]))
                    .mappings()
                    .first()
                )
            if org is None:
                outcome = "ignored: unknown customer"
            else:
                outcome = _apply(conn, etype, obj, dict(org), plans, now)
            conn.execute(
                update(stripe_events)
                .where(stripe_events.c.id == event_id)
                .values(org_id=org["id"] if org else None, outcome=outcome[:200])
            )
        return outcome
    except IntegrityError:
        with engine.connect() as conn:
            seen = conn.execute(select(stripe_events.c.id).where(stripe_events.c.id == event_id)).first()
        if seen is None:
            raise
        return "duplicate"


def _set_plan(conn: Connection, org_id: str, plan: str | None) -> str:
    if plan is None or plan not in PLAN_TIERS:
        return ""
    conn.execute(update(organizations).where(organizations.c.id == org_id).values(plan_tier=plan))
    return f"plan={plan}"


def _ended_period(conn: Connection, org_id: str, now: datetime, statuses: tuple[str, ...]) -> Mapping | None:
    month_start = date(now.year, now.month, 1)
    return (
        conn.execute(
            select(billing_periods)
            .where(
                billing_periods.c.org_id == org_id,
                billing_periods.c.status.in_(statuses),
                billing_periods.c.period_start < month_start,
            )
            .order_by(billing_periods.c.month)
        )
        .mappings()
        .first()
    )


def _apply(
    conn: Connection, etype: str, obj: Mapping[str, Any], org: dict, plans: StripePlans, now: datetime
) -> str:
    org_id = org["id"]
    if etype == "invoice.payment_succeeded":
        done = [_set_plan(conn, org_id, plans.plan_for_price(_first_price(obj)))]
        period = _ended_period(conn, org_id, now, ("open",))
        if period is None:
            month, start, end = parse_month(date(now.year, now.month, 1) - timedelta(days=1))
            exists = conn.execute(
                select(billing_periods.c.id).where(
                    billing_periods.c.org_id == org_id, billing_periods.c.month == month
                )
            ).first()
            if exists is None:
                pid = _new_id()
                conn.execute(
                    insert(billing_periods).values(
                        id=pid,
                        org_id=org_id,
                        month=month,
                        period_start=start,
                        period_end=end,
                        status="open",
                        attempts=0,
                        created_at=now,
                        updated_at=now,
                    )
                )
                period = {"id": pid, "month": month}
        if period is not None:
            conn.execute(
                update(billing_periods)
                .where(billing_periods.c.id == period["id"], billing_periods.c.status == "open")
                .values(status="closing", closing_since=now, updated_at=now)
            )
            done.append(f"period {period['month']} closing")
        return "; ".join(d for d in done if d) or "no change"
    if etype == "invoice.payment_failed":
        period = _ended_period(conn, org_id, now, ("open", "closing"))
        if period is None:
            return "no open period"
        conn.execute(
            update(billing_periods)
            .where(billing_periods.c.id == period["id"])
            .values(status="failed", error="Stripe invoice payment failed", updated_at=now)
        )
        return f"period {period['month']} failed"
    if etype == "customer.subscription.updated":
        status = obj.get("status")
        if status in ("canceled", "unpaid", "incomplete_expired"):
            return _set_plan(conn, org_id, "free")
        return _set_plan(conn, org_id, plans.plan_for_price(_first_price(obj))) or "no plan change"
    if etype == "customer.subscription.deleted":
        return _set_plan(conn, org_id, "free")
    return f"ignored: {etype}"
