"""An org's prepaid balance: /api/v1/orgs/{slug}/balance, /transactions, a Stripe Checkout top-up and an
admin adjustment (the ledger: `controlplane.ledger`; the gateway debits it: `pipelines.gateway.budgets`).

- GET balance / transactions: any member (`read`);
- POST balance/top-up `{amount_usd}`: `billing` (admins) → a Stripe Checkout session in payment mode; the
  balance is credited when Stripe's `checkout.session.completed` webhook arrives (POST
  /api/v1/billing/webhook), once per session;
- POST balance/adjustments `{amount_usd, reason}`: `admin`, positive or negative, with a reason.
Each change is in the org's audit log.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from api.deps import Ctx, Page, Principal
from api.errors import error_responses, validation_error
from api.routers.billing import stripe_customer
from api.routers.orgs import OrgAdmin, OrgReader, org_access
from controlplane.billing import stripe_client
from controlplane.errors import Invalid
from controlplane.gateway import Balances
from controlplane.ledger import Ledger

router = APIRouter(prefix="/orgs", tags=["organizations"], responses=error_responses(401, 403, 404))
log = logging.getLogger("joulestream.api.balance")
OrgBilling = Annotated[Principal, Depends(org_access("billing"))]
MAX_USD = 1_000_000.0


@router.get("/{slug}/balance", summary="The org's prepaid balance")
def balance(ctx: Ctx, p: OrgReader) -> dict[str, Any]:
    micros = Balances(ctx.engine).get(p.org_id)
    return {
        "prepaid": micros is not None,
        "balance_micros": micros or 0,
        "balance_usd": (micros or 0) / 1e6,
        "currency": "usd",
    }


@router.get("/{slug}/transactions", summary="The prepaid ledger: top-ups, hourly debits, adjustments")
def transactions(ctx: Ctx, p: OrgReader, page: Page) -> dict[str, Any]:
    items, total = Ledger(ctx.engine).list(p.org_id, offset=page.offset, limit=page.page_size)
    return {"transactions": items, "pagination": page.info(total)}


class TopUp(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_usd: float = Field(ge=1.0, le=MAX_USD, description="US dollars to add (1 – 1,000,000)")


class Adjustment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_usd: float = Field(ge=-MAX_USD, le=MAX_USD, description="US dollars; negative takes away")
    reason: str = Field(min_length=3, max_length=500)


@router.post(
    "/{slug}/balance/top-up",
    summary="Top up through Stripe Checkout (credited by the webhook when paid)",
    responses=error_responses(502, 503),
)
def top_up(body: TopUp, ctx: Ctx, p: OrgBilling) -> dict[str, Any]:
    org = ctx.orgs.get(p.org_id)
    assert org is not None
    micros = round(body.amount_usd * 1e6)
    try:
        client = stripe_client(ctx.settings)
    except Invalid as exc:
        raise HTTPException(503, str(exc)) from exc
    import stripe

    app_url = ctx.settings.public_url
    meta = {"org_id": org.id, "kind": "topup", "amount_micros": str(micros)}
    try:
        customer_id = stripe_customer(ctx, client, org)
        session = client.v1.checkout.sessions.create(
            params={
                "mode": "payment",
                "customer": customer_id,
                "client_reference_id": org.id,
                "line_items": [
                    {
                        "price_data": {
                            "currency": "usd",
                            "unit_amount": round(body.amount_usd * 100),
                            "product_data": {"name": "joulestream prepaid balance"},
                        },
                        "quantity": 1,
                    }
                ],
                "success_url": f"{app_url}/billing?topup=success",
                "cancel_url": f"{app_url}/billing?topup=cancelled",
                "metadata": meta,
                "payment_intent_data": {"metadata": meta},
            }
        )
    except stripe.StripeError as exc:
        log.warning("Stripe top-up Checkout failed for org %s: %s", org.id, exc)
        raise HTTPException(502, "the payment provider is unavailable, retry later") from exc
    return {"checkout_url": session.url, "session_id": session.id, "amount_usd": body.amount_usd}


@router.post(
    "/{slug}/balance/adjustments", status_code=201, summary="Adjust the balance, with a reason (admins)"
)
def adjust(body: Adjustment, ctx: Ctx, p: OrgAdmin) -> dict[str, Any]:
    micros = round(body.amount_usd * 1e6)
    if not micros:
        raise validation_error(("body", "amount_usd"), "must not be zero", body.amount_usd)
    Ledger(ctx.engine).adjust(p.org_id, micros, actor=p.actor, reason=body.reason)
    after = Balances(ctx.engine).get(p.org_id) or 0
    return {"amount_micros": micros, "balance_micros": after, "balance_usd": after / 1e6}
