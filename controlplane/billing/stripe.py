"""Stripe: plan ↔ price mapping, the API client, and the webhook events that change plans and periods.

Table `stripe_events` (`controlplane.schema`, migration `0030_billing`): the Stripe event ids already
processed (webhook idempotency).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from controlplane._util import new_id as _new_id
from controlplane._util import now as _now
from controlplane.billing.periods import parse_month
from controlplane.errors import Invalid
from controlplane.schema import PLAN_TIERS, billing_periods, organizations, stripe_events
from core.settings import Settings


@dataclass(frozen=True)
class StripePlans:
    """Stripe price id ↔ plan tier (`settings.stripe_prices`: "starter=price_…,growth=price_…,…"; a plan
    not named keeps the default `price_joulestream_<plan>`)."""

    prices: Mapping[str, str]  # plan → price id

    @classmethod
    def from_settings(cls, settings: Settings) -> StripePlans:
        prices = {p: f"price_joulestream_{p}" for p in ("starter", "growth", "scale")}
        for item in filter(None, (s.strip() for s in settings.stripe_prices.split(","))):
            plan, _, price = item.partition("=")
            if plan.strip() in prices and price.strip():
                prices[plan.strip()] = price.strip()
        return cls(prices)

    def plan_for_price(self, price_id: str | None) -> str | None:
        for plan, price in self.prices.items():
            if price == price_id:
                return plan
        return None


def stripe_client(settings: Settings, *, api_key: str | None = None, api_base: str | None = None):
    """A `stripe.StripeClient` (the real library) with `settings.stripe_api_key`; `stripe_api_base` points it
    elsewhere than api.stripe.com (a local stub in tests). `api_key` / `api_base` override the settings.
    Raises Invalid when no API key is configured."""
    import stripe

    key = api_key or (settings.stripe_api_key.get_secret_value() if settings.stripe_api_key else None)
    if not key:
        raise Invalid("Stripe is not configured (STRIPE_API_KEY)")
    base = api_base or settings.stripe_api_base
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
    engine: Engine, event: Mapping[str, Any], plans: StripePlans, now: datetime | None = None
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


def _top_up(conn: Connection, obj: Mapping[str, Any], org_id: str) -> str:
    """A paid top-up Checkout session (`metadata.kind == "topup"`, see api/routers/balance.py) credits the
    prepaid balance once per session (`controlplane.ledger`)."""
    from controlplane.ledger import credit_in, credited

    meta = obj.get("metadata") or {}
    if meta.get("kind") != "topup":
        return "ignored: not a top-up"
    if obj.get("payment_status") != "paid":
        return "top-up not paid yet"
    session_id = str(obj.get("id") or "")
    micros = int(obj.get("amount_total") or 0) * 10_000  # cents → micro-USD: what was actually paid
    if not session_id or micros <= 0:
        return "ignored: top-up without session or amount"
    if credited(conn, session_id):
        return "top-up already credited"
    credit_in(conn, "topup", org_id, micros, actor="stripe", reason=None, ref=session_id)
    return f"top-up credited {micros}"


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
    if etype in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
        return _top_up(conn, obj, org_id)
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
