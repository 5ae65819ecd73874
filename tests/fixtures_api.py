"""Fixtures for tests/api: an app per test on the parametrized control-plane DB (SQLite / PostgreSQL),
an httpx client over ASGITransport, and two tenants (orgs) with API keys of various scopes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest

from api.app import create_app
from controlplane import ApiKeys, Org, Orgs
from core.settings import load_settings


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def settings(db_url, tmp_path):
    return load_settings({"JOULESTREAM_HOME": str(tmp_path / "home"), "JOULESTREAM_DATABASE": db_url})


@pytest.fixture
def make_app(settings, engine):
    def make(**kwargs):
        kwargs.setdefault("settings", settings)
        return create_app(engine=engine, **kwargs)

    return make


@asynccontextmanager
async def client_for(app) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        yield c


@pytest.fixture
async def api(make_app) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(make_app()) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Tenant:
    org: Org
    rw: str  # read + admin
    read: str  # read only
    admin: str  # admin only
    ingest: str  # ingest only

    @property
    def h(self) -> dict[str, str]:
        return bearer(self.rw)


@pytest.fixture
def tenants(engine) -> tuple[Tenant, Tenant]:
    orgs, keys = Orgs(engine), ApiKeys(engine)
    out = []
    for slug in ("acme", "beta"):
        org = orgs.create(slug)
        out.append(
            Tenant(
                org=org,
                rw=keys.create(org.id, ["read", "admin"], name="rw")[1],
                read=keys.create(org.id, ["read"], name="read")[1],
                admin=keys.create(org.id, ["admin"], name="admin")[1],
                ingest=keys.create(org.id, ["ingest"], name="ingest")[1],
            )
        )
    return out[0], out[1]
