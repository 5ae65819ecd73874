"""The gateway and the API over real HTTP on one control plane (SQLite and PostgreSQL), with the gateway's
auth cache ON (300 s): a key revoked or rotated, a role changed, a membership removed through the API take
effect on the very next gateway request (the revocation counter), with no sleep; the gateway accepts
first-party JWTs with the API's org resolution (X-Org-Slug with a membership check, else the default
membership; none → 403 saying so)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from api.app import create_app
from controlplane import get_engine, upgrade
from controlplane.users import Memberships, Users
from tests.fixtures_controlplane import jwks  # noqa: F401  (fixture)
from tests.gateway.conftest import ServerThread

Q = [{"role": "user", "content": "What is 2+2?"}]
PASSWORD = "gateway-user-password"
SECRET = "gateway-and-api-share-this-auth-secret"


@pytest.fixture
def cp_engine(db_url: str) -> Any:  # this module's control plane: SQLite and PostgreSQL
    engine = get_engine(db_url)
    upgrade(engine)
    return engine


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch):
    from argon2 import PasswordHasher

    monkeypatch.setattr(
        "controlplane.users._hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


@pytest.fixture
def both(make_gateway, stack, tenants) -> Iterator[tuple[Any, httpx.Client]]:
    settings = stack.settings.replace(auth_secret=SECRET)
    gw = make_gateway("auth_cache_ttl_s: 300\n", settings=settings)
    api = ServerThread(create_app(settings, engine=tenants.engine)).start()
    try:
        with httpx.Client(base_url=f"{api.url}/api/v1", timeout=30) as c:
            yield gw, c
    finally:
        api.stop()


def chat(gw, token: str, slug: str | None = None) -> httpx.Response:
    headers = {"X-Org-Slug": slug} if slug else {}
    return gw.http(
        "POST", "/v1/chat/completions", key=token, headers=headers, json={"model": "auto", "messages": Q}
    )


def login(c: httpx.Client, email: str) -> str:
    r = c.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_revocation_rotation_roles_and_removal_on_the_next_request(both):
    gw, c = both
    t = gw.tenants
    engine, org = t.engine, t.org_a
    admin = Users(engine).create("admin@acme.example", PASSWORD)
    member = Users(engine).create("member@acme.example", PASSWORD)
    Users(engine).create("loner@acme.example", PASSWORD)
    Memberships(engine).add(org.id, admin.id, "admin", actor="test")
    Memberships(engine).add(org.id, member.id, "member", actor="test")
    admin_h = auth(login(c, "admin@acme.example"))

    # an API key made through the API: works at the gateway (now cached), revoked → 401 on the next request
    made = c.post(
        f"/orgs/{org.slug}/api-keys", json={"name": "gw", "scopes": ["ingest"]}, headers=admin_h
    ).json()
    for _ in range(2):
        assert chat(gw, made["key"]).status_code == 200
    assert c.delete(f"/orgs/{org.slug}/api-keys/{made['id']}", headers=admin_h).status_code == 200
    r = chat(gw, made["key"])
    assert r.status_code == 401 and r.json()["error"]["message"]
    # a key made with the CLI's repository (t.key_a) is cached too; rotation ends it on the next request
    assert chat(gw, t.key_a).status_code == 200
    key_id = next(k["id"] for k in c.get(f"/orgs/{org.slug}/api-keys", headers=admin_h).json()["api_keys"]
                  if k["prefix"] == t.key_a[:12])  # fmt: skip
    rotated = c.post(f"/orgs/{org.slug}/api-keys/{key_id}/rotate", headers=admin_h).json()
    assert chat(gw, t.key_a).status_code == 401
    assert chat(gw, rotated["key"]).status_code == 200
    # X-Org-Slug with a key of another org: 403
    assert chat(gw, rotated["key"], t.org_b.slug).status_code == 403

    # a signed-in member calls models with its access token (org: its default membership)
    member_token = login(c, "member@acme.example")
    r = chat(gw, member_token)
    assert r.status_code == 200
    rid = r.headers["x-receipt-id"]
    gw.wait_receipts_stored()
    receipt = gw.http("GET", f"/v1/receipts/{rid}", key=member_token).json()["payload"]
    assert receipt["org_id"] == org.id
    assert chat(gw, member_token, org.slug).status_code == 200
    r = chat(gw, member_token, t.org_b.slug)  # not a member there
    assert r.status_code == 403 and t.org_b.slug in r.json()["error"]["message"]
    # a user without any membership: 403 that says so
    r = chat(gw, login(c, "loner@acme.example"))
    assert r.status_code == 403 and "not a member of any organization" in r.json()["error"]["message"]
    # role change through the API (member → viewer: no `ingest`): the very next request is refused
    r = c.patch(f"/orgs/{org.slug}/members/{member.id}", json={"role": "viewer"}, headers=admin_h)
    assert r.status_code == 200
    r = chat(gw, member_token)
    assert r.status_code == 403 and "ingest" in r.json()["error"]["message"]
    assert gw.http("GET", f"/v1/receipts/{rid}", key=member_token).status_code == 200  # viewers may read
    # membership removed: the very next request is refused, at the gateway and at the API
    assert c.delete(f"/orgs/{org.slug}/members/{member.id}", headers=admin_h).status_code == 204
    r = chat(gw, member_token)
    assert r.status_code == 403 and "not a member" in r.json()["error"]["message"]
    assert c.get("/projects", headers=auth(member_token)).status_code == 403
    # re-added: the next request works again (a cached refusal ends too)
    assert (
        c.post(
            f"/orgs/{org.slug}/members", json={"email": "member@acme.example"}, headers=admin_h
        ).status_code
        == 201
    )
    assert chat(gw, member_token).status_code == 200
    # a bad token is 401 at the gateway
    assert chat(gw, member_token[:-4] + "AAAA").status_code == 401


def test_prepaid_allowance_ledger_and_balance(both):
    """Requests reserve against an in-memory allowance; the spend lands in the ledger as one debit row for
    the hour; at shutdown the unused allowance goes back, so balance = top-ups - spend exactly."""
    import time

    gw, c = both
    t = gw.tenants
    engine, org = t.engine, t.org_a
    admin = Users(engine).create("payer@acme.example", PASSWORD)
    Memberships(engine).add(org.id, admin.id, "admin", actor="test")
    h = auth(login(c, "payer@acme.example"))
    r = c.post(
        f"/orgs/{org.slug}/balance/adjustments", json={"amount_usd": 5, "reason": "trial credit"}, headers=h
    )
    assert r.status_code == 201
    prices = []
    for _ in range(6):
        r = chat(gw, t.key_a)
        assert r.status_code == 200
        prices.append(r.headers["x-receipt-id"])
    gw.wait_receipts_stored()
    prices = [gw.http("GET", f"/v1/receipts/{rid}").json()["payload"]["price_usd_micros"] for rid in prices]
    assert all(p > 0 for p in prices)
    deadline = time.monotonic() + 10
    debits: list = []
    while time.monotonic() < deadline:  # the ledger is written in the background, batched
        txs = c.get(f"/orgs/{org.slug}/transactions", headers=h).json()["transactions"]
        debits = [x for x in txs if x["kind"] == "debit"]
        if debits and debits[0]["requests"] == len(prices):
            break
        time.sleep(0.05)
    assert [(d["amount_micros"], d["requests"]) for d in debits] == [(-sum(prices), len(prices))]
    gw.server.stop()  # graceful: the allowance this process held goes back to the balance
    assert c.get(f"/orgs/{org.slug}/balance", headers=h).json()["balance_micros"] == 5_000_000 - sum(prices)


def test_identity_provider_jwts_at_the_gateway(make_gateway, stack, tenants, jwks):  # noqa: F811
    """With JWT auth configured, the gateway takes the identity provider's tokens like the API does: a
    user the webhook created acts through its memberships (removal ends it on the next request), another
    through the token's org claims."""
    from tests.fixtures_controlplane import AUDIENCE, ISSUER

    settings = stack.settings.replace(
        auth_secret=SECRET, jwt_jwks_url=jwks.url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE
    )
    gw = make_gateway("auth_cache_ttl_s: 300\n", settings=settings)
    engine, org = tenants.engine, tenants.org_a
    user = Users(engine).upsert_external("user_webhook_1", "hook@acme.example", None)
    Memberships(engine).add(org.id, user.id, "member", actor="test")
    token = jwks.token(sub="user_webhook_1")
    assert chat(gw, token).status_code == 200
    Memberships(engine).remove(org.id, user.id, actor="test")
    r = chat(gw, token)
    assert r.status_code == 403 and "not a member" in r.json()["error"]["message"]
    # not known to the control plane: its claims decide (org, scopes)
    claims = jwks.token(sub="user_claims_1", org_slug=tenants.org_b.slug, scope="openid ingest")
    assert chat(gw, claims).status_code == 200
    r = chat(gw, claims, org.slug)
    assert r.status_code == 403
    assert (
        chat(gw, jwks.token(sub="user_claims_1", org_slug=tenants.org_b.slug, scope="read")).status_code
        == 403
    )
    assert chat(gw, jwks.token(sub="x", exp=1)).status_code == 401
