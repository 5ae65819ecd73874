"""The demo gateway of `joulestream up` (`make run`) serves what it lists: the demo routing file
(cli/demo_gateway.py) in front of the demo upstream (cli/demo_upstream.py, a subprocess), called with the
official `openai` SDK. Embeddings work with `model="auto"` and pinned, and every model in /v1/models
answers on each endpoint it is listed for."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.demo_gateway import DemoUpstream
from pipelines.gateway import create_gateway_app, load_routes
from tests.gateway.conftest import GatewayHandle, ServerThread, Tenants
from tests.stack import Stack, free_port


@pytest.fixture
def demo_gateway(tenants: Tenants, stack: Stack, tmp_path: Path) -> Iterator[GatewayHandle]:
    home = stack.settings.home
    (home / "logs").mkdir(parents=True, exist_ok=True)
    upstream = DemoUpstream(free_port(), home)
    routes = upstream.start()
    server = None
    try:
        app = create_gateway_app(
            stack.settings, load_routes(routes), engine=tenants.engine, spool_dir=tmp_path / "spool"
        )
        server = ServerThread(app).start()
        yield GatewayHandle(server, app, stack, tenants)
    finally:
        if server is not None:
            server.stop()
        upstream.stop()


def test_demo_embeddings_auto_and_pinned(demo_gateway: GatewayHandle) -> None:
    client = demo_gateway.client()
    raw = client.embeddings.with_raw_response.create(model="auto", input="hello")
    auto = raw.parse()
    assert len(auto.data) == 1 and auto.data[0].embedding
    assert raw.headers["x-tier"] == "L0" and float(raw.headers["x-energy-joules"]) >= 0
    pinned = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert [d.index for d in pinned.data] == [0, 1]


def test_every_listed_model_answers_for_its_kind(demo_gateway: GatewayHandle) -> None:
    client = demo_gateway.client()
    models = client.models.list().model_dump()["data"]
    ids = {m["id"] for m in models}
    assert {"auto", "text-embedding-3-small", "gpt-4o-mini"} <= ids
    called = []
    for m in models:
        endpoints = m["joulestream"].get("endpoints") or ["chat", "completions", "embeddings"]  # auto: all
        for endpoint in endpoints:
            if endpoint == "chat":
                r = client.chat.completions.create(
                    model=m["id"], messages=[{"role": "user", "content": "What is the capital of France?"}]
                )
                assert r.choices[0].message.content
            elif endpoint == "completions":
                r = client.completions.create(model=m["id"], prompt="The capital of France is")
                assert r.choices[0].text
            else:
                r = client.embeddings.create(model=m["id"], input="hello")
                assert r.data[0].embedding
            called.append((m["id"], endpoint))
    assert ("text-embedding-3-small", "embeddings") in called and ("auto", "embeddings") in called
    assert {"chat", "completions", "embeddings"} == {e for _, e in called}
