"""Operations routes (api/routers/ops.py): /api/v1/version, /api/v1/config — which never shows a secret — and
the protection of /prometheus/metrics (the operator token; 401/403 in the API's `detail` shape)."""

from __future__ import annotations

import platform
import subprocess

import pytest

from core.buildinfo import REPO, package_version
from core.methodology.factors import LATEST_VERSION
from core.metrics import Footprints, exposition
from tests.fixtures_api import bearer, client_for
from tests.prom import families, parse, value

pytestmark = pytest.mark.anyio

SECRETS = {
    "master_key": "mk-SECRET-0a1b2c3d4e5f60718293a4b5c6d7e8f9",
    "signing_key": "sk-SECRET-signing-9f8e7d6c",
    "stripe_api_key": "sk_test_SECRET_stripe_51H",
    "stripe_webhook_secret": "whsec_SECRET_hook_42",
    "metrics_token": "mt-SECRET-operator-token",
}
URL_SECRETS = ["pg-pass-SECRET", "ch-pass-SECRET", "q-SECRET", "kafka-pass-SECRET", "minio-pass-SECRET",
               "jwks-SECRET", "openai-pass-SECRET", "public-pass-SECRET", "pg-user-SECRET"]  # fmt: skip


def _git_head() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


async def test_version_names_the_build_and_the_default_factor_version(api, tenants):
    a, _ = tenants
    r = await api.get("/api/v1/version", headers=bearer(a.read))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == package_version()
    assert body["python"] == platform.python_version()
    assert body["git_commit"] == _git_head()  # None outside a checkout, on both sides
    # the app seeds the built-in sets: the current one is the newest shipped
    assert body["factors_version"] == LATEST_VERSION == body["factors_builtin_latest"]


@pytest.mark.parametrize("path", ["/api/v1/version", "/api/v1/config"])
async def test_version_and_config_need_the_read_scope(api, tenants, path):
    a, _ = tenants
    r = await api.get(path)
    assert r.status_code == 401 and r.json()["detail"] and r.headers["www-authenticate"].startswith("Bearer")
    r = await api.get(path, headers=bearer(a.ingest))
    assert r.status_code == 403 and "read" in r.json()["detail"]
    assert (await api.get(path, headers=bearer(a.read))).status_code == 200


async def test_config_describes_the_deployment_without_a_secret(make_app, settings, tenants):
    a, _ = tenants
    s = settings.replace(
        **SECRETS,
        database="postgresql+psycopg://pg-user-SECRET:pg-pass-SECRET@db.internal:5433/joulestream_cp",
        clickhouse="https://ch-user:ch-pass-SECRET@ch.internal:8443/analytics?password=q-SECRET",
        ch_database="js_prod",
        kafka="sasl:kafka-pass-SECRET@broker-1.internal:9092,broker-2.internal:9092",
        topic_prefix="prod.",
        artifacts="s3://audit-bucket/packs",
        artifacts_endpoint="http://minio:minio-pass-SECRET@minio.internal:9000",
        jwt_jwks_url="https://idp.example.com/.well-known/jwks.json?token=jwks-SECRET",
        jwt_issuer="https://idp.example.com/",
        jwt_audience="joulestream",
        openai_base_url="https://proxy:openai-pass-SECRET@openai-proxy.internal/v1",
        public_url="https://admin:public-pass-SECRET@joulestream.example.com",
        metrics_per_org=True,
    )
    # the values really are in the settings the app holds
    assert s.master_key.get_secret_value() == SECRETS["master_key"] and "pg-pass-SECRET" in s.database
    async with client_for(make_app(settings=s)) as c:
        r = await c.get("/api/v1/config", headers=bearer(a.read))
    assert r.status_code == 200, r.text
    for secret in [*SECRETS.values(), *URL_SECRETS]:
        assert secret not in r.text, f"/config shows {secret!r}"
    assert "SECRET" not in r.text
    body = r.json()
    assert body["kafka"] == {
        "kind": "external",
        "bootstrap": ["broker-1.internal:9092", "broker-2.internal:9092"],
        "topic_prefix": "prod.",
        "topics": {
            "raw": "prod.usage.raw.v1",
            "enriched": "prod.usage.enriched.v1",
            "dlq": "prod.usage.dlq.v1",
        },
    }
    assert body["clickhouse"] == {
        "kind": "https",
        "host": "ch.internal",
        "port": 8443,
        "path": None,
        "database": "js_prod",
    }
    assert body["control_plane"] == {
        "kind": "postgresql",
        "host": "db.internal",
        "port": 5433,
        "path": None,
        "database": "joulestream_cp",
    }
    assert body["public_url"] == "https://joulestream.example.com"
    assert body["factors_version"] == LATEST_VERSION
    f = body["features"]
    assert f["jwt_auth"] and f["stripe_billing"] and f["stripe_webhooks"]
    assert f["master_key_configured"] and f["signing_key_configured"]
    assert f["metrics"] == {"token_configured": True, "open": False, "per_org": True}
    assert f["artifacts"] == {
        "kind": "s3",
        "location": "audit-bucket/packs",
        "endpoint": "http://minio.internal:9000",
    }
    assert f["pollers"]["base_urls"] == {"openai": "https://openai-proxy.internal/v1"}


async def test_config_of_the_embedded_defaults(api, tenants, settings):
    a, _ = tenants
    body = (await api.get("/api/v1/config", headers=bearer(a.read))).json()
    assert body["kafka"]["kind"] == "embedded" and body["kafka"]["bootstrap"] == ["127.0.0.1:19092"]
    assert body["clickhouse"] == {
        "kind": "chdb",
        "host": None,
        "port": None,
        "path": str(settings.home / "warehouse"),
        "database": "joulestream",
    }
    assert body["control_plane"]["kind"] in ("sqlite", "postgresql")
    assert body["features"]["metrics"] == {"token_configured": False, "open": False, "per_org": False}


# ------------------------------------------------------------------------------------- /prometheus/metrics


async def test_metrics_closed_without_a_configured_token(api, tenants):
    a, _ = tenants
    for headers in ({}, bearer(a.rw)):  # an org's API key is no operator credential
        r = await api.get("/prometheus/metrics", headers=headers)
        assert r.status_code == 403
        assert set(r.json()) == {"detail"} and "JOULESTREAM_METRICS_TOKEN" in r.json()["detail"]


async def test_metrics_need_the_operator_token(make_app, settings, tenants):
    a, _ = tenants
    app = make_app(settings=settings.replace(metrics_token="op-token-1"))
    async with client_for(app) as c:
        r = await c.get("/prometheus/metrics")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and r.json()["detail"]
        for wrong in ("op-token-2", "op-token-1x", a.rw):
            r = await c.get("/prometheus/metrics", headers=bearer(wrong))
            assert r.status_code == 401 and set(r.json()) == {"detail"}
            assert "invalid_token" in r.headers["www-authenticate"]
        r = await c.get("/prometheus/metrics", headers={"Authorization": "Basic b3A6b3AtdG9rZW4tMQ=="})
        assert r.status_code == 401
        r = await c.get("/prometheus/metrics", headers=bearer("op-token-1"))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    kinds = families(r.text)
    for name, kind in {
        "joulestream_pipeline_received": "counter",
        "joulestream_pipeline_enriched": "counter",
        "joulestream_pipeline_duplicates": "counter",
        "joulestream_pipeline_stored": "counter",
        "joulestream_pipeline_dlq": "counter",
        "joulestream_pipeline_consumer_lag": "gauge",
        "joulestream_pipeline_batch_seconds": "histogram",
        "joulestream_warehouse_insert_seconds": "histogram",
        "joulestream_gateway_requests": "counter",
        "joulestream_gateway_added_latency_seconds": "histogram",
        "joulestream_energy_kwh": "counter",
        "joulestream_co2e_kg": "counter",
        "joulestream_poller_polls": "counter",
        "joulestream_poller_failures": "counter",
        "joulestream_poller_last_success_timestamp_seconds": "gauge",
        "joulestream_build_info": "gauge",
    }.items():
        assert kinds.get(name) == kind, name
    build = parse(r.text)
    assert value(build, "joulestream_pipeline_received_total", agent="enrich") >= 0
    assert any(n == "joulestream_build_info" and v == 1 for (n, _), v in build.items())


async def test_metrics_open_by_explicit_switch(make_app, settings):
    async with client_for(make_app(settings=settings.replace(metrics_open=True))) as c:
        r = await c.get("/prometheus/metrics")
    assert r.status_code == 200 and parse(r.text)


def test_per_org_series_only_behind_the_switch():
    org_off, org_on = "org_metrics_switch_off_7f3a", "org_metrics_switch_on_7f3a"
    for org, per_org in ((org_off, False), (org_on, True)):
        fp = Footprints.empty()
        fp.add("openai", "large", org, 7.2e6, 0.5, 0.25, 0.1)
        fp.record(per_org=per_org)
    text = exposition()[0].decode()
    assert org_off not in text
    samples = parse(text)
    assert value(samples, "joulestream_org_energy_kwh_total", org_id=org_on) == pytest.approx(2.0)
    assert value(samples, "joulestream_org_co2e_kg_total", org_id=org_on) == pytest.approx(0.5)
