"""Billing API: status, upgrade (Stripe Checkout) and portal through the real `stripe` library against a local
stub of Stripe's API; Stripe webhooks verified with the real library (signed accepted, forged rejected,
replays change nothing)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from controlplane import ApiKeys, Orgs
from controlplane.billing import BillingPeriods, parse_month
from tests.api.billing_app import with_close_routes
from tests.api.stripe_stub import WEBHOOK_SECRET, StripeStub, event, sign_webhook
from tests.fixtures_api import bearer, client_for

pytestmark = pytest.mark.anyio


@pytest.fixture
def stripe_stub():
    stub = StripeStub()
    yield stub
    stub.close()


@pytest.fixture
def stripe_settings(settings, stripe_stub):
    return settings.replace(
        stripe_api_key="sk_test_joulestream",
        stripe_api_base=stripe_stub.url,
        stripe_webhook_secret=WEBHOOK_SECRET,
        stripe_prices="starter=price_s,growth=price_g,scale=price_x",
    )


@pytest.fixture
async def bapi(make_app, stripe_settings):
    async with client_for(with_close_routes(make_app(settings=stripe_settings))) as c:
        yield c


@pytest.fixture
def billing_key(engine, tenants):
    return ApiKeys(engine).create(tenants[0].org.id, ["billing"], name="billing")[1]


async def test_status_creates_the_current_period(bapi, tenants):
    r = await bapi.get("/api/v1/billing/status", headers=tenants[0].h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["plan_tier"] == "free" and body["stripe_customer_id"] is None
    today = datetime.now(UTC).date()
    assert body["current_period"]["period_start"] == date(today.year, today.month, 1).isoformat()
    assert body["current_period"]["status"] == "open"
    assert body["past_periods"] == []
    assert (await bapi.get("/api/v1/billing/status", headers=bearer(tenants[0].ingest))).status_code == 403
    assert (await bapi.get("/api/v1/billing/status")).status_code == 401


async def test_upgrade_through_stripe_checkout(bapi, tenants, billing_key, stripe_stub, engine):
    h = bearer(billing_key)
    assert (
        await bapi.post("/api/v1/billing/upgrade", json={"plan": "growth"}, headers=tenants[0].h)
    ).status_code == 403
    r = await bapi.post("/api/v1/billing/upgrade", json={"plan": "growth"}, headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["checkout_url"].startswith("https://checkout.stripe.test/") and body["session_id"].startswith(
        "cs_"
    )
    paths = [p for p, _, _ in stripe_stub.requests]
    assert paths == ["/v1/customers", "/v1/checkout/sessions"]
    _, form, headers = stripe_stub.requests[1]
    customer = Orgs(engine).get(tenants[0].org.id).stripe_customer_id
    assert customer and form["customer"] == customer
    assert form["line_items[0][price]"] == "price_g" and form["mode"] == "subscription"
    assert form["client_reference_id"] == tenants[0].org.id
    assert headers["Authorization"] == "Bearer sk_test_joulestream"
    # a second upgrade reuses the customer
    await bapi.post("/api/v1/billing/upgrade", json={"plan": "scale"}, headers=h)
    assert [p for p, _, _ in stripe_stub.requests][2:] == ["/v1/checkout/sessions"]

    Orgs(engine).set_plan(tenants[0].org.id, "growth")
    for plan in ("growth", "starter"):  # same plan, downgrade
        r = await bapi.post("/api/v1/billing/upgrade", json={"plan": plan}, headers=h)
        assert r.status_code == 409, plan
    r = await bapi.post("/api/v1/billing/upgrade", json={"plan": "enterprise"}, headers=h)
    assert r.status_code == 200 and r.json()["contact_url"].startswith("http")
    assert (await bapi.post("/api/v1/billing/upgrade", json={"plan": "gold"}, headers=h)).status_code == 422

    r = await bapi.post("/api/v1/billing/portal", headers=h)
    assert r.status_code == 200 and r.json()["portal_url"].startswith(
        "https://billing.stripe.test/p/session/"
    )
    assert stripe_stub.requests[-1][1]["customer"] == customer


async def test_portal_needs_a_customer(bapi, engine, tenants):
    key = ApiKeys(engine).create(tenants[1].org.id, ["billing"])[1]
    assert (await bapi.post("/api/v1/billing/portal", headers=bearer(key))).status_code == 409


async def _post_event(bapi, payload: bytes, signature: str | None):
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return await bapi.post("/api/v1/billing/webhook", content=payload, headers=headers)


async def test_webhooks_signed_forged_and_replayed(bapi, engine, tenants):
    orgs = Orgs(engine)
    org = tenants[0].org
    orgs.set_stripe_customer(org.id, "cus_acme")
    periods = BillingPeriods(engine)
    today = datetime.now(UTC).date()
    last_month, _, _ = parse_month(
        date(today.year, today.month, 1).replace(day=1) - __import__("datetime").timedelta(days=1)
    )
    periods.ensure(org.id, last_month)

    paid = event(
        "invoice.payment_succeeded",
        {
            "id": "in_1",
            "object": "invoice",
            "customer": "cus_acme",
            "lines": {"object": "list", "data": [{"id": "il_1", "price": {"id": "price_g"}}]},
        },
        event_id="evt_paid_1",
    )
    # forged / unsigned / wrong secret / stale timestamp: rejected, nothing changes
    for sig in (
        None,
        "t=1,v1=deadbeef",
        sign_webhook(paid, secret="whsec_other"),
        sign_webhook(paid, timestamp=1),
    ):
        r = await _post_event(bapi, paid, sig)
        assert r.status_code == 400, sig
    assert orgs.get(org.id).plan_tier == "free"
    assert periods.get_for(org.id, last_month).status == "open"

    r = await _post_event(bapi, paid, sign_webhook(paid))
    assert r.status_code == 200 and r.json() == {"received": True}
    assert orgs.get(org.id).plan_tier == "growth"
    p = periods.get_for(org.id, last_month)
    assert p.status == "closing" and p.closing_since is not None

    # a replay of the same event id changes nothing (even after the state moved on)
    orgs.set_plan(org.id, "starter")
    r = await _post_event(bapi, paid, sign_webhook(paid))
    assert r.status_code == 200 and r.json() == {"received": True}
    assert orgs.get(org.id).plan_tier == "starter"

    upd = event(
        "customer.subscription.updated",
        {
            "id": "sub_1",
            "object": "subscription",
            "customer": "cus_acme",
            "status": "active",
            "items": {"object": "list", "data": [{"id": "si_1", "price": {"id": "price_x"}}]},
        },
    )
    assert (await _post_event(bapi, upd, sign_webhook(upd))).status_code == 200
    assert orgs.get(org.id).plan_tier == "scale"

    failed = event("invoice.payment_failed", {"id": "in_2", "object": "invoice", "customer": "cus_acme"})
    assert (await _post_event(bapi, failed, sign_webhook(failed))).status_code == 200
    assert periods.get_for(org.id, last_month).status == "failed"

    deleted = event(
        "customer.subscription.deleted", {"id": "sub_1", "object": "subscription", "customer": "cus_acme"}
    )
    assert (await _post_event(bapi, deleted, sign_webhook(deleted))).status_code == 200
    assert orgs.get(org.id).plan_tier == "free"

    # unknown customers and unknown event types are acknowledged
    other = event("invoice.payment_succeeded", {"id": "in_3", "object": "invoice", "customer": "cus_nobody"})
    assert (await _post_event(bapi, other, sign_webhook(other))).json() == {"received": True}
    odd = event("charge.refunded", {"id": "ch_1", "object": "charge", "customer": "cus_acme"})
    assert (await _post_event(bapi, odd, sign_webhook(odd))).json() == {"received": True}
    assert (await _post_event(bapi, b"not json", sign_webhook(b"not json"))).status_code == 400
    for body in (b"[]", b"null", b"1", b'"event"', b"\xff"):  # signed, but not a JSON object: 400, not 500
        r = await _post_event(bapi, body, sign_webhook(body))
        assert r.status_code == 400 and r.json()["detail"], body
