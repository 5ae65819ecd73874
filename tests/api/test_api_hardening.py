"""Issue 20 on the API: the request-body limit (413 in the `detail` shape, streamed bodies counted as they
arrive, over real HTTP too) and the bounded 422 echo (a rejected body never comes back whole)."""

from __future__ import annotations

import httpx
import orjson
import pytest

from api.errors import INPUT_PREVIEW_CHARS, MAX_422_BYTES, _jsonable_errors
from tests.api.test_api_http import serve
from tests.fixtures_api import client_for

pytestmark = pytest.mark.anyio

URL = "/api/v1/projects"


async def test_declared_length_over_the_limit_is_413(make_app, tenants, settings):
    app = make_app(settings=settings.replace(api_max_body_bytes=10_000))
    async with client_for(app) as c:
        r = await c.post(URL, content=b'{"name": "' + b"x" * 20_000 + b'"}', headers=tenants[0].h)
        assert r.status_code == 413 and r.json() == {"detail": "Request body larger than 10000 bytes."}
        assert r.headers.get("x-request-id")
        ok = await c.post(URL, json={"name": "fits"}, headers=tenants[0].h)
        assert ok.status_code == 201


async def test_default_limit_is_one_mib(make_app, tenants):
    async with client_for(make_app()) as c:
        big = await c.post(URL, json={"name": "x" * (1 << 20)}, headers=tenants[0].h)
        assert big.status_code == 413 and "1048576" in big.json()["detail"]
        under = await c.post(URL, json={"name": "x" * 900_000}, headers=tenants[0].h)
        assert under.status_code == 422 and len(under.content) <= MAX_422_BYTES


def test_streamed_body_is_counted_over_real_http(make_app, tenants, settings):
    """No Content-Length (chunked transfer): the body is refused once the bytes received pass the limit,
    without reading it all."""
    app = make_app(settings=settings.replace(api_max_body_bytes=64_000))

    def chunks():
        yield b'{"name": "'
        for _ in range(10_000):  # 10 MB offered
            yield b"y" * 1000
        yield b'"}'

    with serve(app) as base, httpx.Client(base_url=base, timeout=30) as c:
        try:
            r = c.post(URL, content=chunks(), headers={**tenants[0].h, "Content-Type": "application/json"})
        except httpx.HTTPError:  # the server may close the connection while the client still sends
            r = None
        if r is not None:
            assert r.status_code == 413 and r.json()["detail"].startswith("Request body larger than")
        assert c.get("/health").status_code == 200  # and the server is fine


@pytest.mark.parametrize("declared", [None, b"10"])
async def test_body_stops_being_read_past_the_limit(make_app, tenants, settings, declared):
    """At the ASGI level: an endless body, without a Content-Length or with one that lies, is read only
    up to the limit (plus one chunk), then answered 413."""
    app = make_app(settings=settings.replace(api_max_body_bytes=50_000))
    pulled = 0

    async def receive():
        nonlocal pulled
        pulled += 1
        if pulled > 10_000:
            raise AssertionError("the body was read on and on")
        return {"type": "http.request", "body": b"z" * 1000, "more_body": True}

    sent = []

    async def send(message):
        sent.append(message)

    headers = [
        (b"authorization", tenants[0].h["Authorization"].encode()),
        (b"content-type", b"application/json"),
    ]
    if declared:
        headers.append((b"content-length", declared))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": URL,
        "raw_path": URL.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert start["status"] == 413 and orjson.loads(body) == {
        "detail": "Request body larger than 50000 bytes."
    }
    assert pulled <= 52


async def test_422_echo_is_bounded(make_app, tenants):
    async with client_for(make_app()) as c:
        # a long string where a short one is expected
        r = await c.post(URL, json={"name": "n" * 500_000}, headers=tenants[0].h)
        assert r.status_code == 422 and len(r.content) <= MAX_422_BYTES
        (err,) = r.json()["detail"]
        assert err["loc"] == ["body", "name"] and err["input"].startswith("n" * INPUT_PREVIEW_CHARS)
        assert len(err["input"]) < INPUT_PREVIEW_CHARS + 40
        # an object nested far deeper than any encoder's recursion: summarised, not walked
        deep = b'{"name": ' + b'{"a":' * 900 + b"1" + b"}" * 900 + b"}"
        r = await c.post(URL, content=deep, headers={**tenants[0].h, "Content-Type": "application/json"})
        assert r.status_code in (400, 422) and len(r.content) <= MAX_422_BYTES, r.text[:300]
        assert "detail" in r.json()
        # every field wrong at once, each with a long value
        bad = {k: "v" * 5000 for k in ("model_pattern", "input", "cached_input", "cache_write", "output")}
        r = await c.put("/api/v1/price-overrides", json={**bad, "note": "n" * 9000}, headers=tenants[0].h)
        assert r.status_code == 422 and len(r.content) <= MAX_422_BYTES
        assert len(r.json()["detail"]) >= 3
        # NUL and invalid UTF-8
        for raw in (b'{"name": "a\x00b"}', b'{"name": "\xff\xfe"}', b"\xff" * 100):
            r = await c.post(URL, content=raw, headers={**tenants[0].h, "Content-Type": "application/json"})
            assert 400 <= r.status_code < 500 and "detail" in orjson.loads(r.content), r.text[:300]
            assert len(r.content) <= MAX_422_BYTES


async def test_422_list_stops_before_the_byte_budget():
    errors = [
        {
            "type": "string_type",
            "loc": ("body", "items", i, "k" * 500),
            "msg": "m" * 1000,
            "input": {"x": "y" * 999},
        }
        for i in range(1000)
    ]
    out = _jsonable_errors(errors)
    assert 1 <= len(out) < 1000 and len(orjson.dumps(out)) <= MAX_422_BYTES
    assert out[0]["loc"][:3] == ["body", "items", 0] and len(out[0]["loc"][3]) < 100
    assert len(out[0]["msg"]) < 400 and len(out[0]["input"]) < INPUT_PREVIEW_CHARS + 40
