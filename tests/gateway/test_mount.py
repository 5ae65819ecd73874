"""The gateway mounted inside another ASGI app (how `joulestream up` can serve it next to the runtime API):
the parent's lifespan starts and stops it; the fast path honours the mount prefix."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from openai import OpenAI

from pipelines.gateway import create_gateway_app, parse_routes
from tests.gateway.conftest import ServerThread, routes_yaml

Q = [{"role": "user", "content": "What is the capital of France?"}]


def test_mounted_under_a_prefix(fresh_stubs, tenants, stack, tmp_path):
    gw_app = create_gateway_app(
        stack.settings,
        parse_routes(routes_yaml(fresh_stubs)),
        engine=tenants.engine,
        spool_dir=tmp_path / "spool",
    )

    @asynccontextmanager
    async def lifespan(app):
        await gw_app.state.gateway.start()  # mounted apps get no lifespan events of their own
        try:
            yield
        finally:
            await gw_app.state.gateway.stop()

    parent = FastAPI(lifespan=lifespan)

    @parent.get("/hello")
    async def hello() -> dict:
        return {"ok": True}

    parent.mount("/gateway", gw_app)
    server = ServerThread(parent).start()
    try:
        client = OpenAI(api_key=tenants.key_a, base_url=f"{server.url}/gateway/v1", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=Q)
        assert raw.headers["x-tier"] == "L0" and raw.parse().choices
        assert [m.id for m in client.models.list()][0] == "auto"
        import httpx

        assert httpx.get(f"{server.url}/gateway/health").json()["status"] in ("ok", "degraded")
        assert httpx.get(f"{server.url}/hello").json() == {"ok": True}
    finally:
        server.stop()


def test_upstream_error_text_is_redacted(gateway, fresh_stubs):
    fresh_stubs.config("small", fail="401")
    fresh_stubs.config("cheap-eu", fail="500")
    fresh_stubs.config("cheap-us", fail="500")
    fresh_stubs.config("big", fail="500")
    r = gateway.http("POST", "/v1/chat/completions", json={"model": "auto", "messages": Q})
    assert r.status_code == 502
    msg = r.json()["error"]["message"]
    assert "small: HTTP 401: credential rejected by the upstream" in msg
