"""Monthly receipts: numbered `CL-YYYYMM-NNNNN`, unique and gap-free per month, one per closed period.

Tables `receipt_counters` and `receipts` (`controlplane.schema`, migration `0030_billing`). A receipt number
is taken by incrementing the month's counter in the same transaction that inserts the receipt: a rolled-back
close never leaves a gap, and the counter's row lock serialises numbering.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine, and_, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from controlplane._util import new_id as _new_id
from controlplane._util import now as _now
from controlplane.billing.periods import lock_period
from controlplane.errors import Conflict, NotFound
from controlplane.schema import billing_periods, receipt_counters, receipts

SERIAL_RE = re.compile(r"^CL-(\d{4})(\d{2})-(\d{5})$")


class Receipt(BaseModel):
    model_config = ConfigDict(frozen=True)

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


def _receipt(row: Mapping[str, Any]) -> Receipt:
    d = dict(row)
    d["payload_canonical"] = d["payload"]
    d["payload"] = json.loads(d["payload"])
    return Receipt(**d)


def verify_url(serial: str, public_url: str) -> str:
    """The public verification link of a receipt; `public_url` is `settings.public_url`."""
    return f"{public_url.rstrip('/')}/public/receipts/verify/{serial}"


def format_serial(month: str, seq: int) -> str:
    return f"CL-{month[:4]}{month[5:7]}-{seq:05d}"


class Receipts:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def issue(self, period_id: str, build: Callable[[str], tuple[dict[str, Any], dict[str, Any]]]) -> Receipt:
        """The period's receipt, created once. `build(serial_number)` returns (payload, signed record
        mapping: sha256, signature, key_version, public_key); the serial is taken from the month's counter
        in the same transaction, so numbers are unique and gap-free."""
        self._ensure_counter(period_id)
        with self.engine.begin() as conn:
            lock_period(conn, period_id)
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
