"""GET /health and /api/v1/health: database, warehouse, Kafka and last-poll checks; 200 / 503."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine

from api.app import create_app
from tests.fixtures_api import client_for

pytestmark = pytest.mark.anyio

PATHS = ("/health", "/api/v1/health")


@pytest.fixture
def make_app(make_app, settings):
    """The checks' details are shown to everyone here (JOULESTREAM_HEALTH_DETAILS); who sees them otherwise
    is tested at the end of this file."""

    def make(**kwargs):
        kwargs.setdefault("settings", settings.replace(health_details=True))
        return make_app(**kwargs)

    return make


def _ok() -> None:
    return None


def _boom() -> None:
    raise ConnectionError("Connection refused")


async def _aok() -> bool:
    return True


async def test_healthy_no_auth(make_app):
    async with client_for(make_app()) as c:
        for path in PATHS:
            r = await c.get(path)
            assert r.status_code == 200
            body = r.json()
            assert body["status"] == "healthy" and body["version"]
            assert set(body["checks"]) == {"database", "warehouse", "kafka", "last_poll"}
            assert body["checks"]["database"]["status"] == "ok"
            assert isinstance(body["checks"]["database"]["latency_ms"], int)
            assert body["checks"]["warehouse"]["status"] == "skipped"
            assert body["checks"]["kafka"]["status"] == "skipped"
            assert body["checks"]["last_poll"] == {"status": "ok", "detail": "no pollers configured"}


async def test_all_checks_ok(make_app):
    app = make_app(
        warehouse_check=_ok, kafka_check=_aok, last_poll=lambda: datetime.now(UTC) - timedelta(minutes=15)
    )
    async with client_for(app) as c:
        body = (await c.get("/health")).json()
    assert body["status"] == "healthy"
    assert {k: v["status"] for k, v in body["checks"].items()} == {
        "database": "ok",
        "warehouse": "ok",
        "kafka": "ok",
        "last_poll": "ok",
    }
    assert body["checks"]["last_poll"]["minutes_ago"] == 15
    assert body["checks"]["last_poll"]["last_poll_at"].endswith("Z")


@pytest.mark.parametrize("which", ["warehouse_check", "kafka_check"])
async def test_failing_dependency_is_503(make_app, which):
    async with client_for(make_app(**{which: _boom})) as c:
        for path in PATHS:
            r = await c.get(path)
            assert r.status_code == 503
            body = r.json()
            name = which.removesuffix("_check")
            assert body["status"] == "unhealthy"
            assert body["checks"][name] == {
                "status": "error",
                "error": "ConnectionError: Connection refused",
                "latency_ms": body["checks"][name]["latency_ms"],
            }


async def test_async_failing_and_slow_checks(make_app):
    async def broken():
        raise RuntimeError("broker down")

    def slow():
        time.sleep(1)

    async with client_for(make_app(kafka_check=broken, warehouse_check=slow, health_timeout_s=0.2)) as c:
        r = await c.get("/health")
    assert r.status_code == 503
    checks = r.json()["checks"]
    assert checks["kafka"]["error"] == "RuntimeError: broker down"
    assert checks["warehouse"]["error"] == "timed out"


async def test_warehouse_client_factory_ping(make_app):
    class Client:
        def __init__(self, fail: bool) -> None:
            self.fail, self.commands = fail, []

        def command(self, sql):
            self.commands.append(sql)
            if self.fail:
                raise OSError("no route to host")
            return 1

    good = Client(False)
    async with client_for(make_app(warehouse_client_factory=lambda: good)) as c:
        assert (await c.get("/health")).json()["checks"]["warehouse"]["status"] == "ok"
    assert good.commands == ["SELECT 1"]
    async with client_for(make_app(warehouse_client_factory=lambda: Client(True))) as c:
        assert (await c.get("/health")).status_code == 503
    # an explicit warehouse_check wins over the factory
    async with client_for(make_app(warehouse_client_factory=lambda: Client(True), warehouse_check=_ok)) as c:
        assert (await c.get("/health")).status_code == 200


@pytest.mark.parametrize(
    "minutes, status, code, overall",
    [
        (0, "ok", 200, "healthy"),
        (89, "ok", 200, "healthy"),
        (90, "warning", 200, "degraded"),
        (179, "warning", 200, "degraded"),
        (180, "error", 503, "unhealthy"),
        (240, "error", 503, "unhealthy"),
    ],
)
async def test_last_poll_thresholds(make_app, minutes, status, code, overall):
    at = datetime.now(UTC) - timedelta(minutes=minutes, seconds=5)
    async with client_for(make_app(last_poll=lambda: at)) as c:
        r = await c.get("/api/v1/health")
    assert r.status_code == code
    body = r.json()
    assert body["status"] == overall
    assert body["checks"]["last_poll"]["status"] == status
    assert body["checks"]["last_poll"]["minutes_ago"] == minutes


async def test_last_poll_async_naive_and_failing(make_app):
    async def newest():
        await asyncio.sleep(0)
        return (datetime.now(UTC) - timedelta(minutes=100)).replace(tzinfo=None)  # naive = UTC

    async with client_for(make_app(last_poll=newest)) as c:
        assert (await c.get("/health")).json()["checks"]["last_poll"]["status"] == "warning"

    def broken():
        raise RuntimeError("pollers table missing")

    async with client_for(make_app(last_poll=broken)) as c:
        r = await c.get("/health")
    assert r.status_code == 503 and r.json()["checks"]["last_poll"]["status"] == "error"


async def test_database_down_is_503(settings, make_app):
    make_app()  # migrate the real one; then point an app at a database that does not answer
    dead = create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:1/none", connect_args={"connect_timeout": 1}
    )
    app = create_app(settings.replace(health_details=True), engine=dead, seed_factors=False)
    async with client_for(app) as c:
        r = await c.get("/health")
    assert r.status_code == 503
    db = r.json()["checks"]["database"]
    assert db["status"] == "error" and db["error"].startswith("OperationalError")
    assert "Traceback" not in r.text


@pytest.fixture
def make_plain_app(settings, engine):
    def make(**kwargs):
        return create_app(settings, engine=engine, **kwargs)

    return make


async def test_without_credentials_only_the_status(make_plain_app, tenants):
    """Issue 20, item 7: unauthenticated /health keeps the status (and its HTTP code) and nothing else;
    an API key of any scope, or a JWT, sees the checks and the version; a bad key is just unauthenticated."""
    for check, code, status in ((_ok, 200, "healthy"), (_boom, 503, "unhealthy")):
        async with client_for(make_plain_app(kafka_check=check)) as c:
            for path in PATHS:
                for headers in (
                    {},
                    {"Authorization": "Bearer js_live_not-a-key"},
                    {"Authorization": "Basic x"},
                ):
                    r = await c.get(path, headers=headers)
                    assert r.status_code == code and r.json() == {"status": status}, r.text
                for key in (tenants[0].read, tenants[1].ingest, tenants[0].admin):
                    r = await c.get(path, headers={"Authorization": f"Bearer {key}"})
                    body = r.json()
                    assert r.status_code == code and body["status"] == status and body["version"]
                    assert body["checks"]["kafka"]["status"] == ("ok" if check is _ok else "error")
                    assert isinstance(body["checks"]["database"]["latency_ms"], int)
