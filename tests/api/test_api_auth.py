"""Authentication and scopes: API keys and JWTs (RS256 / ES256 / EdDSA via a local JWKS)."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from controlplane import ApiKeys
from controlplane.jwt import JwtSettings
from controlplane.schema import api_keys
from tests.fixtures_api import bearer, client_for
from tests.fixtures_controlplane import AUDIENCE, ISSUER

pytestmark = pytest.mark.anyio

PROJECTS = "/api/v1/projects"


def _assert_401(r):
    assert r.status_code == 401, r.text
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert isinstance(r.json()["detail"], str)


async def test_missing_and_malformed_credentials(api, tenants):
    _assert_401(await api.get(PROJECTS))
    assert (await api.get(PROJECTS)).headers["WWW-Authenticate"] == "Bearer"
    _assert_401(await api.get(PROJECTS, headers={"Authorization": "Basic dXNlcjpwYXNz"}))
    _assert_401(await api.get(PROJECTS, headers={"Authorization": "Bearer"}))
    _assert_401(await api.get(PROJECTS, headers=bearer("js_live_" + "A" * 43)))  # unknown key
    _assert_401(await api.get(PROJECTS, headers=bearer("js_live_short")))
    _assert_401(
        await api.get(PROJECTS, headers=bearer("eyJhbGciOiJSUzI1NiJ9.e30.sig"))
    )  # JWT, not configured
    r = await api.get(PROJECTS, headers=bearer(tenants[0].read + "x"))
    _assert_401(r)
    assert r.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


async def test_api_key_accepted(api, tenants):
    r = await api.get(PROJECTS, headers=bearer(tenants[0].read))
    assert r.status_code == 200
    # an X-Org-Slug naming the key's own org is fine; another org is 403
    assert (
        await api.get(PROJECTS, headers={**bearer(tenants[0].read), "X-Org-Slug": "acme"})
    ).status_code == 200
    r = await api.get(PROJECTS, headers={**bearer(tenants[0].read), "X-Org-Slug": "beta"})
    assert r.status_code == 403 and "detail" in r.json()


async def test_revoked_key(api, engine, tenants):
    keys = ApiKeys(engine)
    key = keys.authenticate(tenants[0].read)
    assert (await api.get(PROJECTS, headers=bearer(tenants[0].read))).status_code == 200
    keys.revoke(key.id, org_id=tenants[0].org.id)
    _assert_401(await api.get(PROJECTS, headers=bearer(tenants[0].read)))


async def test_expired_key(api, engine, tenants):
    key = ApiKeys(engine).authenticate(tenants[0].read)
    with engine.begin() as conn:
        conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key.id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    _assert_401(await api.get(PROJECTS, headers=bearer(tenants[0].read)))


async def test_scopes(api, tenants):
    a = tenants[0]
    assert (await api.get(PROJECTS, headers=bearer(a.read))).status_code == 200
    r = await api.post(PROJECTS, json={"name": "P"}, headers=bearer(a.read))
    assert r.status_code == 403 and r.json() == {"detail": "missing scope: admin"}
    r = await api.get(PROJECTS, headers=bearer(a.admin))
    assert r.status_code == 403 and r.json() == {"detail": "missing scope: read"}
    assert (await api.post(PROJECTS, json={"name": "P"}, headers=bearer(a.admin))).status_code == 201
    for path in (PROJECTS, "/api/v1/carbon-factors", "/api/v1/carbon-factors/current"):
        assert (await api.get(path, headers=bearer(a.ingest))).status_code == 403


# --------------------------------------------------------------------------------------------- JWT


@pytest.fixture
def jwt_app(make_app, jwks):
    return make_app(jwt_settings=jwks.settings())


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
async def test_jwt_accepted(jwt_app, jwks, tenants, alg):
    async with client_for(jwt_app) as c:
        token = jwks.token(alg, org_slug="acme", orgs=["acme"], scope="read admin")
        r = await c.get(PROJECTS, headers=bearer(token))
        assert r.status_code == 200, r.text
        r = await c.post(PROJECTS, json={"name": f"via {alg}"}, headers=bearer(token))
        assert r.status_code == 201
        # the project landed in acme
        names = [
            p["name"] for p in (await c.get(PROJECTS, headers=bearer(tenants[0].read))).json()["projects"]
        ]
        assert f"via {alg}" in names
        # API keys keep working next to JWTs
        assert (await c.get(PROJECTS, headers=bearer(tenants[1].read))).status_code == 200


@pytest.mark.parametrize(
    "claims, status",
    [
        ({"aud": "another-api"}, 401),
        ({"iss": "https://evil.example/"}, 401),
        ({"exp": int(time.time()) - 600}, 401),
        ({"sub": None}, 401),
        ({"scope": "read", "org_slug": "nosuchorg"}, 403),  # unknown org
        ({"scope": None}, 403),  # no scopes
        ({"org_slug": None, "orgs": ["acme", "beta"]}, 403),  # no org chosen
    ],
)
async def test_jwt_rejected(jwt_app, jwks, tenants, claims, status):
    token = jwks.token("ES256", **{"org_slug": "acme", "orgs": ["acme"], "scope": "read", **claims})
    async with client_for(jwt_app) as c:
        r = await c.get(PROJECTS, headers=bearer(token))
    assert r.status_code == status, r.text
    if status == 401:
        _assert_401(r)


async def test_jwt_x_org_slug_memberships(jwt_app, jwks, tenants):
    a, b = tenants
    token = jwks.token("EdDSA", org_slug="acme", orgs=["acme", "beta"], scope="read admin")
    only_a = jwks.token("EdDSA", org_slug="acme", orgs=["acme"], scope="read admin")
    async with client_for(jwt_app) as c:
        r = await c.post(PROJECTS, json={"name": "In Beta"}, headers={**bearer(token), "X-Org-Slug": "beta"})
        assert r.status_code == 201
        beta_names = [p["name"] for p in (await c.get(PROJECTS, headers=bearer(b.read))).json()["projects"]]
        acme_names = [p["name"] for p in (await c.get(PROJECTS, headers=bearer(a.read))).json()["projects"]]
        assert "In Beta" in beta_names and "In Beta" not in acme_names
        r = await c.get(PROJECTS, headers={**bearer(only_a), "X-Org-Slug": "beta"})
        assert r.status_code == 403 and "beta" in r.json()["detail"]
        r = await c.get(PROJECTS, headers={**bearer(token), "X-Org-Slug": "gamma"})
        assert r.status_code == 403


async def test_jwt_jwks_unavailable(make_app, jwks, tenants):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = make_app(
        jwt_settings=JwtSettings(jwks_url=f"http://127.0.0.1:{port}/jwks", issuer=ISSUER, audience=AUDIENCE)
    )
    async with client_for(app) as c:
        r = await c.get(PROJECTS, headers=bearer(jwks.token("RS256", org_slug="acme", scope="read")))
    assert r.status_code == 503 and r.json() == {"detail": "authentication service unavailable, retry later"}


async def test_jwt_from_settings(make_app, settings, jwks, tenants):
    jwt_on = settings.replace(
        jwt_jwks_url=jwks.url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE, jwt_org_claim="tenant"
    )
    async with client_for(make_app(settings=jwt_on)) as c:
        ok = await c.get(PROJECTS, headers=bearer(jwks.token("RS256", tenant="beta", scope="read")))
        assert ok.status_code == 200
        assert (
            await c.get(PROJECTS, headers=bearer(jwks.token("RS256", org_slug="beta", scope="read")))
        ).status_code == 403
