"""The prepaid ledger: every change of an org's balance as a transaction row (`balance_transactions`).

- `topup` — a paid Stripe Checkout session (`ref` = the session id: a replayed webhook credits once) or an
  operator's top-up;
- `debit` — the gateway's per-request charges, aggregated per org and hour (one row per hour, its amount and
  request count grow as the gateway settles);
- `adjustment` — an org admin's or operator's correction, with a reason (may be negative).

The balance row (`org_balances`) and the transaction change in one database transaction. The gateway holds
allowances taken from the balance in advance (`pipelines.gateway.budgets.Prepaid`): the sum of an org's
transactions equals its balance plus what running gateways hold (docs/tenancy.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from controlplane._util import new_id as _new_id
from controlplane._util import now as _now
from controlplane.errors import Invalid, NotFound
from controlplane.schema import balance_transactions, org_balances
from controlplane.users import audit


def _add_balance(conn: Connection, org_id: str, delta: int, now: datetime) -> None:
    n = conn.execute(
        update(org_balances)
        .where(org_balances.c.org_id == org_id)
        .values(balance_micros=org_balances.c.balance_micros + delta, updated_at=now)
    ).rowcount
    if not n:
        conn.execute(insert(org_balances).values(org_id=org_id, balance_micros=delta, updated_at=now))


def _hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def credit_in(
    conn: Connection, kind: str, org_id: str, micros: int, *, actor: str, reason: str | None, ref: str | None
) -> None:
    """A top-up or adjustment inside the caller's transaction: the transaction row, the balance (the
    prepaid account opens on first credit) and the audit entry."""
    now = _now()
    conn.execute(
        insert(balance_transactions).values(
            id=_new_id(),
            org_id=org_id,
            kind=kind,
            amount_micros=micros,
            hour=None,
            requests=0,
            reason=(reason or None) and reason[:500],
            actor=actor[:200],
            ref=ref,
            created_at=now,
            updated_at=now,
        )
    )
    _add_balance(conn, org_id, micros, now)
    audit(
        conn,
        org_id,
        actor,
        "balance.topped_up" if kind == "topup" else "balance.adjusted",
        None,
        amount_micros=micros,
        **({"reason": reason} if reason else {}),
    )


def credited(conn: Connection, ref: str) -> bool:
    return (
        conn.execute(select(balance_transactions.c.id).where(balance_transactions.c.ref == ref)).first()
        is not None
    )


class Ledger:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _credit(
        self, kind: str, org_id: str, micros: int, *, actor: str, reason: str | None, ref: str | None
    ) -> bool:
        try:
            with self.engine.begin() as conn:
                credit_in(conn, kind, org_id, micros, actor=actor, reason=reason, ref=ref)
        except IntegrityError as exc:
            if ref is not None:
                with self.engine.connect() as conn:
                    seen = conn.execute(
                        select(balance_transactions.c.id).where(balance_transactions.c.ref == ref)
                    ).first()
                if seen is not None:
                    return False  # this payment was credited already
            raise NotFound("organization not found") from exc
        return True

    def top_up(self, org_id: str, micros: int, *, actor: str, ref: str | None = None) -> bool:
        """Credit a top-up; False when `ref` was credited before (idempotent)."""
        if micros <= 0:
            raise Invalid("a top-up must be a positive amount")
        return self._credit("topup", org_id, micros, actor=actor, reason=None, ref=ref)

    def adjust(self, org_id: str, micros: int, *, actor: str, reason: str) -> None:
        if not micros:
            raise Invalid("an adjustment must not be zero")
        if not reason.strip():
            raise Invalid("an adjustment needs a reason")
        self._credit("adjustment", org_id, micros, actor=actor, reason=reason.strip(), ref=None)

    def settle(
        self,
        balance_deltas: Mapping[str, int],
        debits: Mapping[tuple[str, datetime], tuple[int, int]],
    ) -> None:
        """The gateway's batch, in one transaction: `balance_deltas` org → micro-USD added to the balance
        (allowances taken (<0) or returned (>0)); `debits` (org, hour) → (micro-USD spent, requests),
        added to that hour's debit row."""
        now = _now()
        with self.engine.begin() as conn:
            for org_id, delta in balance_deltas.items():
                if delta:
                    conn.execute(
                        update(org_balances)
                        .where(org_balances.c.org_id == org_id)
                        .values(balance_micros=org_balances.c.balance_micros + delta, updated_at=now)
                    )
            for (org_id, hour), (micros, requests) in debits.items():
                hour = _hour(hour)
                n = conn.execute(
                    update(balance_transactions)
                    .where(
                        balance_transactions.c.org_id == org_id,
                        balance_transactions.c.kind == "debit",
                        balance_transactions.c.hour == hour,
                    )
                    .values(
                        amount_micros=balance_transactions.c.amount_micros - micros,
                        requests=balance_transactions.c.requests + requests,
                        updated_at=now,
                    )
                ).rowcount
                if not n:
                    conn.execute(
                        insert(balance_transactions).values(
                            id=_new_id(),
                            org_id=org_id,
                            kind="debit",
                            amount_micros=-micros,
                            hour=hour,
                            requests=requests,
                            reason=None,
                            actor="gateway",
                            ref=None,
                            created_at=now,
                            updated_at=now,
                        )
                    )

    def list(self, org_id: str, *, offset: int = 0, limit: int = 50) -> tuple[list[dict[str, Any]], int]:
        cond = balance_transactions.c.org_id == org_id
        with self.engine.connect() as conn:
            total = conn.execute(
                select(func.count()).select_from(balance_transactions).where(cond)
            ).scalar_one()
            rows = conn.execute(
                select(balance_transactions)
                .where(cond)
                .order_by(balance_transactions.c.created_at.desc(), balance_transactions.c.id)
                .offset(offset)
                .limit(limit)
            ).mappings()
            items = [
                {
                    "id": r["id"],
                    "kind": r["kind"],
                    "amount_usd": r["amount_micros"] / 1e6,
                    "amount_micros": r["amount_micros"],
                    "hour": r["hour"],
                    "requests": r["requests"],
                    "reason": r["reason"],
                    "actor": r["actor"],
                    "created_at": r["created_at"],
                    "updated_at": r["updated_at"],
                }
                for r in rows
            ]
        return items, int(total)
