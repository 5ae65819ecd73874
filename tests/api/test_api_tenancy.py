"""Tenancy, generated from the app's route list: with org B's credentials, no route reveals or changes org
A's data — another org's id is 404, lists are B's own.

Every route must be classified in ROUTES; the test fails when a route is added without an entry (or an
entry outlives its route), so a new endpoint cannot skip the tenancy check.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert

try:  # FastAPI >= 0.13x includes routers lazily; this flattens them
    from fastapi.routing import iter_route_contexts
except ImportError:  # older FastAPI: app.routes is already flat

    def iter_route_contexts(routes):
        return routes


from controlplane import ApiKeys, Orgs, Projects, Workloads
from controlplane.billing import Credits, Receipts
from controlplane.connections import Connections
from controlplane.gateway import Balances
from controlplane.gpu_targets import GpuTargetIn, GpuTargets
from controlplane.ledger import Ledger
from controlplane.prices import PriceOverrides
from controlplane.recommendations import Recommendations
from controlplane.schema import external_orgs
from controlplane.users import Memberships, Users
from core.insights import Finding
from core.secrets import LocalSecretStore
from tests.api.stripe_stub import WEBHOOK_SECRET, StripeStub, event, sign_webhook
from tests.fixtures_api import bearer, client_for
from tests.orchestration.helpers import INVENTORY_CSV, now_iso, pipeline_usage
from tests.pollers.stubs import ADMIN_KEYS, OpenRouterStub

pytestmark = pytest.mark.anyio

PUBLIC = "public"  # no auth, no org data (health, docs, methodology)
GLOBAL = "global"  # authenticated, but not org data (carbon factor versions)
ORG_LIST = "org_list"  # lists the caller's org data: B sees none of A's
ORG_CREATE = "org_create"  # creates in the caller's org: nothing appears in A
ORG_ITEM = "org_item"  # addresses one org object by id: A's id with B's key is 404 and changes nothing
ORG_SELF = "org_self"  # acts on the caller's own org, no id in the request (billing upgrade / portal): 200
#                        for B, and neither the answer nor what it sends on (to Stripe) names anything of A;
#                        A is unchanged
PUBLIC_ITEM = "public_item"  # no auth, addresses one object by its public identifier (a receipt serial): 200
#                              for A's object, with none of A's org data (only the identifier itself)
OPERATOR = "operator"  # the operator token (JOULESTREAM_METRICS_TOKEN), not an org's key: 200 for it, and no
#                        org's data in the answer (per-org series are off by default)
SIGNED = "signed"  # no API key, authenticated by a signature over the body (the Stripe webhook): a forged
#                    event naming A's Stripe customer is 400 with `detail` and changes nothing of A; a
#                    correctly signed one is acknowledged (200) without echoing org data
SIGNED_IDENTITY = "signed_identity"  # the identity provider's webhook (Svix signature): a forged event adding
#                    a user to A's org is 400 and changes nothing of A; a signed unknown event is 200
SESSION = "session"  # no auth header, a credential in the body (B's password, B's refresh token): 200 with
#                      B's tokens only

STATIC = "static"  # no auth, the dashboard's own files (no org data): 200, or a redirect to them
LINK = (
    "link"  # no API key, a one-time sign-in link token (the dashboard): an unknown one is 401 naming nothing
)

ROUTES: dict[tuple[str, str], tuple[str, dict | None]] = {
    ("GET", "/"): (STATIC, None),
    ("GET", "/app"): (STATIC, None),
    ("GET", "/app/"): (STATIC, None),
    ("*", "/app/static"): (STATIC, None),
    ("POST", "/api/v1/dashboard/sign-in"): (LINK, {"token": "not-a-link-of-anyone"}),
    ("GET", "/api/v1/dashboard/session"): (ORG_SELF, None),
    ("POST", "/api/v1/dashboard/sign-out"): (ORG_SELF, None),
    ("GET", "/health"): (PUBLIC, None),
    ("GET", "/api/v1/health"): (PUBLIC, None),
    ("GET", "/api/v1/openapi.json"): (PUBLIC, None),
    ("GET", "/api/v1/docs"): (PUBLIC, None),
    ("GET", "/api/v1/docs/oauth2-redirect"): (PUBLIC, None),
    ("GET", "/api/v1/methodology"): (PUBLIC, None),
    ("GET", "/api/v1/carbon-factors"): (GLOBAL, None),
    ("GET", "/api/v1/carbon-factors/current"): (GLOBAL, None),
    ("GET", "/api/v1/carbon-factors/{version}"): (GLOBAL, None),
    ("GET", "/api/v1/projects"): (ORG_LIST, None),
    ("POST", "/api/v1/projects"): (ORG_CREATE, {"name": "Created by B"}),
    ("GET", "/api/v1/projects/{project_id}"): (ORG_ITEM, None),
    ("PATCH", "/api/v1/projects/{project_id}"): (ORG_ITEM, {"name": "Hijacked by B"}),
    ("DELETE", "/api/v1/projects/{project_id}"): (ORG_ITEM, None),
    ("GET", "/api/v1/telemetry/summary"): (ORG_LIST, None),
    ("GET", "/api/v1/telemetry/events"): (ORG_LIST, None),
    ("GET", "/api/v1/telemetry/models"): (ORG_LIST, None),
    ("GET", "/api/v1/export/telemetry"): (ORG_LIST, None),
    ("GET", "/api/v1/metrics"): (ORG_LIST, None),
    ("GET", "/api/v1/metrics/summary"): (ORG_LIST, None),
    ("GET", "/api/v1/metrics/timeseries"): (ORG_LIST, None),
    ("GET", "/api/v1/metrics/by-project"): (ORG_LIST, None),
    ("GET", "/api/v1/metrics/top-models"): (ORG_LIST, None),
    ("GET", "/api/v1/metrics/dashboard-summary"): (ORG_LIST, None),
    ("GET", "/api/v1/metrics/dashboard-timeseries/{window_slug}"): (ORG_LIST, None),
    ("POST", "/api/v1/metrics/dashboard-summary/refresh"): (ORG_SELF, None),
    ("GET", "/api/v1/report/summary"): (ORG_LIST, None),
    ("GET", "/api/v1/report/export"): (ORG_LIST, None),
    ("GET", "/api/v1/connections"): (ORG_LIST, None),
    ("POST", "/api/v1/connections"): (
        ORG_CREATE,
        {"provider": "openrouter", "api_key": ADMIN_KEYS["openrouter"]},
    ),
    ("GET", "/api/v1/connections/{connection_id}"): (ORG_ITEM, None),
    ("DELETE", "/api/v1/connections/{connection_id}"): (ORG_ITEM, None),
    ("POST", "/api/v1/connections/{connection_id}/sync"): (ORG_ITEM, None),
    ("PUT", "/api/v1/connections/{connection_id}/project"): (ORG_ITEM, {"project_id": "x"}),
    ("GET", "/api/v1/billing/status"): (ORG_LIST, None),
    ("POST", "/api/v1/billing/upgrade"): (ORG_SELF, {"plan": "scale"}),
    ("POST", "/api/v1/billing/portal"): (ORG_SELF, None),
    ("POST", "/api/v1/billing/webhook"): (SIGNED, None),
    ("GET", "/api/v1/receipts"): (ORG_LIST, None),
    ("GET", "/api/v1/receipts/{receipt_id}/pdf"): (ORG_ITEM, None),
    ("GET", "/api/v1/export/audit-pack/{year}/{month}"): (ORG_ITEM, None),
    ("GET", "/public/receipts/verify/{serial_number}"): (PUBLIC_ITEM, None),
    ("GET", "/api/v1/price-overrides"): (ORG_LIST, None),
    ("PUT", "/api/v1/price-overrides"): (
        ORG_CREATE,
        {"model_pattern": "b-model*", "input": 1, "cached_input": 0.1, "cache_write": 1, "output": 2},
    ),
    ("GET", "/api/v1/price-overrides/{override_id}"): (ORG_ITEM, None),
    ("DELETE", "/api/v1/price-overrides/{override_id}"): (ORG_ITEM, None),
    ("GET", "/api/v1/recommendations"): (ORG_LIST, None),
    ("GET", "/api/v1/recommendations/active"): (ORG_LIST, None),
    ("GET", "/api/v1/recommendations/top"): (ORG_LIST, None),
    ("GET", "/api/v1/recommendations/ignored"): (ORG_LIST, None),
    ("GET", "/api/v1/recommendations/applied"): (ORG_LIST, None),
    ("GET", "/api/v1/recommendations/history"): (ORG_LIST, None),
    ("GET", "/api/v1/recommendations/savings"): (ORG_LIST, None),
    ("POST", "/api/v1/recommendations/savings/record"): (ORG_SELF, None),
    ("PATCH", "/api/v1/recommendations/{rec_id}/apply"): (ORG_ITEM, None),
    ("PATCH", "/api/v1/recommendations/{rec_id}/ignore"): (ORG_ITEM, None),
    ("DELETE", "/api/v1/recommendations/{rec_id}/ignore"): (ORG_ITEM, None),
    ("GET", "/api/v1/sustainability"): (ORG_LIST, None),
    ("GET", "/api/v1/calibration"): (ORG_LIST, None),
    ("GET", "/api/v1/gpu-targets"): (ORG_LIST, None),
    ("POST", "/api/v1/gpu-targets"): (
        ORG_CREATE,
        {"name": "B's node", "prometheus_url": "http://127.0.0.1:9/prom", "provider": "aws"},
    ),
    ("GET", "/api/v1/gpu-targets/{target_id}"): (ORG_ITEM, None),
    ("DELETE", "/api/v1/gpu-targets/{target_id}"): (ORG_ITEM, None),
    ("GET", "/api/v1/version"): (GLOBAL, None),
    ("GET", "/api/v1/config"): (GLOBAL, None),
    ("GET", "/prometheus/metrics"): (OPERATOR, None),
    ("POST", "/api/v1/auth/login"): (SESSION, None),
    ("POST", "/api/v1/auth/refresh"): (SESSION, None),
    ("POST", "/api/v1/auth/webhook"): (SIGNED_IDENTITY, None),
    ("GET", "/api/v1/orgs"): (ORG_LIST, None),
    ("PUT", "/api/v1/orgs/default"): (ORG_ITEM, {"slug": "{slug}"}),
    ("GET", "/api/v1/orgs/{slug}"): (ORG_ITEM, None),
    ("GET", "/api/v1/orgs/{slug}/members"): (ORG_ITEM, None),
    ("POST", "/api/v1/orgs/{slug}/members"): (ORG_ITEM, {"email": "b-user@tenancy.example", "role": "admin"}),
    ("PATCH", "/api/v1/orgs/{slug}/members/{user_id}"): (ORG_ITEM, {"role": "viewer"}),
    ("DELETE", "/api/v1/orgs/{slug}/members/{user_id}"): (ORG_ITEM, None),
    ("GET", "/api/v1/orgs/{slug}/api-keys"): (ORG_ITEM, None),
    ("POST", "/api/v1/orgs/{slug}/api-keys"): (ORG_ITEM, {"name": "by B", "scopes": ["admin"]}),
    ("POST", "/api/v1/orgs/{slug}/api-keys/{key_id}/rotate"): (ORG_ITEM, None),
    ("DELETE", "/api/v1/orgs/{slug}/api-keys/{key_id}"): (ORG_ITEM, None),
    ("GET", "/api/v1/orgs/{slug}/audit-log"): (ORG_ITEM, None),
    ("GET", "/api/v1/orgs/{slug}/balance"): (ORG_ITEM, None),
    ("GET", "/api/v1/orgs/{slug}/transactions"): (ORG_ITEM, None),
    ("POST", "/api/v1/orgs/{slug}/balance/top-up"): (ORG_ITEM, {"amount_usd": 10}),
    ("POST", "/api/v1/orgs/{slug}/balance/adjustments"): (ORG_ITEM, {"amount_usd": 99, "reason": "by B"}),
}
B_USER_EMAIL, B_USER_PASSWORD = "b-user@tenancy.example", "b-user-password-123"
SVIX_SECRET = "whsec_dGVuYW5jeS10ZXN0LWlkZW50aXR5LXNlY3JldA=="
METRICS_TOKEN = "operator-metrics-token"


@dataclass
class OrgA:
    org_id: str
    slug: str
    project_id: str
    project_name: str
    workload_ref: str
    connection_id: str
    stripe_customer_id: str
    receipt_id: str
    receipt_serial: str  # public by design (the verification endpoint), so a marker everywhere else
    audit_pack_month: tuple[int, int]
    price_override_id: str
    recommendation_id: str
    gpu_target_id: str = ""
    user_id: str = ""  # A's admin (a user of the control plane)
    key_id: str = ""  # one of A's API keys

    def markers(self) -> list[str]:
        return [
            self.user_id,
            self.key_id,
            self.org_id,
            self.slug,
            self.project_id,
            self.project_name,
            self.workload_ref,
            self.connection_id,
            self.stripe_customer_id,
            self.receipt_id,
            self.receipt_serial,
            self.price_override_id,
            self.recommendation_id,
            self.gpu_target_id,
        ]


def _app_routes(app) -> set[tuple[str, str]]:
    """(method, path) of every route; anything without methods (a mount, a websocket) is ("*", path) and
    must be classified too."""
    out = set()
    for route in iter_route_contexts(app.routes):
        methods = getattr(route, "methods", None)
        if methods:
            out |= {(m, route.path) for m in methods if m != "HEAD"}
        else:
            out.add(("*", getattr(route, "path", repr(route))))
    return out


def _path_value(name: str, a: OrgA) -> str:
    values = {
        "project_id": a.project_id,
        "version": "v1.0",
        "connection_id": a.connection_id,
        "receipt_id": a.receipt_id,
        "year": str(a.audit_pack_month[0]),
        "month": str(a.audit_pack_month[1]),
        "serial_number": a.receipt_serial,
        "override_id": a.price_override_id,
        "window_slug": "1y",
        "rec_id": a.recommendation_id,
        "target_id": a.gpu_target_id,
        "slug": a.slug,
        "user_id": a.user_id,
        "key_id": a.key_id,
    }
    assert name in values, f"path parameter {{{name}}} has no tenancy value: add it to _path_value"
    return values[name]


def _svix(body: dict, secret: str | None) -> dict[str, str]:
    """Svix headers for `json.dumps(body)`; without a secret, none (an unsigned request)."""
    from svix.webhooks import Webhook

    if secret is None:
        return {}
    ts = datetime.now(UTC)
    msg = f"msg_{uuid.uuid4().hex}"
    sig = Webhook(secret).sign(msg, ts, json.dumps(body))
    return {"svix-id": msg, "svix-timestamp": str(int(ts.timestamp())), "svix-signature": sig}


def _fill(path: str, a: OrgA) -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: _path_value(m.group(1), a), path)


def test_every_route_is_classified(make_app):
    app = make_app()
    routes = _app_routes(app)
    assert routes - ROUTES.keys() == set(), "unclassified routes: add them to ROUTES in test_api_tenancy.py"
    assert ROUTES.keys() - routes == set(), "ROUTES lists routes that no longer exist"
    for (_, path), (kind, _) in ROUTES.items():
        # a route addressing an object must be an org item, global or public by design ({window_slug} names a
        # fixed window — 24h … ytd —, not an object: a list of the caller's own figures)
        if "{" in path.replace("{window_slug}", ""):
            assert kind in (ORG_ITEM, GLOBAL, PUBLIC_ITEM), path
        if kind == PUBLIC_ITEM:  # public objects live outside the authenticated API
            assert path.startswith("/public/"), path


def _close_september_for(org_id: str, engine, warehouse, settings, db_url) -> tuple[str, str]:
    """A real receipt and audit pack for the org, as tests/api/test_receipts.py makes them: pipeline-made
    September usage, closed by the Dagster job. Returns (receipt id, serial number)."""
    from orchestration.definitions import run_close
    from orchestration.resources import (
        ArtifactsResource,
        ControlPlaneResource,
        SigningResource,
        WarehouseResource,
    )

    client, database = warehouse
    Credits(engine).load_csv(INVENTORY_CSV)
    pipeline_usage(client, [org_id], datetime(2026, 9, 1, tzinfo=UTC), 30)
    home = str(settings.home)
    result = run_close(
        "2026-09",
        cutoff=now_iso(),
        warehouse=WarehouseResource(database=database, home=home),
        controlplane=ControlPlaneResource(database_url=db_url),
        artifacts=ArtifactsResource(home=home),
        signing=SigningResource(home=home),
    )
    assert result.success
    items, total = Receipts(engine).list(org_id, None, None, offset=0, limit=10)
    assert total == 1 and items[0].pdf_key and items[0].audit_pack_key
    return items[0].id, items[0].serial_number


@pytest.fixture
def stripe_stub():
    stub = StripeStub()
    yield stub
    stub.close()


async def test_org_b_never_sees_org_a(make_app, engine, tenants, warehouse, settings, db_url, stripe_stub):
    a_t, b_t = tenants
    orgs = Orgs(engine)
    name = f"Secret-A-{uuid.uuid4().hex[:8]}"
    project = Projects(engine).create(a_t.org.id, name)
    Workloads(engine).create(a_t.org.id, project.id, "connection", "conn-secret-a")
    conn_a = Connections(engine).create(a_t.org.id, "openai", "local:v1:00000000:AAAA", project.id)
    # both orgs on a paid plan (so B's receipts and audit packs answer for B, not "upgrade first"), each with
    # its own Stripe customer; only A has a closed month with a receipt and an audit pack
    orgs.set_plan(a_t.org.id, "growth")
    orgs.set_plan(b_t.org.id, "growth")
    a_customer, b_customer = f"cus_secret_a_{uuid.uuid4().hex[:8]}", f"cus_b_{uuid.uuid4().hex[:8]}"
    orgs.set_stripe_customer(a_t.org.id, a_customer)
    orgs.set_stripe_customer(b_t.org.id, b_customer)
    receipt_id, serial = _close_september_for(a_t.org.id, engine, warehouse, settings, db_url)
    override, _ = PriceOverrides(engine).put(
        a_t.org.id, "secret-a-model*", input=1.0, cached_input=0.5, cache_write=1.0, output=3.0
    )
    [rec] = Recommendations(engine).sync(
        a_t.org.id,
        [
            Finding("DATA_QUALITY", "org", "estimated_share", None, None, "high", "secret-a finding", 0.0, None,
                    {"events": 1})
        ],
        datetime.now(UTC),
    )  # fmt: skip
    a = OrgA(
        a_t.org.id,
        a_t.org.slug,
        project.id,
        name,
        "conn-secret-a",
        conn_a.id,
        a_customer,
        receipt_id,
        serial,
        (2026, 9),
        override.id,
        rec.id,
        GpuTargets(engine)
        .create(
            a_t.org.id,
            GpuTargetIn(name="secret-a-node", prometheus_url="http://127.0.0.1:9/prom", provider="aws"),
        )
        .id,
    )
    # A's people and keys as the self-serve routes know them: an admin user (known to the identity provider),
    # its org linked to the provider's org id, a key id; A has a prepaid balance
    a_admin = Users(engine).create("a-admin@tenancy.example", "a-admin-password-1", external_id="user_ext_a")
    Memberships(engine).add(a_t.org.id, a_admin.id, "admin", actor="test")
    with engine.begin() as conn:
        conn.execute(insert(external_orgs).values(external_id="org_ext_a", org_id=a_t.org.id))
    a.user_id, a.key_id = a_admin.id, ApiKeys(engine).list(a_t.org.id)[0].id
    Ledger(engine).top_up(a_t.org.id, 7_000_000, actor="test")
    b_user = Users(engine).create(B_USER_EMAIL, B_USER_PASSWORD)
    Memberships(engine).add(b_t.org.id, b_user.id, "admin", actor="test")
    a_members_before = Memberships(engine).for_org(a_t.org.id)

    def key_states(org_id: str) -> list[tuple]:
        return [(k.id, k.revoked_at, k.expires_at) for k in ApiKeys(engine).list(org_id)]

    a_keys_before = key_states(a_t.org.id)
    # B's most privileged key: read + admin + billing
    b_headers = bearer(ApiKeys(engine).create(b_t.org.id, ["read", "admin", "billing"], name="b-all")[1])
    app = make_app(
        settings=settings.replace(
            stripe_api_key="sk_test_joulestream",
            stripe_api_base=stripe_stub.url,
            stripe_webhook_secret=WEBHOOK_SECRET,
            stripe_prices="starter=price_s,growth=price_g,scale=price_x",
            metrics_token=METRICS_TOKEN,
            identity_webhook_secret=SVIX_SECRET,
        ),
        warehouse_client_factory=lambda: warehouse[0],  # A's closed September is in it
    )
    stub = OpenRouterStub().start()  # B's POST /connections validates its key against a local stub
    stub.keys[ADMIN_KEYS["openrouter"]] = "admin"
    app.state.ctx.extras.update(
        secret_store=LocalSecretStore(b"k" * 32), provider_base_urls={"openrouter": stub.url}
    )
    a_org_before = orgs.get(a.org_id)

    async with client_for(app) as c:
        a_before = (await c.get(f"/api/v1/projects/{a.project_id}", headers=a_t.h)).json()
        a_list_before = (await c.get("/api/v1/projects", headers=a_t.h)).json()["projects"]
        a_receipts_before = (await c.get("/api/v1/receipts", headers=a_t.h)).json()["receipts"]
        assert [r["id"] for r in a_receipts_before] == [a.receipt_id]

        for (method, path), (kind, body) in sorted(ROUTES.items()):
            url = _fill(path, a) + ("/app.js" if method == "*" else "")
            method = "GET" if method == "*" else method
            headers = (
                {}
                if kind in (PUBLIC, PUBLIC_ITEM, SIGNED, SIGNED_IDENTITY, SESSION, STATIC, LINK)
                else b_headers
            )
            if isinstance(body, dict):
                body = {k: _fill(v, a) if isinstance(v, str) else v for k, v in body.items()}
            where = f"{method} {path} ({kind})"
            if kind == OPERATOR:  # an org's key is no operator credential
                assert (await c.request(method, url, headers=b_headers)).status_code == 401, where
                headers = bearer(METRICS_TOKEN)
            if kind == SIGNED:
                forged = event(
                    "customer.subscription.deleted",
                    {"id": "sub_a", "object": "subscription", "customer": a.stripe_customer_id},
                )
                for sig in (None, sign_webhook(forged, secret="whsec_not_stripes")):
                    h = {"Content-Type": "application/json", **({"Stripe-Signature": sig} if sig else {})}
                    r = await c.request(method, url, content=forged, headers=h)
                    assert r.status_code == 400 and r.json()["detail"], where
                signed = event(
                    "charge.refunded", {"id": "ch_b", "object": "charge", "customer": "cus_nobody"}
                )
                h = {"Content-Type": "application/json", "Stripe-Signature": sign_webhook(signed)}
                r = await c.request(method, url, content=signed, headers=h)
            elif kind == SIGNED_IDENTITY:
                forged = {
                    "type": "organizationMembership.created",
                    "data": {
                        "id": "orgmem_forged",
                        "role": "org:admin",
                        "organization": {"id": "org_ext_a", "slug": a.slug},
                        "public_user_data": {"user_id": "user_ext_b", "identifier": B_USER_EMAIL},
                    },
                }
                for secret in (None, "whsec_Zm9yZ2VkLXNlY3JldC1mb3JnZWQtc2VjcmV0"):
                    r = await c.request(
                        method, url, headers=_svix(forged, secret), content=json.dumps(forged)
                    )
                    assert r.status_code == 400 and r.json()["detail"], where
                signed = {"type": "email.created", "data": {"id": "ema_1"}}
                r = await c.request(
                    method, url, headers=_svix(signed, SVIX_SECRET), content=json.dumps(signed)
                )
            elif kind == SESSION:
                r = await c.post(
                    "/api/v1/auth/login", json={"email": B_USER_EMAIL, "password": B_USER_PASSWORD}
                )
                if path.endswith("/refresh"):
                    r = await c.post(url, json={"refresh_token": r.json()["refresh_token"]})
            else:
                r = await c.request(method, url, headers=headers, json=body)
            if kind == ORG_ITEM:
                assert r.status_code == 404, where
            elif kind == ORG_CREATE:
                assert r.status_code == 201, where
            elif kind == ORG_SELF:
                assert r.status_code in (200, 202, 204), (where, r.text)
            elif kind == STATIC:
                assert r.status_code in (200, 307), where
            elif kind == LINK:
                assert r.status_code == 401 and r.json()["detail"], where
            else:
                assert r.status_code == 200, (where, r.text)
            # a public object's own identifier is the one thing it may show
            markers = [m for m in a.markers() if not (kind == PUBLIC_ITEM and m == a.receipt_serial)]
            for marker in markers:
                assert marker not in r.text, f"{where} leaked {marker!r}"

        # nothing of A changed, nothing of B appeared in A
        assert (await c.get(f"/api/v1/projects/{a.project_id}", headers=a_t.h)).json() == a_before
        assert (await c.get("/api/v1/projects", headers=a_t.h)).json()["projects"] == a_list_before
        assert (await c.get("/api/v1/receipts", headers=a_t.h)).json()["receipts"] == a_receipts_before
        a_prices = (await c.get("/api/v1/price-overrides", headers=a_t.h)).json()["price_overrides"]
        assert [p["id"] for p in a_prices] == [a.price_override_id]
        a_recs = (await c.get("/api/v1/recommendations/active", headers=a_t.h)).json()["recommendations"]
        assert [(r["id"], r["status"]) for r in a_recs] == [(a.recommendation_id, "active")]
        b_names = [p["name"] for p in (await c.get("/api/v1/projects", headers=b_headers)).json()["projects"]]
        assert "Created by B" in b_names and name not in b_names
    assert orgs.get(a.org_id) == a_org_before  # plan and Stripe customer untouched (forged webhook too)
    assert Memberships(engine).for_org(a.org_id) == a_members_before  # forged identity event, B's calls
    assert key_states(a.org_id) == a_keys_before  # nothing rotated or revoked by B
    assert Balances(engine).get(a.org_id) == 7_000_000
    assert Users(engine).by_external_id("user_ext_b") is None
    # B's upgrade and portal went to Stripe for B's customer only, naming nothing of A
    assert stripe_stub.requests, "B's upgrade / portal never reached Stripe"
    for stripe_path, form, _ in stripe_stub.requests:
        assert form.get("customer") == b_customer, stripe_path
        for marker in a.markers():
            assert marker not in str(form), f"{stripe_path} sent {marker!r} to Stripe"
