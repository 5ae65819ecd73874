"""The dashboard's routes (api/routers/dashboard.py): `/` → the app, the page's security headers, the one-time
sign-in link exchange, the session endpoint (the Dagster link for admins only) and sign-out. The pages
themselves are tested in a real browser (tests/dashboard/)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controlplane import ApiKeys
from controlplane.signin_links import SignInLinks
from tests.fixtures_api import bearer, client_for

pytestmark = pytest.mark.anyio


async def test_root_redirects_to_the_app_with_a_strict_page(api) -> None:
    r = await api.get("/")
    assert r.status_code == 307 and r.headers["location"] == "/app/"
    page = await api.get("/app/")
    assert page.status_code == 200 and "joulestream dashboard" in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "http" not in csp
    assert page.headers["referrer-policy"] == "no-referrer"
    js = await api.get("/app/static/app.js")
    assert js.status_code == 200 and "sessionStorage" in js.text
    assert (await api.get("/app/static/../../app.py")).status_code == 404
    for src in ("app.js", "charts.js", "receipts.js"):  # no network fetch at run time: same-origin only
        body = (await api.get(f"/app/static/{src}")).text
        assert "http://" not in body and "https://" not in body


async def test_a_sign_in_link_opens_one_session_once(api, engine, tenants) -> None:
    a, _ = tenants
    token = SignInLinks(engine).create(a.org.id, ("read", "admin"), timedelta(minutes=10))
    r = await api.post("/api/v1/dashboard/sign-in", json={"token": token})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["org_slug"] == "acme" and out["scopes"] == ["read", "admin"]
    assert datetime.fromisoformat(out["expires_at"]) > datetime.now(UTC) + timedelta(hours=11)
    session = (await api.get("/api/v1/dashboard/session", headers=bearer(out["api_key"]))).json()
    assert session["org_slug"] == "acme" and session["session_key"] is True
    again = await api.post("/api/v1/dashboard/sign-in", json={"token": token})
    assert again.status_code == 401 and "already used" in again.json()["detail"]
    # sign-out revokes the session key
    assert (await api.post("/api/v1/dashboard/sign-out", headers=bearer(out["api_key"]))).status_code == 204
    after = await api.get("/api/v1/metrics/summary", headers=bearer(out["api_key"]))
    assert after.status_code == 401


async def test_expired_unknown_and_malformed_links_are_refused(api, engine, tenants) -> None:
    a, _ = tenants
    old = SignInLinks(engine).create(
        a.org.id, "read", timedelta(minutes=10), now=datetime.now(UTC) - timedelta(minutes=11)
    )
    assert (await api.post("/api/v1/dashboard/sign-in", json={"token": old})).status_code == 401
    assert (await api.post("/api/v1/dashboard/sign-in", json={"token": "x" * 43})).status_code == 401
    bad = await api.post("/api/v1/dashboard/sign-in", json={"token": "x" * 500})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "token"]
    assert (await api.post("/api/v1/dashboard/sign-in", json={"token": "x", "extra": 1})).status_code == 422


async def test_sign_out_never_revokes_a_key_the_user_typed(api, tenants) -> None:
    a, _ = tenants
    assert (await api.post("/api/v1/dashboard/sign-out", headers=a.h)).status_code == 204
    assert (await api.get("/api/v1/dashboard/session", headers=a.h)).json()["session_key"] is False
    assert (await api.get("/api/v1/metrics/summary", headers=a.h)).status_code == 200
    assert (await api.get("/api/v1/dashboard/session")).status_code == 401


async def test_the_dagster_link_is_for_admins(make_app, settings, engine, tenants) -> None:
    a, _ = tenants
    app = make_app(settings=settings.replace(dagster_url="http://127.0.0.1:3999"))
    async with client_for(app) as c:
        admin = (await c.get("/api/v1/dashboard/session", headers=a.h)).json()
        reader = (await c.get("/api/v1/dashboard/session", headers=bearer(a.read))).json()
    assert admin["dagster_url"] == "http://127.0.0.1:3999" and reader["dagster_url"] is None
    revoked = ApiKeys(engine).create(a.org.id, "read")
    ApiKeys(engine).revoke(revoked[0].id)
    async with client_for(app) as c:
        r = await c.get("/api/v1/dashboard/session", headers=bearer(revoked[1]))
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
