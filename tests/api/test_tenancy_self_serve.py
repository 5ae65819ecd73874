"""Self-serve organizations over real HTTP (uvicorn on loopback), on SQLite and PostgreSQL: the identity
webhook (Svix-signed, verified with the `svix` library), first-party login / refresh / reuse detection, the
login rate limit, each role's allowed and forbidden calls, API keys (created once, rotated, revoked — ended
on the very next request), the prepaid ledger (Stripe Checkout top-up, adjustments) and the audit log."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from svix.webhooks import Webhook

from controlplane import ApiKeys, Orgs, Projects
from controlplane.users import Memberships, Users
from tests.api.stripe_stub import WEBHOOK_SECRET, StripeStub, event, sign_webhook
from tests.gateway.conftest import ServerThread

SVIX_SECRET = "whsec_" + "dGVzdC1pZGVudGl0eS13ZWJob29rLXNlY3JldC0xMjM0"  # base64 of a test secret
PASSWORD = "correct-horse-battery"


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch):
    """argon2id still, with small parameters: the defaults take ~0.3 s per hash on these machines."""
    from argon2 import PasswordHasher

    monkeypatch.setattr(
        "controlplane.users._hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


@pytest.fixture
def stripe_stub() -> Iterator[StripeStub]:
    stub = StripeStub()
    yield stub
    stub.close()


@pytest.fixture
def server(make_app, settings, stripe_stub) -> Iterator[httpx.Client]:
    app = make_app(
        settings=settings.replace(
            identity_webhook_secret=SVIX_SECRET,
            login_rate_limit_account="4/minute",
            stripe_api_key="sk_test_joulestream",
            stripe_api_base=stripe_stub.url,
            stripe_webhook_secret=WEBHOOK_SECRET,
        )
    )
    srv = ServerThread(app).start()
    try:
        with httpx.Client(base_url=f"{srv.url}/api/v1", timeout=30) as c:
            yield c
    finally:
        srv.stop()


def bearer(token: str, slug: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **({"X-Org-Slug": slug} if slug else {})}


def svix_post(
    c: httpx.Client, etype: str, data: dict, *, msg_id: str | None = None, secret: str = SVIX_SECRET
):
    body = json.dumps({"type": etype, "object": "event", "data": data})
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    ts = datetime.now(UTC)
    sig = Webhook(secret).sign(msg_id, ts, body)
    headers = {
        "svix-id": msg_id,
        "svix-timestamp": str(int(ts.timestamp())),
        "svix-signature": sig,
        "Content-Type": "application/json",
    }
    return c.post("/auth/webhook", content=body, headers=headers)


def login(c: httpx.Client, email: str, password: str = PASSWORD) -> dict:
    r = c.post("/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    return r.json()


def test_identity_webhook(server, engine):
    c = server
    assert svix_post(c, "user.created", {
        "id": "user_ext_1", "primary_email_address_id": "e1", "first_name": "Ada",
        "email_addresses": [{"id": "e1", "email_address": "ada@example.com"}],
    }).status_code == 200  # fmt: skip
    msg = f"msg_{uuid.uuid4().hex}"
    org_event = {"id": "org_ext_1", "name": "Ada Labs", "slug": "ada-labs", "created_by": "user_ext_1"}
    r = svix_post(c, "organization.created", org_event, msg_id=msg)
    assert r.status_code == 200 and r.json() == {"received": True, "duplicate": False}
    org = Orgs(engine).get_by_slug("ada-labs")
    assert org is not None and org.plan_tier == "free"
    assert [p.name for p in Projects(engine).list(org.id)] == ["Default"]
    ada = Users(engine).by_external_id("user_ext_1")
    assert ada is not None and ada.email == "ada@example.com"
    [m] = Memberships(engine).for_org(org.id)
    assert (m.user_id, m.role, m.is_default) == (ada.id, "admin", True)

    # replayed (same svix-id): acknowledged, nothing applied twice
    r = svix_post(c, "organization.created", org_event, msg_id=msg)
    assert r.status_code == 200 and r.json()["duplicate"] is True
    assert len([o for o in Orgs(engine).list() if o.slug.startswith("ada-labs")]) == 1
    # forged (another secret), missing headers, tampered body: 400, nothing created
    forged = {"id": "org_ext_evil", "name": "Evil", "slug": "evil", "created_by": "user_ext_1"}
    r = svix_post(c, "organization.created", forged, secret="whsec_" + "ZXZpbC1zZWNyZXQtZXZpbC1zZWNyZXQ=")
    assert r.status_code == 400 and r.json()["detail"]
    assert c.post("/auth/webhook", json={"type": "organization.created", "data": forged}).status_code == 400
    ts = datetime.now(UTC)
    sig = Webhook(SVIX_SECRET).sign("msg_t", ts, json.dumps({"type": "x", "data": {}}))
    r = c.post(
        "/auth/webhook",
        content=json.dumps({"type": "organization.created", "data": forged}),
        headers={"svix-id": "msg_t", "svix-timestamp": str(int(ts.timestamp())), "svix-signature": sig},
    )
    assert r.status_code == 400
    headers = {"svix-id": "msg_g", "svix-timestamp": str(int(ts.timestamp())), "svix-signature": "garbage"}
    assert c.post("/auth/webhook", content=b"{}", headers=headers).status_code == 400
    assert Orgs(engine).get_by_slug("evil") is None
    # unknown event type: 200, ignored
    r = svix_post(c, "session.created", {"id": "sess_1"})
    assert r.status_code == 200 and r.json()["received"] is True

    # memberships from the provider: added with the mapped role, then removed
    member_event = {
        "id": "orgmem_1",
        "role": "org:member",
        "organization": {"id": "org_ext_1", "slug": "ada-labs", "name": "Ada Labs"},
        "public_user_data": {"user_id": "user_ext_2", "identifier": "bob@example.com"},
    }
    assert svix_post(c, "organizationMembership.created", member_event).status_code == 200
    bob = Users(engine).by_external_id("user_ext_2")
    assert bob is not None and Memberships(engine).get(org.id, bob.id).role == "member"
    assert svix_post(c, "organizationMembership.deleted", member_event).status_code == 200
    assert Memberships(engine).get(org.id, bob.id) is None
    assert svix_post(c, "user.deleted", {"id": "user_ext_1", "deleted": True}).status_code == 200
    assert Users(engine).active(ada.id) is None and Memberships(engine).for_user(ada.id) == []


def test_login_refresh_and_reuse(server, engine):
    c = server
    user = Users(engine).create("carol@example.com", PASSWORD)
    org = Orgs(engine).create("carol-co")
    Memberships(engine).add(org.id, user.id, "admin", actor="test")
    assert (
        c.post("/auth/login", json={"email": "carol@example.com", "password": "wrong-password"}).status_code
        == 401
    )
    assert (
        c.post("/auth/login", json={"email": "nobody@example.com", "password": PASSWORD}).status_code == 401
    )
    assert c.post("/auth/login", json={"email": "carol@example.com"}).status_code == 422
    first = login(c, "carol@example.com")
    assert first["token_type"] == "bearer" and first["expires_in"] > 0
    r = c.get("/orgs", headers=bearer(first["access_token"]))
    assert r.status_code == 200
    assert r.json()["organizations"] == [
        {"slug": "carol-co", "name": "carol-co", "role": "admin", "is_default": True}
    ]
    # the refresh token is no access token, nor the reverse
    assert c.get("/orgs", headers=bearer(first["refresh_token"])).status_code == 401
    assert c.post("/auth/refresh", json={"refresh_token": first["access_token"]}).status_code == 401

    second = c.post("/auth/refresh", json={"refresh_token": first["refresh_token"]}).json()
    assert second["refresh_token"] != first["refresh_token"]
    assert c.get("/projects", headers=bearer(second["access_token"])).status_code == 200
    # reuse of the spent refresh token: 401, and the whole sign-in is revoked (the newer tokens too)
    r = c.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert r.status_code == 401 and "reuse" in r.json()["detail"]
    assert c.post("/auth/refresh", json={"refresh_token": second["refresh_token"]}).status_code == 401
    assert c.get("/projects", headers=bearer(second["access_token"])).status_code == 401
    # a fresh sign-in works again
    assert (
        c.get("/projects", headers=bearer(login(c, "carol@example.com")["access_token"])).status_code == 200
    )


def test_login_rate_limit(server, engine):
    c = server
    Users(engine).create("dave@example.com", PASSWORD)
    for _ in range(4):  # the per-account limit is 4/minute in this app
        assert (
            c.post("/auth/login", json={"email": "dave@example.com", "password": "not-it-at-all"}).status_code
            == 401
        )
    r = c.post("/auth/login", json={"email": "dave@example.com", "password": PASSWORD})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1 and "account" in r.json()["detail"]
    # another account from the same client is not blocked by dave's
    Users(engine).create("erin@example.com", PASSWORD)
    assert c.post("/auth/login", json={"email": "erin@example.com", "password": PASSWORD}).status_code == 200


def _people(engine, slug: str) -> tuple[str, dict[str, str]]:
    """An org with an admin, a member, a viewer and an outsider (no membership); their user ids."""
    org = Orgs(engine).create(slug)
    Projects(engine).ensure_default_project(org.id)
    ids = {}
    for role in ("admin", "member", "viewer", "outsider"):
        u = Users(engine).create(f"{role}@{slug}.example", PASSWORD)
        ids[role] = u.id
        if role != "outsider":
            Memberships(engine).add(org.id, u.id, role, actor="test")
    return org.id, ids


def test_roles_allowed_and_forbidden(server, engine):
    c = server
    slug = "roles-co"
    org_id, ids = _people(engine, slug)
    tok = {role: login(c, f"{role}@{slug}.example")["access_token"] for role in ids}
    base = f"/orgs/{slug}"
    # (method, path, body) → the roles allowed; every other role gets 403
    calls = [
        ("GET", base, None, {"admin", "member", "viewer"}),
        ("GET", f"{base}/members", None, {"admin", "member", "viewer"}),
        ("GET", f"{base}/balance", None, {"admin", "member", "viewer"}),
        ("GET", f"{base}/transactions", None, {"admin", "member", "viewer"}),
        ("GET", f"{base}/api-keys", None, {"admin"}),
        ("GET", f"{base}/audit-log", None, {"admin"}),
        ("POST", f"{base}/api-keys", {"name": "ci", "scopes": ["ingest"]}, {"admin"}),
        ("POST", f"{base}/balance/adjustments", {"amount_usd": 5, "reason": "welcome credit"}, {"admin"}),
        ("POST", f"{base}/balance/top-up", {"amount_usd": 10}, {"admin"}),
        ("PATCH", f"{base}/members/{ids['viewer']}", {"role": "viewer"}, {"admin"}),
        ("GET", "/projects", None, {"admin", "member", "viewer"}),
        ("POST", "/projects", {"name": "p-{role}"}, {"admin"}),
    ]
    for method, path, body, allowed in calls:
        for role in ("admin", "member", "viewer"):
            b = json.loads(json.dumps(body).replace("{role}", role)) if body else None
            r = c.request(method, path, json=b, headers=bearer(tok[role]))
            if role in allowed:
                assert r.status_code in (200, 201), (method, path, role, r.text)
            else:
                assert r.status_code == 403 and r.json()["detail"], (method, path, role, r.text)
    # the outsider: a valid user without membership → 403 saying so; its org pages are 404
    r = c.get("/projects", headers=bearer(tok["outsider"]))
    assert r.status_code == 403 and "not a member of any organization" in r.json()["detail"]
    assert c.get(base, headers=bearer(tok["outsider"])).status_code == 404
    assert c.get("/orgs", headers=bearer(tok["outsider"])).json() == {"organizations": []}
    r = c.get("/projects", headers=bearer(tok["member"], "some-other-org"))
    assert r.status_code == 403 and "not a member" in r.json()["detail"]

    # members: add by email, change role, the last admin can be neither demoted nor removed (409)
    r = c.post(
        f"{base}/members",
        json={"email": f"outsider@{slug}.example", "role": "viewer"},
        headers=bearer(tok["admin"]),
    )
    assert r.status_code == 201 and r.json()["role"] == "viewer"
    assert c.get("/projects", headers=bearer(tok["outsider"])).status_code == 200  # the next request
    assert (
        c.post(
            f"{base}/members", json={"email": "ghost@nowhere.example"}, headers=bearer(tok["admin"])
        ).status_code
        == 404
    )
    assert (
        c.post(
            f"{base}/members", json={"email": f"member@{slug}.example"}, headers=bearer(tok["admin"])
        ).status_code
        == 409
    )
    assert (
        c.patch(
            f"{base}/members/{ids['admin']}", json={"role": "member"}, headers=bearer(tok["admin"])
        ).status_code
        == 409
    )
    assert c.delete(f"{base}/members/{ids['admin']}", headers=bearer(tok["admin"])).status_code == 409
    assert (
        c.patch(
            f"{base}/members/{ids['member']}", json={"role": "owner"}, headers=bearer(tok["admin"])
        ).status_code
        == 422
    )
    # a role change takes effect on the very next request, with the same token (member → admin → viewer)
    assert c.post("/projects", json={"name": "by member"}, headers=bearer(tok["member"])).status_code == 403
    assert (
        c.patch(
            f"{base}/members/{ids['member']}", json={"role": "admin"}, headers=bearer(tok["admin"])
        ).status_code
        == 200
    )
    assert c.post("/projects", json={"name": "by member"}, headers=bearer(tok["member"])).status_code == 201
    assert (
        c.patch(
            f"{base}/members/{ids['member']}", json={"role": "viewer"}, headers=bearer(tok["admin"])
        ).status_code
        == 200
    )
    assert c.post("/projects", json={"name": "by viewer"}, headers=bearer(tok["member"])).status_code == 403
    # removal too
    assert c.delete(f"{base}/members/{ids['member']}", headers=bearer(tok["admin"])).status_code == 204
    assert c.get("/projects", headers=bearer(tok["member"])).status_code == 403
    assert c.get(base, headers=bearer(tok["member"])).status_code == 404

    # default membership: a second org, switch with PUT /orgs/default; X-Org-Slug picks either
    other = Orgs(engine).create("roles-two")
    Memberships(engine).add(other.id, ids["admin"], "viewer", actor="test")
    orgs = c.get("/orgs", headers=bearer(tok["admin"])).json()["organizations"]
    assert {(o["slug"], o["is_default"]) for o in orgs} == {(slug, True), ("roles-two", False)}
    assert c.put("/orgs/default", json={"slug": "roles-two"}, headers=bearer(tok["admin"])).status_code == 200
    assert (
        c.post("/projects", json={"name": "x"}, headers=bearer(tok["admin"])).status_code == 403
    )  # viewer there
    assert c.post("/projects", json={"name": "x"}, headers=bearer(tok["admin"], slug)).status_code == 201
    assert c.put("/orgs/default", json={"slug": "not-mine"}, headers=bearer(tok["admin"])).status_code == 404

    # the audit log holds who did what, newest first
    log = c.get(f"{base}/audit-log", headers=bearer(tok["admin"], slug)).json()["entries"]
    actions = [e["action"] for e in log]
    for expected in (
        "member.added",
        "member.role_changed",
        "member.removed",
        "api_key.created",
        "balance.adjusted",
    ):
        assert expected in actions, actions
    assert all(e["actor"] for e in log)


def test_api_keys_rotation_and_revocation(server, engine):
    c = server
    slug = "keys-co"
    org_id, ids = _people(engine, slug)
    admin = bearer(login(c, f"admin@{slug}.example")["access_token"])
    r = c.post(f"/orgs/{slug}/api-keys", json={"name": "ci", "scopes": ["read", "admin"]}, headers=admin)
    assert r.status_code == 201
    created = r.json()
    key, key_id = created["key"], created["id"]
    assert key.startswith("js_live_") and created["prefix"] == key[:12]
    listed = c.get(f"/orgs/{slug}/api-keys", headers=admin).json()["api_keys"]
    assert [k["id"] for k in listed] == [key_id] and key not in json.dumps(listed)  # shown once
    assert c.get("/projects", headers=bearer(key)).status_code == 200
    # an org admin key manages its own org's keys; another slug is 404
    assert c.get(f"/orgs/{slug}/api-keys", headers=bearer(key)).status_code == 200
    assert c.get("/orgs/another-org/api-keys", headers=bearer(key)).status_code == 404
    assert (
        c.post(
            f"/orgs/{slug}/api-keys", json={"name": "x", "scopes": ["superuser"]}, headers=admin
        ).status_code
        == 422
    )

    # rotate without grace: the old secret stops on the very next request
    r = c.post(f"/orgs/{slug}/api-keys/{key_id}/rotate", headers=admin)
    assert r.status_code == 200
    new_key, new_id = r.json()["key"], r.json()["id"]
    assert c.get("/projects", headers=bearer(key)).status_code == 401
    assert c.get("/projects", headers=bearer(new_key)).status_code == 200
    # rotate with a grace period: both work during it
    r = c.post(f"/orgs/{slug}/api-keys/{new_id}/rotate", json={"grace_seconds": 3600}, headers=admin)
    third = r.json()["key"]
    assert c.get("/projects", headers=bearer(new_key)).status_code == 200
    assert c.get("/projects", headers=bearer(third)).status_code == 200
    # revoke: ended on the next request; revoking again is idempotent; another org's id is 404
    assert c.delete(f"/orgs/{slug}/api-keys/{r.json()['id']}", headers=admin).status_code == 200
    assert c.get("/projects", headers=bearer(third)).status_code == 401
    assert c.delete(f"/orgs/{slug}/api-keys/{r.json()['id']}", headers=admin).status_code == 200
    assert c.delete(f"/orgs/{slug}/api-keys/{uuid.uuid4()}", headers=admin).status_code == 404
    actions = [e["action"] for e in c.get(f"/orgs/{slug}/audit-log", headers=admin).json()["entries"]]
    assert actions.count("api_key.rotated") == 2 and actions.count("api_key.revoked") == 1
    assert "api_key.created" in actions


def test_balance_top_up_and_adjustments(server, engine, stripe_stub):
    c = server
    slug = "money-co"
    org_id, ids = _people(engine, slug)
    admin = bearer(login(c, f"admin@{slug}.example")["access_token"])
    assert c.get(f"/orgs/{slug}/balance", headers=admin).json() == {
        "prepaid": False, "balance_micros": 0, "balance_usd": 0.0, "currency": "usd",
    }  # fmt: skip
    r = c.post(f"/orgs/{slug}/balance/top-up", json={"amount_usd": 25}, headers=admin)
    assert r.status_code == 200 and r.json()["checkout_url"].startswith("https://checkout.stripe.test/")
    session_id = r.json()["session_id"]
    path, form, _ = stripe_stub.requests[-1]
    assert path == "/v1/checkout/sessions" and form["mode"] == "payment" and form["metadata[kind]"] == "topup"
    assert c.post(f"/orgs/{slug}/balance/top-up", json={"amount_usd": 0.5}, headers=admin).status_code == 422
    # Stripe says it is paid: credited once, even when the webhook is delivered twice
    obj = {"id": session_id, "object": "checkout.session", "payment_status": "paid", "amount_total": 2500,
           "customer": Orgs(engine).get(org_id).stripe_customer_id, "metadata": {"org_id": org_id, "kind": "topup"}}  # fmt: skip
    for _ in range(2):
        body = event("checkout.session.completed", obj)
        r = c.post("/billing/webhook", content=body, headers={"Stripe-Signature": sign_webhook(body)})
        assert r.status_code == 200
    assert c.get(f"/orgs/{slug}/balance", headers=admin).json()["balance_micros"] == 25_000_000
    r = c.post(
        f"/orgs/{slug}/balance/adjustments",
        json={"amount_usd": -5, "reason": "refund of a test"},
        headers=admin,
    )
    assert r.status_code == 201 and r.json()["balance_micros"] == 20_000_000
    assert (
        c.post(f"/orgs/{slug}/balance/adjustments", json={"amount_usd": 5}, headers=admin).status_code == 422
    )
    txs = c.get(f"/orgs/{slug}/transactions", headers=admin).json()
    assert sorted((t["kind"], t["amount_micros"]) for t in txs["transactions"]) == [
        ("adjustment", -5_000_000), ("topup", 25_000_000),
    ]  # fmt: skip
    assert txs["pagination"]["total_items"] == 2
    log = c.get(f"/orgs/{slug}/audit-log", headers=admin).json()["entries"]
    assert [e["action"] for e in log][:2] == ["balance.adjusted", "balance.topped_up"]
    assert log[0]["detail"]["reason"] == "refund of a test"


def test_api_key_of_cli_org_and_key_cross_org(server, engine):
    """Keys made with the CLI still work, and reach only their own org's /orgs pages."""
    c = server
    a, b = Orgs(engine).create("cli-a"), Orgs(engine).create("cli-b")
    key_a = ApiKeys(engine).create(a.id, ["read", "admin"])[1]
    assert c.get("/orgs", headers=bearer(key_a)).json()["organizations"][0]["slug"] == "cli-a"
    assert c.get("/orgs/cli-a/members", headers=bearer(key_a)).status_code == 200
    for path in ("/orgs/cli-b", "/orgs/cli-b/members", "/orgs/cli-b/api-keys", "/orgs/cli-b/balance"):
        assert c.get(path, headers=bearer(key_a)).status_code == 404, path
    assert c.put("/orgs/default", json={"slug": "cli-a"}, headers=bearer(key_a)).status_code == 400
    assert b.id not in c.get("/orgs", headers=bearer(key_a)).text
