"""Issue 20's acceptance fuzz on the gateway: its three POST routes, served by uvicorn on loopback in front
of the stub upstreams, get hostile bodies (tests/hostile.py: deep nesting, huge strings, NUL, invalid
UTF-8, odd JSON) under JSON and wrong content types, with a valid key. Never a 5xx; every rejection in
OpenAI's error shape and under 4 KB. Bounded: JOULESTREAM_FUZZ_EXAMPLES (default 50) examples per route."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import example, given

from pipelines.gateway.schemas import MAX_BODY_BYTES
from tests.hostile import CONTENT_TYPES, FUZZ_SETTINGS, check_rejection, explicit_cases, hostile_body

Q = [{"role": "user", "content": "What is the capital of France?"}]
ROUTES = {
    "/v1/chat/completions": {"model": "auto", "messages": Q, "metadata": {"k": "v"}, "max_tokens": 5},
    "/v1/completions": {"model": "auto", "prompt": "Say hi", "max_tokens": 5},
    "/v1/embeddings": {"model": "text-embedding-3-small", "input": "hello"},
}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", list(ROUTES))
def test_hostile_bodies(gateway, path):
    client = httpx.Client(base_url=gateway.url, timeout=60)
    auth = {"Authorization": f"Bearer {gateway.tenants.key_a}"}

    @FUZZ_SETTINGS
    @given(body=hostile_body(ROUTES[path], MAX_BODY_BYTES), ctype=CONTENT_TYPES)
    def probe(body: bytes, ctype: str | None) -> None:
        headers = dict(auth)
        if ctype is not None:
            headers["Content-Type"] = ctype
        r = client.post(path, content=body, headers=headers)
        check_rejection(r.status_code, r.content, "openai")
        if ctype is not None and not ctype.startswith(("application/json", "application/vnd.api+json")):
            # JSON under another content type is refused, as OpenAI does
            assert r.status_code == 415, (ctype, r.status_code, r.content[:200])

    for body, ctype in explicit_cases(ROUTES[path], MAX_BODY_BYTES):
        probe = example(body=body, ctype=ctype)(probe)
    try:
        probe()
    finally:
        client.close()
