"""Fixtures for the gateway tests: a control plane with two orgs and their keys, OpenAI-compatible stub
upstreams and the gateway itself, each served by uvicorn on loopback in a background thread."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from cli.demo_upstream import StubConfig, StubStats, StubUpstream  # noqa: E402
from controlplane import ApiKeys, Orgs, dispose_engine, get_engine, upgrade  # noqa: E402
from controlplane.gateway import Balances  # noqa: E402
from pipelines.gateway import create_gateway_app, parse_routes  # noqa: E402
from tests.fixtures_controlplane import db_url, pg_admin  # noqa: E402, F401
from tests.stack import Stack, free_port  # noqa: E402  (kafka, stack, worker: root conftest plugin)


class ServerThread:
    """uvicorn serving an ASGI app on 127.0.0.1 in a background thread (lifespan included)."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("server thread died during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError("server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@dataclass
class Tenants:
    engine: Any
    org_a: Any
    org_b: Any
    key_a: str  # ingest
    key_a_read: str  # read only
    key_b: str  # ingest, org b

    def new_key(self, org_id: str, scopes: str = "ingest") -> str:
        return ApiKeys(self.engine).create(org_id, scopes)[1]

    def new_org(self, slug: str, plan: str = "free") -> tuple[Any, str]:
        org = Orgs(self.engine).create(slug, plan_tier=plan)
        return org, self.new_key(org.id)


@pytest.fixture
def cp_engine(tmp_path: Path) -> Iterator[Any]:
    url = f"sqlite:///{tmp_path / 'control.db'}"
    engine = get_engine(url)

    upgrade(engine)
    yield engine
    dispose_engine(url)


@pytest.fixture
def tenants(cp_engine: Any) -> Tenants:
    orgs, keys = Orgs(cp_engine), ApiKeys(cp_engine)
    a = orgs.create("acme")
    b = orgs.create("globex")
    return Tenants(
        engine=cp_engine,
        org_a=a,
        org_b=b,
        key_a=keys.create(a.id, "ingest")[1],
        key_a_read=keys.create(a.id, "read")[1],
        key_b=keys.create(b.id, "ingest")[1],
    )


# upstream name -> (provider, region, silicon, models, price in, price out, tiers, endpoints)
UPSTREAMS: dict[str, tuple] = {
    "small": (
        "google",
        "europe-west1",
        "tpu-v5e",
        ["gemini-2.0-flash"],
        0.10,
        0.40,
        ["L0", "L1"],
        ["chat", "completions"],
    ),
    "cheap-us": (
        "aws",
        "us-east-1",
        "h100-sxm5",
        ["llama-3.3-70b-instruct"],
        0.20,
        0.60,
        ["L0", "L1", "L2"],
        ["chat", "completions"],
    ),
    "cheap-eu": (
        "aws",
        "eu-north-1",
        "h100-sxm5",
        ["llama-3.3-70b-instruct"],
        0.20,
        0.60,
        ["L0", "L1", "L2"],
        ["chat", "completions"],
    ),
    "big": (
        "azure",
        "swedencentral",
        "h200",
        ["gpt-4o", "o3-mini"],
        2.50,
        10.0,
        ["L0", "L1", "L2", "L3"],
        ["chat", "completions"],
    ),
    "embed": ("openai", "us", "a100", ["text-embedding-3-small"], 0.02, 0.0, ["L0"], ["embeddings"]),
}


@dataclass
class Stubs:
    apps: dict[str, StubUpstream]
    servers: dict[str, ServerThread]

    def config(self, name: str, **changes: Any) -> None:
        for k, v in changes.items():
            setattr(self.apps[name].config, k, v)

    def reset(self) -> None:
        for name, app in self.apps.items():
            app.config = StubConfig(name=name)
            app.stats = StubStats()

    def requests(self, name: str) -> int:
        return self.apps[name].stats.requests


@pytest.fixture(scope="session")
def stubs() -> Iterator[Stubs]:
    apps = {name: StubUpstream(StubConfig(name=name)) for name in UPSTREAMS}
    servers = {name: ServerThread(app).start() for name, app in apps.items()}
    yield Stubs(apps, servers)
    for s in servers.values():
        s.stop()


@pytest.fixture
def fresh_stubs(stubs: Stubs) -> Stubs:
    stubs.reset()
    return stubs


def routes_yaml(stubs: Stubs, extra: str = "", dead: dict[str, int] | None = None) -> str:
    """The routing file for the stubs; `dead` points upstreams at closed ports (connect errors)."""
    lines = ["upstreams:"]
    for name, (prov, region, silicon, models, pin, pout, tiers, endpoints) in UPSTREAMS.items():
        port = (dead or {}).get(name) or stubs.servers[name].port
        lines += [
            f"  - name: {name}",
            f"    provider: {prov}",
            f"    base_url: http://127.0.0.1:{port}/v1",
            f"    api_key_env: STUB_KEY_{name.upper().replace('-', '_')}",
            f"    region: {region}",
            f"    silicon: {silicon}",
            f"    models: [{', '.join(models)}]",
            f"    price_in_per_1m: {pin}",
            f"    price_out_per_1m: {pout}",
            f"    tiers: [{', '.join(tiers)}]",
            f"    endpoints: [{', '.join(endpoints)}]",
            "    connect_timeout_s: 1",
            "    timeout_s: 10",
        ]
    return "\n".join(lines) + "\nauth_cache_ttl_s: 0\n" + extra


@dataclass
class GatewayHandle:
    server: ServerThread
    app: Any
    stack: Stack
    tenants: Tenants

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def gw(self) -> Any:
        return self.app.state.gateway

    def client(self, key: str | None = None, **kw: Any):
        from openai import OpenAI

        return OpenAI(api_key=key or self.tenants.key_a, base_url=f"{self.url}/v1", max_retries=0, **kw)

    def aclient(self, key: str | None = None, **kw: Any):
        from openai import AsyncOpenAI

        return AsyncOpenAI(api_key=key or self.tenants.key_a, base_url=f"{self.url}/v1", max_retries=0, **kw)

    def http(self, method: str, path: str, key: str | None = "a", **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}) or {})
        if key == "a":
            key = self.tenants.key_a
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kw)

    def wait_receipts_stored(self, timeout_s: float = 10) -> None:
        deadline = time.monotonic() + timeout_s
        while self.gw.receipts.pending and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not self.gw.receipts.pending


GatewayFactory = Callable[..., GatewayHandle]


@pytest.fixture
def make_gateway(
    fresh_stubs: Stubs, tenants: Tenants, stack: Stack, tmp_path: Path
) -> Iterator[GatewayFactory]:
    started: list[ServerThread] = []

    def make(
        extra: str = "", dead: dict[str, int] | None = None, port: int | None = None, **options: Any
    ) -> GatewayHandle:
        routes = parse_routes(routes_yaml(fresh_stubs, extra, dead))
        app = create_gateway_app(
            options.pop("settings", None) or stack.settings,
            routes,
            engine=tenants.engine,
            spool_dir=tmp_path / "spool",
            publisher_options=options.pop("publisher_options", None),
            **options,
        )
        server = ServerThread(app, port=port).start()
        started.append(server)
        return GatewayHandle(server, app, stack, tenants)

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def gateway(make_gateway: GatewayFactory) -> GatewayHandle:
    return make_gateway()


def read_topic(bootstrap: str, topic: str, expect: int, timeout_s: float = 30) -> list[Any]:
    """Every message of `topic` (waits until `expect` are there, then a moment more for extras)."""
    from aiokafka import AIOKafkaConsumer

    async def _read() -> list[Any]:
        c = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
        )
        await c.start()
        out: list[Any] = []
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            while len(out) < expect and loop.time() < deadline:
                for msgs in (await c.getmany(timeout_ms=300)).values():
                    out.extend(msgs)
            for msgs in (await c.getmany(timeout_ms=700)).values():
                out.extend(msgs)
        finally:
            await c.stop()
        return out

    return asyncio.run(_read())


__all__ = ["Balances", "GatewayHandle", "ServerThread", "Stubs", "Tenants", "read_topic", "routes_yaml"]
