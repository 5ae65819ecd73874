"""/api/v1/connections on SQLite and PostgreSQL, with the real key validation against local provider stubs:
create (default/explicit project, key validation 400s, provider down 502/503, duplicate 409), list/get,
delete (secret removed, workload deactivated, history kept), sync (409 when error/disabled, 429 +
Retry-After), re-map, scopes, cross-org 404s — and the key in no response, log line or column."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select, update

from controlplane import Projects, Workloads
from controlplane.schema import connections, metadata
from core.secrets import LocalSecretStore, SecretNotFound
from pipelines.pollers.scheduler import last_poll_at
from tests.fixtures_api import bearer, client_for
from tests.pollers.stubs import ADMIN_KEYS, LIMITED_KEYS, STUBS, ProviderStub

pytestmark = pytest.mark.anyio

URL = "/api/v1/connections"


class FakeVault:
    """A SecretStore with vault-style references (only the reference is handed out)."""

    kind = "aws"

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}
        self.deleted: list[str] = []

    def put(self, name: str, secret: str) -> str:
        ref = f"aws:arn:aws:secretsmanager:eu-west-1:1:secret:joulestream/connections/{name}-Ab12Cd"
        self.secrets[ref] = secret
        return ref

    def get(self, ref: str, name: str | None = None) -> str:
        if ref not in self.secrets:
            raise SecretNotFound("gone")
        return self.secrets[ref]

    def delete(self, ref: str) -> None:
        self.deleted.append(ref)
        self.secrets.pop(ref, None)


@pytest.fixture
def stubs() -> Iterator[dict[str, ProviderStub]]:
    out = {}
    for provider, cls in STUBS.items():
        stub = cls().start()
        stub.keys[ADMIN_KEYS[provider]] = "admin"
        stub.keys[LIMITED_KEYS[provider]] = "limited"
        out[provider] = stub
    yield out
    for stub in out.values():
        stub.close()


@pytest.fixture
def store() -> LocalSecretStore:
    return LocalSecretStore(os.urandom(32))


@pytest.fixture
def app(make_app, stubs, store):
    app = make_app()
    app.state.ctx.extras.update(secret_store=store, provider_base_urls={p: s.url for p, s in stubs.items()})
    return app


class Recorder:
    """An httpx client that keeps every response body, to search them all for the key at the end."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.bodies: list[str] = []

    async def request(self, method: str, url: str, **kw) -> httpx.Response:
        r = await self.client.request(method, url, **kw)
        self.bodies.append(f"{r.status_code} {dict(r.headers)} {r.text}")
        return r

    async def get(self, url, **kw):
        return await self.request("GET", url, **kw)

    async def post(self, url, **kw):
        return await self.request("POST", url, **kw)

    async def put(self, url, **kw):
        return await self.request("PUT", url, **kw)

    async def delete(self, url, **kw):
        return await self.request("DELETE", url, **kw)

    def assert_no_key(self) -> None:
        for body in self.bodies:
            for key in (*ADMIN_KEYS.values(), *LIMITED_KEYS.values()):
                assert key not in body


@pytest.fixture
async def api(app) -> AsyncIterator[Recorder]:
    async with client_for(app) as c:
        rec = Recorder(c)
        yield rec
        rec.assert_no_key()


async def create(api, tenant, provider="openai", key=None, **extra) -> httpx.Response:
    body = {"provider": provider, "api_key": key or ADMIN_KEYS[provider], **extra}
    return await api.post(URL, json=body, headers=bearer(tenant.admin))


# --------------------------------------------------------------------------------------------- create


async def test_create_validates_against_the_provider_and_maps_to_default(api, tenants, stubs, engine, store):
    acme, _ = tenants
    r = await create(api, acme)
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) >= {
        "id",
        "provider",
        "status",
        "last_polled_at",
        "project_id",
        "project_name",
        "created_at",
    }
    assert "api_key" not in body
    assert (body["provider"], body["status"], body["project_name"]) == ("openai", "active", "Default")
    assert body["last_polled_at"] is None and body["consecutive_failures"] == 0
    default = Projects(engine).ensure_default_project(acme.org.id)
    assert body["project_id"] == default.id
    # validated with one real request to the provider's usage API, the key in the auth header only
    (req,) = stubs["openai"].requests
    assert req.path == "/v1/organization/usage/completions"
    assert req.headers["authorization"] == f"Bearer {ADMIN_KEYS['openai']}"
    # the database holds a reference that decrypts to the key, bound to this connection
    with engine.connect() as conn:
        ref = conn.execute(
            select(connections.c.secret_ref).where(connections.c.id == body["id"])
        ).scalar_one()
    assert store.get(ref, body["id"]) == ADMIN_KEYS["openai"]
    wl = Workloads(engine).active(acme.org.id, "connection", body["id"])
    assert wl is not None and wl.project_id == default.id


@pytest.mark.parametrize("provider", ["anthropic", "openrouter"])
async def test_create_other_providers(api, tenants, stubs, provider):
    r = await create(api, tenants[0], provider)
    assert r.status_code == 201, r.text
    assert r.json()["provider"] == provider
    assert len(stubs[provider].requests) == 1


async def test_create_with_explicit_project(api, tenants, engine):
    acme, beta = tenants
    prod = Projects(engine).create(acme.org.id, "Production App")
    r = await create(api, acme, "anthropic", project_id=prod.id)
    assert r.status_code == 201 and r.json()["project_name"] == "Production App"
    r = await create(api, acme, "openai", project_id="00000000-0000-0000-0000-000000000000")
    assert r.status_code == 404
    other = Projects(engine).create(beta.org.id, "Beta project")
    r = await create(api, acme, "openai", project_id=other.id)  # another org's project
    assert r.status_code == 404 and r.json() == {"detail": "project not found"}


async def test_non_admin_openai_key_is_a_clear_400_without_calling_openai(api, tenants, stubs):
    r = await create(api, tenants[0], "openai", key="sk-proj-" + "x" * 40)
    assert r.status_code == 400
    assert r.json()["detail"] == (
        "API key validation failed: insufficient permissions. OpenAI admin keys must start with sk-admin- "
        "(create one under Organization → Admin keys)."
    )
    assert stubs["openai"].requests == []
    r = await create(api, tenants[0], "anthropic", key="sk-ant-api03-" + "x" * 40)
    assert r.status_code == 400 and "sk-ant-admin" in r.json()["detail"]


@pytest.mark.parametrize("provider", ["openai", "anthropic", "openrouter"])
async def test_rejected_and_underprivileged_keys_are_400(api, tenants, stubs, provider):
    stubs[provider].keys[ADMIN_KEYS[provider]] = "revoked"
    r = await create(api, tenants[0], provider)
    assert r.status_code == 400
    assert r.json()["detail"].startswith("API key validation failed:") and "401" in r.json()["detail"]
    r = await create(api, tenants[0], provider, key=LIMITED_KEYS[provider])
    assert r.status_code == 400 and "insufficient permissions" in r.json()["detail"]
    if provider == "openrouter":
        assert "management" in r.json()["detail"]
    r = await api.get(URL, headers=bearer(tenants[0].read))
    assert r.json() == {"connections": []}  # nothing stored


async def test_provider_down_is_502_and_rate_limit_503_with_retry_after(api, tenants, stubs):
    stubs["openai"].fail_next(500, times=5)
    r = await create(api, tenants[0])
    assert r.status_code == 502 and "retry later" in r.json()["detail"]
    stubs["openai"].faults.clear()
    stubs["openai"].fail_next(429, retry_after="30", times=5)
    r = await create(api, tenants[0])
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 30
    stubs["openai"].faults.clear()
    assert (await create(api, tenants[0])).status_code == 201


async def test_duplicate_provider_is_409_per_org(api, tenants, stubs):
    acme, beta = tenants
    first = await create(api, acme)
    assert first.status_code == 201
    n = len(stubs["openai"].requests)
    r = await create(api, acme)
    assert r.status_code == 409
    assert r.json() == {"detail": "A connection for openai already exists in this organization."}
    assert len(stubs["openai"].requests) == n  # rejected before asking the provider
    assert (await create(api, acme, "anthropic")).status_code == 201
    assert (await create(api, beta)).status_code == 201  # another org: its own
    assert (await api.delete(f"{URL}/{first.json()['id']}", headers=bearer(acme.admin))).status_code == 204
    assert (await create(api, acme)).status_code == 201  # free again after delete


async def test_422_bodies_never_echo_the_key(api, tenants):
    key = ADMIN_KEYS["openai"]
    for body in (
        {"provider": "gemini", "api_key": key},
        {"api_key": key},  # missing provider: the error's input is the whole body
        {"provider": "openai", "api_key": key, "surprise": 1},
        {"provider": "openai", "api_key": key + " "},
        {"provider": "openai", "api_key": key, "project_id": ""},
    ):
        r = await api.post(URL, json=body, headers=bearer(tenants[0].admin))
        assert r.status_code == 422, body
        assert key not in r.text and isinstance(r.json()["detail"], list)
    r = await api.post(URL, json={"provider": "openai", "api_key": "short"}, headers=bearer(tenants[0].admin))
    assert r.status_code == 422 and "short" not in r.text
    assert r.json()["detail"][0]["loc"] == ["body", "api_key"]


# --------------------------------------------------------------------------------------------- read


async def test_list_and_get_with_status_and_project(api, tenants, engine):
    acme, _ = tenants
    a = (await create(api, acme, "openai")).json()
    b = (await create(api, acme, "openrouter")).json()
    r = await api.get(URL, headers=bearer(acme.read))
    assert r.status_code == 200
    items = r.json()["connections"]
    assert [c["id"] for c in items] == [a["id"], b["id"]]
    for item in items:
        assert set(item) >= {
            "id",
            "provider",
            "status",
            "last_polled_at",
            "consecutive_failures",
            "project_id",
            "project_name",
            "created_at",
        }
    r = await api.get(f"{URL}/{a['id']}", headers=bearer(acme.read))
    assert r.status_code == 200 and r.json() == items[0]
    with engine.begin() as conn:
        conn.execute(
            update(connections)
            .where(connections.c.id == a["id"])
            .values(status="error", consecutive_failures=5, last_error="openai server error 502")
        )
    got = (await api.get(f"{URL}/{a['id']}", headers=bearer(acme.read))).json()
    assert (got["status"], got["consecutive_failures"], got["last_error"]) == (
        "error",
        5,
        "openai server error 502",
    )
    assert (await api.get(f"{URL}/nope", headers=bearer(acme.read))).status_code == 404


async def test_scopes(api, tenants):
    acme, _ = tenants
    cid = (await create(api, acme)).json()["id"]
    r = await api.post(
        URL, json={"provider": "anthropic", "api_key": ADMIN_KEYS["anthropic"]}, headers=bearer(acme.read)
    )
    assert r.status_code == 403
    for method, path, body in (
        ("DELETE", f"{URL}/{cid}", None),
        ("POST", f"{URL}/{cid}/sync", None),
        ("PUT", f"{URL}/{cid}/project", {"project_id": "x"}),
    ):
        r = await api.request(method, path, json=body, headers=bearer(acme.read))
        assert r.status_code == 403, (method, path)
    assert (await api.get(URL, headers=bearer(acme.admin))).status_code == 403  # admin-only lacks read
    assert (await api.get(URL, headers=bearer(acme.ingest))).status_code == 403
    assert (await api.get(URL)).status_code == 401


async def test_another_orgs_connection_is_404_everywhere(api, tenants, engine):
    acme, beta = tenants
    cid = (await create(api, acme)).json()["id"]
    beta_project = Projects(engine).create(beta.org.id, "Beta")
    h = bearer(beta.rw)
    assert (await api.get(f"{URL}/{cid}", headers=h)).status_code == 404
    assert (await api.delete(f"{URL}/{cid}", headers=h)).status_code == 404
    assert (await api.post(f"{URL}/{cid}/sync", headers=h)).status_code == 404
    assert (
        await api.put(f"{URL}/{cid}/project", json={"project_id": beta_project.id}, headers=h)
    ).status_code == 404
    assert (await api.get(URL, headers=h)).json() == {"connections": []}
    # and acme cannot map its connection onto beta's project
    r = await api.put(f"{URL}/{cid}/project", json={"project_id": beta_project.id}, headers=acme.h)
    assert r.status_code == 404
    assert (await api.get(f"{URL}/{cid}", headers=acme.h)).json()["project_name"] == "Default"


# --------------------------------------------------------------------------------------------- delete


async def test_delete_removes_secret_deactivates_workload_keeps_history(app, tenants, engine):
    vault = FakeVault()
    app.state.ctx.extras["secret_store"] = vault
    async with client_for(app) as c:
        api = Recorder(c)
        acme, _ = tenants
        cid = (await create(api, acme)).json()["id"]
        (ref,) = vault.secrets
        wl = Workloads(engine).active(acme.org.id, "connection", cid)
        r = await api.delete(f"{URL}/{cid}", headers=bearer(acme.admin))
        assert r.status_code == 204 and r.content == b""
        assert vault.deleted == [ref] and vault.secrets == {}
        assert (await api.get(f"{URL}/{cid}", headers=acme.h)).status_code == 404
        assert (await api.get(URL, headers=acme.h)).json() == {"connections": []}
        assert (await api.delete(f"{URL}/{cid}", headers=acme.h)).status_code == 404
        with engine.connect() as conn:
            row = conn.execute(select(connections).where(connections.c.id == cid)).mappings().one()
        assert row["secret_ref"] is None and row["deleted_at"] is not None  # the row stays for history
        assert Workloads(engine).active(acme.org.id, "connection", cid) is None
        old = Workloads(engine).get(acme.org.id, wl.id)
        assert old is not None and not old.is_active and old.project_id == wl.project_id
        api.assert_no_key()


# --------------------------------------------------------------------------------------------- sync


async def test_sync_enqueues_and_is_rate_limited(api, tenants, engine):
    acme, _ = tenants
    cid = (await create(api, acme)).json()["id"]
    r = await api.post(f"{URL}/{cid}/sync", headers=bearer(acme.admin))
    assert r.status_code == 202
    assert r.json()["message"] == "Sync job enqueued" and r.json()["job_id"]
    with engine.connect() as conn:
        row = conn.execute(select(connections).where(connections.c.id == cid)).mappings().one()
    assert row["sync_requested_at"] is not None and row["sync_job_id"] == r.json()["job_id"]

    r = await api.post(f"{URL}/{cid}/sync", headers=bearer(acme.admin))
    assert r.status_code == 429
    assert 295 <= int(r.headers["Retry-After"]) <= 300 and "5 minutes" in r.json()["detail"]

    with engine.begin() as conn:  # four minutes later: still limited, with the remaining wait
        conn.execute(
            update(connections)
            .where(connections.c.id == cid)
            .values(last_sync_request_at=datetime.now(UTC) - timedelta(minutes=4))
        )
    r = await api.post(f"{URL}/{cid}/sync", headers=bearer(acme.admin))
    assert r.status_code == 429 and 55 <= int(r.headers["Retry-After"]) <= 60
    with engine.begin() as conn:  # past five minutes: allowed again
        conn.execute(
            update(connections)
            .where(connections.c.id == cid)
            .values(last_sync_request_at=datetime.now(UTC) - timedelta(minutes=5, seconds=1))
        )
    assert (await api.post(f"{URL}/{cid}/sync", headers=bearer(acme.admin))).status_code == 202
    # the limit is per connection
    other = (await create(api, acme, "anthropic")).json()["id"]
    assert (await api.post(f"{URL}/{other}/sync", headers=bearer(acme.admin))).status_code == 202


@pytest.mark.parametrize("status", ["error", "disabled"])
async def test_sync_is_409_when_error_or_disabled(api, tenants, engine, status):
    acme, _ = tenants
    cid = (await create(api, acme)).json()["id"]
    with engine.begin() as conn:
        conn.execute(update(connections).where(connections.c.id == cid).values(status=status))
    r = await api.post(f"{URL}/{cid}/sync", headers=bearer(acme.admin))
    assert r.status_code == 409 and status in r.json()["detail"]


# --------------------------------------------------------------------------------------------- re-map


async def test_remap_creates_a_new_workload_and_deactivates_the_old(api, tenants, engine):
    acme, _ = tenants
    c = (await create(api, acme)).json()
    old = Workloads(engine).active(acme.org.id, "connection", c["id"])
    prod = Projects(engine).create(acme.org.id, "Production App")
    r = await api.put(f"{URL}/{c['id']}/project", json={"project_id": prod.id}, headers=bearer(acme.admin))
    assert r.status_code == 200
    assert r.json() == {
        "id": c["id"],
        "provider": "openai",
        "project_id": prod.id,
        "project_name": "Production App",
    }
    new = Workloads(engine).active(acme.org.id, "connection", c["id"])
    assert new.id != old.id and new.project_id == prod.id
    assert not Workloads(engine).get(acme.org.id, old.id).is_active  # history stays on the old workload
    got = (await api.get(f"{URL}/{c['id']}", headers=acme.h)).json()
    assert (got["project_id"], got["project_name"]) == (prod.id, "Production App")
    r = await api.put(f"{URL}/{c['id']}/project", json={"project_id": "missing"}, headers=acme.h)
    assert r.status_code == 404
    r = await api.put(f"{URL}/{c['id']}/project", json={}, headers=acme.h)
    assert r.status_code == 422
    # the old project no longer has an active workload: it can be deleted now
    default = Projects(engine).ensure_default_project(acme.org.id)
    assert Projects(engine).get(acme.org.id, default.id).workload_count == 0


# --------------------------------------------------------------------------------------------- secrets


async def test_the_key_is_in_no_response_log_line_or_column(api, tenants, engine, stubs, caplog):
    caplog.set_level(logging.DEBUG)
    acme, beta = tenants
    ids = [(await create(api, acme, p)).json()["id"] for p in ("openai", "anthropic", "openrouter")]
    await create(api, acme)  # 409
    stubs["anthropic"].keys[ADMIN_KEYS["anthropic"]] = "revoked"
    await create(api, beta, "anthropic")  # 400
    await create(api, beta, "openai", key=LIMITED_KEYS["openai"])  # 400
    stubs["openrouter"].fail_next(500, times=5, body={"message": f"boom {ADMIN_KEYS['openrouter']}"})
    r = await create(api, beta, "openrouter")
    assert r.status_code == 502 and "***" in r.json()["detail"]
    for cid in ids:
        await api.get(f"{URL}/{cid}", headers=acme.h)
        await api.post(f"{URL}/{cid}/sync", headers=acme.h)
    await api.get(URL, headers=acme.h)
    await api.delete(f"{URL}/{ids[0]}", headers=acme.h)
    await api.get("/api/v1/openapi.json")
    api.assert_no_key()
    for key in (*ADMIN_KEYS.values(), *LIMITED_KEYS.values()):
        assert key not in caplog.text
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)).all():
                for value in row:
                    for key in (*ADMIN_KEYS.values(), *LIMITED_KEYS.values()):
                        assert key not in str(value), table.name


async def test_without_master_key_connections_answer_503(make_app, tenants, stubs, monkeypatch):
    monkeypatch.delenv("JOULESTREAM_MASTER_KEY", raising=False)
    app = make_app()  # settings point at a test database: not the embedded demo
    app.state.ctx.extras["provider_base_urls"] = {p: s.url for p, s in stubs.items()}
    async with client_for(app) as c:
        r = await c.post(
            URL, json={"provider": "openai", "api_key": ADMIN_KEYS["openai"]}, headers=tenants[0].h
        )
        assert r.status_code == 503 and "JOULESTREAM_MASTER_KEY" in r.json()["detail"]
        assert stubs["openai"].requests == []
        ctx = app.state.ctx  # the operator configures a master key: the API reads its settings object
        ctx.settings = ctx.settings.replace(master_key=os.urandom(32).hex())
        r = await c.post(
            URL, json={"provider": "openai", "api_key": ADMIN_KEYS["openai"]}, headers=tenants[0].h
        )
        assert r.status_code == 201


async def test_health_reports_the_last_poll(make_app, engine, tenants):
    app = make_app(last_poll=lambda: last_poll_at(engine))
    async with client_for(app) as c:
        body = (await c.get("/health", headers=tenants[0].h)).json()
    assert body["checks"]["last_poll"]["status"] == "ok"
