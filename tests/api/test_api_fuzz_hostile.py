"""Issue 20's acceptance fuzz on the API: every POST/PUT/PATCH route (read from the app's OpenAPI document)
gets hostile bodies (tests/hostile.py: deep nesting, huge strings, NUL, invalid UTF-8, odd JSON) under JSON
and wrong content types, with an admin key, over the ASGI interface. Never a 5xx; every rejection
`{"detail": …}` and under 4 KB. Bounded: JOULESTREAM_FUZZ_EXAMPLES (default 50) examples per route.
(tests/api/test_fuzz.py is the schema-driven fuzz of every route with well-formed JSON.)"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import httpx
import pytest
from hypothesis import example, given
from starlette.testclient import TestClient

from api.app import create_app
from core.secrets import LocalSecretStore
from core.settings import load_settings
from tests.api.stripe_stub import WEBHOOK_SECRET
from tests.hostile import CONTENT_TYPES, FUZZ_SETTINGS, check_rejection, explicit_cases, hostile_body

LIMIT = load_settings({"JOULESTREAM_HOME": "/nonexistent"}).api_max_body_bytes


def _spec() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as home:
        s = load_settings({"JOULESTREAM_HOME": home, "JOULESTREAM_DATABASE": f"sqlite:///{home}/unused.db"})
        return create_app(s, seed_factors=False).openapi()


SPEC = _spec()


def _example(schema: dict[str, Any]) -> Any:
    """A plausible value for a JSON Schema (the valid-looking template the hostile parts go into)."""
    if "$ref" in schema:
        return _example(SPEC["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]])
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return _example(options[0])
    if schema.get("examples"):
        return schema["examples"][0]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {k: _example(v) for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        return [_example(schema.get("items", {}))]
    return {"integer": 1, "number": 1.5, "boolean": True, "string": "x"}.get(kind, "x")


def _routes() -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for path, ops in SPEC["paths"].items():
        for method, op in ops.items():
            if method in ("post", "put", "patch"):
                schema = (
                    op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
                )
                template = _example(schema) if schema else {}
                out.append(
                    (method.upper(), path, template if isinstance(template, dict) and template else {"a": 1})
                )
    return out


ROUTES = _routes()


@pytest.fixture
def hostile_app(make_app, settings, tenants):
    app = make_app(settings=settings.replace(stripe_webhook_secret=WEBHOOK_SECRET))
    # provider usage APIs that reject every key: POST /connections runs its whole path on the machine
    app.state.ctx.extras["secret_store"] = LocalSecretStore(os.urandom(32))
    app.state.ctx.extras["provider_http"] = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda request: httpx.Response(401, json={"error": "invalid key"}))
    )
    return app


def test_every_write_route_is_covered():
    assert {f"{m} {p}" for m, p, _ in ROUTES} >= {
        "POST /api/v1/projects",
        "PATCH /api/v1/projects/{project_id}",
        "PUT /api/v1/price-overrides",
        "POST /api/v1/connections",
        "POST /api/v1/billing/webhook",
    }


@pytest.mark.timeout(600)
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("method", "path", "template"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_hostile_bodies(hostile_app, tenants, method, path, template):
    client = TestClient(hostile_app, raise_server_exceptions=False)
    auth = tenants[0].h
    project = client.post("/api/v1/projects", json={"name": "fuzz"}, headers=auth).json()["id"]
    url = path.replace("{project_id}", project).replace("{connection_id}", "conn_does_not_exist")

    @FUZZ_SETTINGS
    @given(body=hostile_body(template, LIMIT), ctype=CONTENT_TYPES)
    def probe(body: bytes, ctype: str | None) -> None:
        headers = dict(auth)
        if ctype is not None:
            headers["Content-Type"] = ctype
        r = client.request(method, url, content=body, headers=headers)
        check_rejection(r.status_code, r.content, "detail")

    for body, ctype in explicit_cases(template, LIMIT):
        probe = example(body=body, ctype=ctype)(probe)
    probe()
