"""Billing: GET /billing/status, POST /billing/upgrade, POST /billing/portal, POST /billing/webhook.

Stripe goes through the real `stripe` library (`controlplane.billing.stripe_client`), configured by the
app's settings (`ctx.settings`): `stripe_api_key`, `stripe_api_base` (a local stub in tests),
`stripe_webhook_secret`, price ids per plan in `stripe_prices` ("starter=price_…,growth=price_…,…").
Redirects after Checkout and the portal go to `public_url`; enterprise upgrades get `sales_url`.

Scopes: status needs `read` or `billing`; upgrade and portal need `billing`. The webhook is authenticated
by its `Stripe-Signature` only (`stripe.Webhook.construct_event`): 400 when it is missing or wrong (or the
body is not a JSON object), 503 when no webhook secret is configured, else
always 200 `{"received": true}` — processing errors are logged and acknowledged (Stripe retries only on
non-2xx), and a replayed event id changes nothing.
"""

from __future__ import annotations

import inspect
import logging
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from pydantic import BaseModel

from api.deps import Ctx, Principal, get_principal
from api.errors import ErrorBody, error_responses
from controlplane.billing import (
    BillingPeriods,
    Receipts,
    StripePlans,
    handle_stripe_event,
    parse_month,
    stripe_client,
)
from controlplane.errors import Invalid

router = APIRouter(prefix="/billing", tags=["billing"])
log = logging.getLogger("joulestream.api.billing")

PLAN_ORDER = ("free", "starter", "growth", "scale", "enterprise")


def any_scope(*scopes: str):
    def dependency(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if not principal.scopes & set(scopes):
            raise HTTPException(403, f"missing scope: one of {', '.join(scopes)}")
        return principal

    return dependency


StatusPrincipal = Annotated[Principal, Depends(any_scope("read", "billing"))]
BillingPrincipal = Annotated[Principal, Depends(any_scope("billing"))]


def stripe_customer(ctx, client, org) -> str:
    """The org's Stripe customer id, created (and remembered) on first use. Raises stripe.StripeError."""
    if org.stripe_customer_id:
        return org.stripe_customer_id
    customer = client.v1.customers.create(
        params={"name": org.name, "metadata": {"org_id": org.id, "org_slug": org.slug}}
    )
    ctx.orgs.set_stripe_customer(org.id, customer.id)
    return customer.id


def _period_json(p, receipt_serial: str | None = None, total: float | None = None) -> dict[str, Any]:
    return {
        "id": p.id,
        "period_start": p.period_start.isoformat(),
        "period_end": p.period_end.isoformat(),
        "status": p.status,
        "total_co2_kg": p.co2_kg if p.co2_kg is not None else total,
        "total_co2_upper_bound_kg": p.co2_kg_high,
        "credits_retired": p.credits_retired_kg,
        "receipt_serial": receipt_serial,
    }


@router.get(
    "/status",
    summary="Plan, Stripe customer and billing periods of the caller's org",
    responses=error_responses(401, 403),
)
async def billing_status(ctx: Ctx, principal: StatusPrincipal) -> dict[str, Any]:
    org = ctx.orgs.get(principal.org_id)
    assert org is not None
    periods = BillingPeriods(ctx.engine)
    today = datetime.now(UTC).date()
    current = periods.ensure(org.id, today)  # created on demand
    total = None
    try:
        got = ctx.telemetry.summary(org.id, None, current.period_start, min(today, current.period_end))
        if inspect.isawaitable(got):
            got = await got
        total = got.get("total_co2_kg")
    except Exception:  # the live figure is a convenience: never fail the status on it
        log.warning("could not read the current period's CO2e", exc_info=True)
    receipts = Receipts(ctx.engine)
    past = []
    for p in sorted(periods.list(org_id=org.id), key=lambda p: p.month, reverse=True):
        if p.id == current.id:
            continue
        r = receipts.for_period(p.id)
        past.append(_period_json(p, r.serial_number if r else None))
    return {
        "plan_tier": org.plan_tier,
        "stripe_customer_id": org.stripe_customer_id,
        "current_period": _period_json(current, None, total),
        "past_periods": past,
    }


class UpgradeBody(BaseModel):
    plan: Literal["starter", "growth", "scale", "enterprise"]


@router.post(
    "/upgrade",
    summary="Start a plan upgrade (Stripe Checkout); enterprise → a sales contact URL",
    responses=error_responses(401, 403, 409, 502),
)
def upgrade(body: UpgradeBody, ctx: Ctx, principal: BillingPrincipal) -> dict[str, Any]:
    org = ctx.orgs.get(principal.org_id)
    assert org is not None
    if PLAN_ORDER.index(body.plan) <= PLAN_ORDER.index(org.plan_tier):
        what = "already on" if body.plan == org.plan_tier else "a downgrade from"
        raise HTTPException(
            409,
            f"{body.plan} is {what} the current plan ({org.plan_tier}); downgrades go through "
            "POST /api/v1/billing/portal",
        )
    if body.plan == "enterprise":
        return {
            "plan": "enterprise",
            "contact_url": ctx.settings.sales_url,
        }
    plans = StripePlans.from_settings(ctx.settings)
    app_url = ctx.settings.public_url
    try:
        client = stripe_client(ctx.settings)
    except Invalid as exc:
        raise HTTPException(503, str(exc)) from exc
    import stripe

    try:
        customer_id = stripe_customer(ctx, client, org)
        session = client.v1.checkout.sessions.create(
            params={
                "mode": "subscription",
                "customer": customer_id,
                "client_reference_id": org.id,
                "line_items": [{"price": plans.prices[body.plan], "quantity": 1}],
                "success_url": f"{app_url}/billing?checkout=success",
                "cancel_url": f"{app_url}/billing?checkout=cancelled",
                "metadata": {"org_id": org.id, "plan": body.plan},
                "subscription_data": {"metadata": {"org_id": org.id, "plan": body.plan}},
            }
        )
    except stripe.StripeError as exc:
        log.warning("Stripe Checkout failed for org %s: %s", org.id, exc)
        raise HTTPException(502, "the payment provider is unavailable, retry later") from exc
    return {"checkout_url": session.url, "session_id": session.id}


@router.post(
    "/portal",
    summary="A Stripe Customer Portal link for managing the subscription",
    responses=error_responses(401, 403, 409, 502),
)
def portal(ctx: Ctx, principal: BillingPrincipal) -> dict[str, Any]:
    org = ctx.orgs.get(principal.org_id)
    assert org is not None
    if not org.stripe_customer_id:
        raise HTTPException(409, "this organization has no Stripe customer yet: upgrade first")
    try:
        client = stripe_client(ctx.settings)
    except Invalid as exc:
        raise HTTPException(503, str(exc)) from exc
    import stripe

    try:
        session = client.v1.billing_portal.sessions.create(
            params={"customer": org.stripe_customer_id, "return_url": f"{ctx.settings.public_url}/billing"}
        )
    except stripe.StripeError as exc:
        log.warning("Stripe portal failed for org %s: %s", org.id, exc)
        raise HTTPException(502, "the payment provider is unavailable, retry later") from exc
    return {"portal_url": session.url}


@router.post(
    "/webhook",
    summary="Stripe webhooks (authenticated by Stripe-Signature)",
    responses={
        400: {
            "model": ErrorBody,
            "description": "missing or invalid Stripe-Signature, or not a Stripe event",
        },
        **error_responses(503),
    },
)
async def webhook(
    request: Request,
    ctx: Ctx,
    sig: Annotated[str | None, Header(alias="Stripe-Signature")] = None,  # optional: missing is our 400
) -> dict[str, bool]:
    import stripe

    if not sig:  # unsigned: a 400 whether or not this server is configured for webhooks
        raise HTTPException(400, "missing Stripe-Signature")
    secret_value = ctx.settings.stripe_webhook_secret
    secret = secret_value.get_secret_value() if secret_value else None
    if not secret:
        raise HTTPException(503, "Stripe webhooks are not configured (STRIPE_WEBHOOK_SECRET)")
    payload = await request.body()
    try:
        event = stripe.Webhook.construct_event(payload, sig, secret)
    except stripe.SignatureVerificationError as exc:
        raise HTTPException(400, "invalid Stripe-Signature") from exc
    except (ValueError, AttributeError, TypeError) as exc:
        # not UTF-8 / not JSON (ValueError), or signed JSON that is not an object: the stripe library fails
        # on it with AttributeError ('list' object has no attribute 'get')
        raise HTTPException(400, "the body is not a Stripe event") from exc
    data = event.to_dict()
    eid, etype = data.get("id"), data.get("type")
    try:
        from starlette.concurrency import run_in_threadpool

        outcome = await run_in_threadpool(
            handle_stripe_event, ctx.engine, data, StripePlans.from_settings(ctx.settings)
        )
        log.info("Stripe event %s (%s): %s", eid, etype, outcome)
    except Exception:  # acknowledged anyway: see the module docstring
        log.exception("Stripe event %s (%s) could not be processed", eid, etype)
    return {"received": True}


def month_bounds(year: int, month: int) -> tuple[str, date, date]:
    try:
        return parse_month(f"{year:04d}-{month:02d}")
    except Invalid as exc:
        raise HTTPException(404, str(exc)) from exc
