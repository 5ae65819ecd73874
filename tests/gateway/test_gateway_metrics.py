"""The gateway's metrics (core/metrics.py) move on real requests through the gateway (uvicorn on loopback, stub
upstreams): requests by endpoint / status / routing tier / upstream, the added-latency and upstream-wait
histograms; read from the gateway's own /prometheus/metrics (operator token) and parsed with prometheus_client."""

from __future__ import annotations

import httpx

from tests.gateway.conftest import GatewayHandle
from tests.prom import Samples, parse, total, value

Q = [{"role": "user", "content": "What is the capital of France?"}]
TOKEN = "gw-operator-token"


def scrape(gw: GatewayHandle) -> Samples:
    r = httpx.get(f"{gw.url}/prometheus/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(r.text)


def test_requests_and_added_latency_move_on_real_requests(make_gateway, stack, fresh_stubs):
    gw = make_gateway(settings=stack.settings.replace(metrics_token=TOKEN))
    before = scrape(gw)
    small = {"endpoint": "chat", "status": "200", "tier": "L0", "upstream": "google/europe-west1/tpu-v5e"}

    # two answered requests (one streamed), one refused before routing (no key), one invalid body
    raw = gw.client().chat.completions.with_raw_response.create(model="auto", messages=Q)
    assert raw.http_response.status_code == 200 and raw.headers["x-routed-to"] == small["upstream"]
    chunks = list(gw.client().chat.completions.create(model="auto", messages=Q, stream=True))
    assert chunks
    assert (
        gw.http("POST", "/v1/chat/completions", key=None, json={"model": "auto", "messages": Q}).status_code
        == 401
    )
    assert gw.http("POST", "/v1/chat/completions", json={"model": "auto"}).status_code == 422

    after = scrape(gw)
    name = "joulestream_gateway_requests_total"
    assert value(after, name, **small) - value(before, name, **small) == 2
    refused = {"endpoint": "chat", "status": "401", "tier": "none", "upstream": "none"}
    assert value(after, name, **refused) - value(before, name, **refused) == 1
    invalid = {"endpoint": "chat", "status": "422", "tier": "none", "upstream": "none"}
    assert value(after, name, **invalid) - value(before, name, **invalid) == 1
    added = "joulestream_gateway_added_latency_seconds_count"
    assert value(after, added, endpoint="chat") - value(before, added, endpoint="chat") == 4
    up = "joulestream_gateway_upstream_seconds_count"
    assert value(after, up) - value(before, up) == 2  # the two requests that reached an upstream
    assert total(after, "joulestream_gateway_upstream_seconds_sum") > total(
        before, "joulestream_gateway_upstream_seconds_sum"
    )
    # no request id, key or org in any label
    for (_n, labels), _v in after.items():
        for _k, v in labels:
            assert gw.tenants.key_a not in v and gw.tenants.org_a.id not in v


def test_gateway_metrics_need_the_operator_token(make_gateway, stack, fresh_stubs):
    gw = make_gateway(settings=stack.settings.replace(metrics_token=TOKEN))
    for headers in ({}, {"Authorization": f"Bearer {gw.tenants.key_a}"}, {"Authorization": "Bearer nope"}):
        r = httpx.get(f"{gw.url}/prometheus/metrics", headers=headers, timeout=10)
        assert r.status_code == 401 and set(r.json()) == {"detail"}, headers
    gw.server.stop()  # (its spool directory is the next one's)
    closed = make_gateway(settings=stack.settings)  # no token configured: closed
    r = httpx.get(
        f"{closed.url}/prometheus/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert r.status_code == 403 and r.json()["detail"]
