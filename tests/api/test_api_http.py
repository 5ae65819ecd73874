"""The same app served by uvicorn on a loopback port, driven by a plain httpx client over real HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn

from tests.fixtures_api import bearer


@contextmanager
def serve(app) -> Iterator[str]:
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_over_loopback(make_app, jwks, tenants):
    a, b = tenants
    app = make_app(jwt_settings=jwks.settings(), kafka_check=lambda: None)
    with serve(app) as base, httpx.Client(base_url=base, timeout=10) as c:
        assert c.get("/health").json() == {"status": "healthy"}  # no credentials: the status only
        health = c.get("/health", headers=a.h)
        assert health.status_code == 200 and health.json()["checks"]["kafka"]["status"] == "ok"
        r = c.get("/api/v1/projects")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        created = c.post("/api/v1/projects", json={"name": "Over HTTP"}, headers=a.h)
        assert created.status_code == 201
        pid = created.json()["id"]
        assert c.get(f"/api/v1/projects/{pid}", headers=b.h).status_code == 404
        token = jwks.token("EdDSA", org_slug=a.org.slug, scope="read")
        r = c.get(f"/api/v1/projects/{pid}", headers=bearer(token))
        assert r.status_code == 200 and r.json()["name"] == "Over HTTP"
        assert r.headers["x-request-id"]
        r = c.post("/api/v1/projects", json={"nom": "x"}, headers=a.h)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "name"]
        assert c.get("/api/v1/openapi.json").status_code == 200
