"""The error model: {"detail": …} everywhere, 422 field lists, opaque 500s with a request id."""

from __future__ import annotations

import logging
from typing import Annotated

import pytest
from fastapi import Depends

from tests.fixtures_api import client_for

pytestmark = pytest.mark.anyio


async def test_unknown_route_and_method(api, tenants):
    r = await api.get("/api/v1/nothing-here")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
    r = await api.put("/api/v1/projects", json={}, headers=tenants[0].h)
    assert r.status_code == 405 and r.json() == {"detail": "Method Not Allowed"}


async def test_422_keeps_field_errors(api, tenants):
    r = await api.post(
        "/api/v1/projects", content=b"{not json", headers={**tenants[0].h, "Content-Type": "application/json"}
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["type"] == "json_invalid"
    r = await api.post("/api/v1/projects", json={"name": "   "}, headers=tenants[0].h)
    err = r.json()["detail"][0]
    assert r.status_code == 422 and err["loc"] == ["body", "name"] and "blank" in err["msg"]


def boom():
    raise RuntimeError("secret internals: password=hunter2 at /srv/db")


def broken_dependency():
    raise KeyError("internal-key")


async def uses_dependency(_: Annotated[None, Depends(broken_dependency)]):
    return {}


async def test_unhandled_exception_is_opaque_500(make_app, tenants, caplog):
    app = make_app()

    app.add_api_route("/api/v1/_test/boom", boom)
    app.add_api_route("/api/v1/_test/dep", uses_dependency)
    caplog.set_level(logging.ERROR, logger="joulestream.api")
    async with client_for(app) as c:
        for path in ("/api/v1/_test/boom", "/api/v1/_test/dep"):
            r = await c.get(path, headers={"X-Request-ID": "req-123"})
            assert r.status_code == 500
            assert r.json() == {"detail": "internal error", "request_id": "req-123"}
            assert "hunter2" not in r.text and "internal-key" not in r.text
            assert r.headers["X-Request-ID"] == "req-123"
        r = await c.get("/api/v1/_test/boom")
        rid = r.json()["request_id"]
        assert len(rid) == 32 and r.headers["X-Request-ID"] == rid
    assert any("req-123" in rec.getMessage() and rec.exc_info for rec in caplog.records)
    assert any(rid in rec.getMessage() for rec in caplog.records)


async def test_request_id_on_every_response(api):
    r = await api.get("/api/v1/methodology", headers={"X-Request-ID": "abc.DEF-1"})
    assert r.headers["X-Request-ID"] == "abc.DEF-1"
    r = await api.get("/api/v1/methodology", headers={"X-Request-ID": "bad id with spaces\x01"})
    assert r.headers["X-Request-ID"] != "bad id with spaces\x01" and len(r.headers["X-Request-ID"]) == 32
    assert (await api.get("/api/v1/projects")).headers.get("X-Request-ID")  # errors too


async def test_openapi_and_docs(api):
    r = await api.get("/api/v1/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    paths = set(spec["paths"])
    assert {
        "/health",
        "/api/v1/health",
        "/api/v1/projects",
        "/api/v1/projects/{project_id}",
        "/api/v1/carbon-factors",
        "/api/v1/carbon-factors/current",
        "/api/v1/carbon-factors/{version}",
        "/api/v1/methodology",
    } <= paths
    assert all(
        p.startswith(("/api/v1/", "/public/")) or p in ("/health", "/prometheus/metrics") for p in paths
    )
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    docs = await api.get("/api/v1/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert (await api.get("/docs")).status_code == 404
