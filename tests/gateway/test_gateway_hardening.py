"""Issue 20 on the gateway: deeply nested bodies (400, not 503 "retry", no error-level traceback), JSON sent
under another content type (415), the rate limit of /v1/receipts/public-key, /health details behind a key,
upstream answers the gateway cannot re-encode."""

from __future__ import annotations

import logging

import httpx
import orjson
import pytest

from pipelines.gateway.schemas import MAX_JSON_DEPTH
from pipelines.gateway.upstream import ClientFault
from tests.gateway.test_gateway_api import Q, assert_openai_error


def nested(depth: int, leaf: object = 1) -> object:
    """`depth` objects inside one another."""
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def post(gw, path: str, body: bytes, key: str | None = "a", **headers: str) -> httpx.Response:
    return gw.http(
        "POST", path, key=key, content=body, headers={"Content-Type": "application/json", **headers}
    )


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda d: {"model": "auto", "messages": Q, "metadata": nested(d)}, id="metadata"),
        pytest.param(
            lambda d: {
                "model": "auto",
                "messages": Q,
                "tools": [{"type": "function", "function": {"name": "f", "parameters": nested(d)}}],
            },
            id="tool-parameters",
        ),
    ],
)
def test_deep_nesting_is_a_400_not_a_503(gateway, caplog, build):
    caplog.set_level(logging.WARNING)
    # the depth the probe found failing (254+), a little over the limit, and past orjson's reader (1024)
    for depth in (260, MAX_JSON_DEPTH + 1, 2000):
        raw = orjson.dumps(build(depth)) if depth < 254 else _dump_deep(build, depth)
        r = post(gateway, "/v1/chat/completions", raw)
        err = assert_openai_error(r, 400)
        assert err["type"] == "invalid_request_error" and err["code"] == "invalid_json"
        assert "retry" not in err["message"].lower()
    # within the limit the request goes through (forwarded, answered, booked)
    r = post(gateway, "/v1/chat/completions", orjson.dumps(build(MAX_JSON_DEPTH - 5)))
    assert r.status_code == 200, r.text
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]


def _dump_deep(build, depth: int) -> bytes:
    """orjson cannot write this deep (that was the bug): build the text around a marker."""
    shallow = orjson.dumps(build(1)).decode()  # ... {"a":1} ...
    inner = '{"a":' * depth + "1" + "}" * depth
    return shallow.replace('{"a":1}', inner, 1).encode()


def test_deep_bodies_on_completions_and_embeddings(gateway):
    deep = '{"a":' * 300 + "1" + "}" * 300
    for path, body in (
        ("/v1/completions", '{"model": "auto", "prompt": "hi", "logit_bias": ' + deep + "}"),
        ("/v1/embeddings", '{"model": "text-embedding-3-small", "input": "hi", "user": ' + deep + "}"),
        ("/v1/embeddings", '{"model": "text-embedding-3-small", "input": ' + "[" * 900 + "]" * 900 + "}"),
    ):
        err = assert_openai_error(post(gateway, path, body.encode()), 400)
        assert err["code"] in ("invalid_json", "invalid_body")


@pytest.mark.parametrize(
    "ctype",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/json"],
)
def test_json_under_another_content_type_is_415(gateway, ctype):
    raw = orjson.dumps({"model": "auto", "messages": Q})
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        r = gateway.http("POST", path, content=raw, headers={"Content-Type": ctype})
        err = assert_openai_error(r, 415)
        assert err["type"] == "invalid_request_error" and err["code"] == "unsupported_content_type"
        assert "application/json" in err["message"]


@pytest.mark.parametrize(
    "ctype", ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON", None]
)
def test_json_content_types_accepted(gateway, ctype):
    headers = {"Content-Type": ctype} if ctype else {}
    r = gateway.http(
        "POST",
        "/v1/chat/completions",
        content=orjson.dumps({"model": "auto", "messages": Q}),
        headers=headers,
    )
    assert r.status_code == 200, r.text


def test_public_key_is_rate_limited_per_client(make_gateway, stack):
    gw = make_gateway(settings=stack.settings.replace(public_rate_limit="5/minute"))
    statuses = [gw.http("GET", "/v1/receipts/public-key", key=None).status_code for _ in range(5)]
    assert statuses == [200] * 5
    r = gw.http("GET", "/v1/receipts/public-key", key=None)
    err = assert_openai_error(r, 429)
    assert err["type"] == "rate_limit_error" and int(r.headers["retry-after"]) >= 1
    # X-Forwarded-For spoofing: tests/cli/test_processes.py, against the real `joulestream gateway`


def test_health_details_need_a_key(make_gateway, stack, tenants):
    gw = make_gateway()
    for headers in ({}, {"Authorization": "Bearer js_live_nope"}, {"Authorization": "Basic abc"}):
        r = httpx.get(f"{gw.url}/health", headers=headers)
        assert (
            r.status_code == 200 and set(r.json()) == {"status"} and r.json()["status"] in ("ok", "degraded")
        )
    for key in (tenants.key_a, tenants.key_a_read):
        body = gw.http("GET", "/health", key=key).json()
        assert body["status"] in ("ok", "degraded") and body["factors_version"] and "kafka" in body["kafka"]
        assert "depth" in body["spool"] and "served" in body


def test_health_details_for_everyone_when_configured(make_gateway, stack):
    gw = make_gateway(settings=stack.settings.replace(health_details=True))
    assert "spool" in httpx.get(f"{gw.url}/health").json()


def test_upstream_error_passed_on_verbatim():
    """An upstream 400 in OpenAI's shape is handed back as its own bytes (never re-encoded), even when it
    nests deeper than the gateway could write; anything else becomes the gateway's own error."""
    deep = '{"a":' * 300 + "1" + "}" * 300
    body = ('{"error": {"message": "bad", "type": "invalid_request_error", "x": ' + deep + "}}").encode()
    r = ClientFault(400, body).response({"X-Request-Id": "r1"})
    assert r.status_code == 400 and r.body == body and r.headers["x-request-id"] == "r1"
    other = ClientFault(422, b"<html>nope</html>").response({})
    assert orjson.loads(other.body)["error"]["message"] == "The upstream rejected the request (HTTP 422)."


def test_stream_chunk_too_deep_to_rewrite_is_passed_on():
    """An upstream SSE chunk nested deeper than orjson writes is relayed as it came, not dropped with an
    exception in the middle of the stream."""
    from pipelines.gateway.relay import StreamRelay

    relay = StreamRelay.__new__(StreamRelay)
    event = b'data: {"x": ' + b'{"a":' * 300 + b"1" + b"}" * 300 + b"}\n\n"
    deep = orjson.loads(event[6:])
    assert relay._encode(deep, event) == event
    assert relay._encode({"ok": 1}, event) == b'data: {"ok":1}\n\n'
