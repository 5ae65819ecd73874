"""Fuzz: schemathesis against the app's own OpenAPI schema (/api/v1/openapi.json).

Every operation gets generated requests (valid and invalid parameters and bodies), sent with a real API key
(scopes read + admin, so the write routes run too) to the app over its ASGI interface, with the warehouse
holding telemetry written by the pipeline's code path, and provider connections wired to a local secret store
and a stub provider API, and Stripe webhooks configured with a signing secret. Checked: no 5xx, every response conforms to its
documented schema and content type. Bounded: `JOULESTREAM_FUZZ_EXAMPLES` (default 50) examples per
operation, a minute or two in all.

The schema is read from the app's /api/v1/openapi.json at collection time (from an app instance that never
touches a database: routes and models do not depend on data); each test then calls the test's own app,
built over the parametrized fixtures. (`schemathesis.pytest.from_fixture` would be the natural loader, but
it relies on a pytest internal that pytest 9 removed.)
"""

from __future__ import annotations

import os
import tempfile

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from api.app import create_app
from core.secrets import LocalSecretStore
from core.settings import load_settings
from tests.api.stripe_stub import WEBHOOK_SECRET
from tests.api.telemetry_data import build

MAX_EXAMPLES = int(os.environ.get("JOULESTREAM_FUZZ_EXAMPLES", "50"))


def _openapi() -> dict:
    with tempfile.TemporaryDirectory() as home:
        s = load_settings({"JOULESTREAM_HOME": home, "JOULESTREAM_DATABASE": f"sqlite:///{home}/unused.db"})
        return create_app(s, seed_factors=False).openapi()


schema = schemathesis.openapi.from_dict(_openapi())


@pytest.fixture
def fuzz_app(make_app, settings, warehouse, engine, tenants):
    wh = warehouse[0]
    build(wh, engine, tenants, n_a=60, n_b=10)
    # Stripe webhooks configured, so generated Stripe-Signature headers reach the signature check
    app = make_app(
        settings=settings.replace(stripe_webhook_secret=WEBHOOK_SECRET), warehouse_client_factory=lambda: wh
    )
    # provider connections: a local secret store, and provider usage APIs that reject every key (401), so
    # POST /connections runs its whole validation path without leaving the machine
    app.state.ctx.extras["secret_store"] = LocalSecretStore(os.urandom(32))
    app.state.ctx.extras["provider_http"] = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda request: httpx.Response(401, json={"error": "invalid key"}))
    )
    yield app
    app.state.ctx.telemetry.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the rules are tested on both DBs elsewhere
@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_error_and_no_schema_violation(case, fuzz_app, tenants):
    case.call_and_validate(
        app=fuzz_app,
        headers={"Authorization": f"Bearer {tenants[0].rw}"},
        checks=[not_a_server_error, response_schema_conformance, content_type_conformance],
    )
