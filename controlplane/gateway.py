"""Control-plane storage for the inference gateway: prepaid balances and per-request receipts.

Tables `org_balances` and `gateway_receipts` (`controlplane.schema`, migration `0010_gateway`). Balances are
in micro-USD; an org with no balance row is not prepaid (the gateway never answers 402 for it).

Balances change only through single-statement UPDATEs, so concurrent gateways can never spend a cent twice:
`debit` is `UPDATE … SET balance = balance - :p WHERE org_id = :o AND balance >= :p` (false when short).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from controlplane._util import now as _now
from controlplane.errors import Invalid, NotFound
from controlplane.schema import gateway_receipts, org_balances
from core.receipts import SignedRecord


class Balances:
    """Prepaid balances in micro-USD. Every change is one atomic UPDATE."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, org_id: str) -> int | None:
        """The balance in micro-USD, or None when the org has no prepaid account."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(org_balances.c.balance_micros).where(org_balances.c.org_id == org_id)
            ).scalar_one_or_none()

    def top_up(self, org_id: str, micros: int) -> int:
        """Add `micros` (> 0), opening the prepaid account on first top-up. Returns the new balance."""
        if micros <= 0:
            raise Invalid("a top-up must be a positive amount")
        now = _now()
        add = (
            update(org_balances)
            .where(org_balances.c.org_id == org_id)
            .values(balance_micros=org_balances.c.balance_micros + micros, updated_at=now)
        )
        with self.engine.begin() as conn:
            n = conn.execute(add).rowcount
        if not n:
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        insert(org_balances).values(org_id=org_id, balance_micros=micros, updated_at=now)
                    )
            except IntegrityError:  # opened concurrently, or the org does not exist
                with self.engine.begin() as conn:
                    if not conn.execute(add).rowcount:
                        raise NotFound("organization not found") from None
        balance = self.get(org_id)
        assert balance is not None
        return balance

    def debit(self, org_id: str, micros: int) -> bool:
        """Take `micros` if the balance covers it (single UPDATE … WHERE balance >= price). False when short
        or when the org has no prepaid account."""
        if micros < 0:
            raise Invalid("a debit must not be negative")
        with self.engine.begin() as conn:
            n = conn.execute(
                update(org_balances)
                .where(org_balances.c.org_id == org_id, org_balances.c.balance_micros >= micros)
                .values(balance_micros=org_balances.c.balance_micros - micros, updated_at=_now())
            ).rowcount
        return n == 1

    def adjust_many(self, deltas: dict[str, int]) -> None:
        """Settle reservations, one org → delta (micro-USD) each, in one transaction (the gateway's background
        settler): add (a refund) or remove (an overshoot the reservation did not cover) unconditionally. May
        leave a balance below zero by at most one request's overshoot; the next `debit` then fails, so the
        org answers 402 until it tops up."""
        deltas = {k: v for k, v in deltas.items() if v}
        if not deltas:
            return
        now = _now()
        with self.engine.begin() as conn:
            for org_id, delta in deltas.items():
                conn.execute(
                    update(org_balances)
                    .where(org_balances.c.org_id == org_id)
                    .values(balance_micros=org_balances.c.balance_micros + delta, updated_at=now)
                )


class GatewayReceipts:
    """Signed per-request receipts. Reads are scoped by org: another org's id is simply not found."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def insert_many(self, rows: Iterable[tuple[str, str, datetime, SignedRecord]]) -> int:
        """Store (receipt_id, org_id, created_at, record) rows; ids already stored are skipped (idempotent
        on retry)."""
        values = [
            {
                "id": rid,
                "org_id": org_id,
                "created_at": created_at,
                "key_version": rec.key_version,
                "sha256": rec.sha256,
                "signature": rec.signature,
                "payload": rec.canonical().decode("utf-8"),
            }
            for rid, org_id, created_at, rec in rows
        ]
        if not values:
            return 0
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(gateway_receipts), values)
            return len(values)
        except IntegrityError:  # a retried batch: insert what is missing, one by one
            ids = [v["id"] for v in values]
            with self.engine.connect() as conn:
                have = set(
                    conn.execute(
                        select(gateway_receipts.c.id).where(gateway_receipts.c.id.in_(ids))
                    ).scalars()
                )
            missing = [v for v in values if v["id"] not in have]
            if missing:
                with self.engine.begin() as conn:
                    conn.execute(insert(gateway_receipts), missing)
            return len(missing)

    def get(self, org_id: str, receipt_id: str) -> SignedRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(
                    gateway_receipts.c.payload,
                    gateway_receipts.c.sha256,
                    gateway_receipts.c.signature,
                    gateway_receipts.c.key_version,
                ).where(gateway_receipts.c.id == receipt_id, gateway_receipts.c.org_id == org_id)
            ).first()
        if row is None:
            return None
        payload: dict[str, Any] = orjson.loads(row.payload)
        return SignedRecord(
            payload=payload, sha256=row.sha256, signature=row.signature, key_version=row.key_version
        )
