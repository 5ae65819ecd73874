"""Tenancy, generated from the app's route list: with org B's credentials, no route reveals or changes org
A's data — another org's id is 404, lists are B's own.

Every route must be classified in ROUTES; the test fails when a route is added without an entry (or an
entry outlives its route), so a new endpoint cannot skip the tenancy check.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import pytest

try:  # FastAPI >= 0.13x includes routers lazily; this flattens them
    from fastapi.routing import iter_route_contexts
except ImportError:  # older FastAPI: app.routes is already flat

    def iter_route_contexts(routes):
        return routes


from core.controlplane import Projects, Workloads
from core.controlplane.connections import Connections
from core.secrets import LocalSecretStore
from tests.fixtures_api import bearer, client_for
from tests.pollers.stubs import ADMIN_KEYS, OpenRouterStub

pytestmark = pytest.mark.anyio

PUBLIC = "public"  # no auth, no org data (health, docs, methodology)
GLOBAL = "global"  # authenticated, but not org data (carbon factor versions)
ORG_LIST = "org_list"  # lists the caller's org data: B sees none of A's
ORG_CREATE = "org_create"  # creates in the caller's org: nothing appears in A
ORG_ITEM = "org_item"  # addresses one org object by id: A's id with B's key is 404 and changes nothing

ROUTES: dict[tuple[str, str], tuple[str, dict | None]] = {
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
    ("GET", "/api/v1/connections"): (ORG_LIST, None),
    ("POST", "/api/v1/connections"): (
        ORG_CREATE,
        {"provider": "openrouter", "api_key": ADMIN_KEYS["openrouter"]},
    ),
    ("GET", "/api/v1/connections/{connection_id}"): (ORG_ITEM, None),
    ("DELETE", "/api/v1/connections/{connection_id}"): (ORG_ITEM, None),
    ("POST", "/api/v1/connections/{connection_id}/sync"): (ORG_ITEM, None),
    ("PUT", "/api/v1/connections/{connection_id}/project"): (ORG_ITEM, {"project_id": "x"}),
}


@dataclass
class OrgA:
    org_id: str
    slug: str
    project_id: str
    project_name: str
    workload_ref: str
    connection_id: str

    def markers(self) -> list[str]:
        return [
            self.org_id,
            self.slug,
            self.project_id,
            self.project_name,
            self.workload_ref,
            self.connection_id,
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
    values = {"project_id": a.project_id, "version": "v1.0", "connection_id": a.connection_id}
    assert name in values, f"path parameter {{{name}}} has no tenancy value: add it to _path_value"
    return values[name]


def _fill(path: str, a: OrgA) -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: _path_value(m.group(1), a), path)


def test_every_route_is_classified(make_app):
    app = make_app()
    routes = _app_routes(app)
    assert routes - ROUTES.keys() == set(), "unclassified routes: add them to ROUTES in test_api_tenancy.py"
    assert ROUTES.keys() - routes == set(), "ROUTES lists routes that no longer exist"
    for (_, path), (kind, _) in ROUTES.items():
        if "{" in path:  # a route addressing an object must be an org item or global data
            assert kind in (ORG_ITEM, GLOBAL), path


async def test_org_b_never_sees_org_a(make_app, engine, tenants):
    a_t, b_t = tenants
    name = f"Secret-A-{uuid.uuid4().hex[:8]}"
    project = Projects(engine).create(a_t.org.id, name)
    Workloads(engine).create(a_t.org.id, project.id, "connection", "conn-secret-a")
    conn_a = Connections(engine).create(a_t.org.id, "openai", "local:v1:00000000:AAAA", project.id)
    a = OrgA(a_t.org.id, a_t.org.slug, project.id, name, "conn-secret-a", conn_a.id)
    b_headers = bearer(b_t.rw)  # read + admin
    app = make_app()
    stub = OpenRouterStub().start()  # B's POST /connections validates its key against a local stub
    stub.keys[ADMIN_KEYS["openrouter"]] = "admin"
    app.state.ctx.extras.update(
        secret_store=LocalSecretStore(b"k" * 32), provider_base_urls={"openrouter": stub.url}
    )

    async with client_for(app) as c:
        a_before = (await c.get(f"/api/v1/projects/{a.project_id}", headers=a_t.h)).json()
        a_list_before = (await c.get("/api/v1/projects", headers=a_t.h)).json()["projects"]

        for (method, path), (kind, body) in sorted(ROUTES.items()):
            url = _fill(path, a)
            headers = {} if kind == PUBLIC else b_headers
            r = await c.request(method, url, headers=headers, json=body)
            where = f"{method} {path} ({kind})"
            if kind == ORG_ITEM:
                assert r.status_code == 404, where
            elif kind == ORG_CREATE:
                assert r.status_code == 201, where
            else:
                assert r.status_code == 200, where
            for marker in a.markers():
                assert marker not in r.text, f"{where} leaked {marker!r}"

        # nothing of A changed, nothing of B appeared in A
        assert (await c.get(f"/api/v1/projects/{a.project_id}", headers=a_t.h)).json() == a_before
        assert (await c.get("/api/v1/projects", headers=a_t.h)).json()["projects"] == a_list_before
        b_names = [p["name"] for p in (await c.get("/api/v1/projects", headers=b_headers)).json()["projects"]]
        assert "Created by B" in b_names and name not in b_names
