"""The gateway through the official `openai` SDK (sync, async, streaming) in front of the stub upstreams:
routing, fallback, headers, receipts, auth, budgets, balances, error shapes, usage events on Kafka."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time

import httpx
import openai
import orjson
import pytest
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from controlplane import ApiKeys, Projects, Workloads
from controlplane.gateway import Balances
from core.methodology import compute_footprint, load_factor_set
from tests.gateway.conftest import read_topic
from tests.stack import free_port

Q = [{"role": "user", "content": "What is the capital of France?"}]
FS = load_factor_set()


def footprint(provider, model, region, uncached, cached, output):
    return compute_footprint(
        FS,
        provider=provider,
        model=model,
        region=region,
        input_tokens_uncached=uncached,
        input_tokens_cached=cached,
        input_tokens_cache_creation=0,
        output_tokens=output,
    )


def fmt(x: float) -> str:
    return f"{x:.6f}".rstrip("0").rstrip(".") or "0"


def canonical(payload: dict) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def assert_openai_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


# --------------------------------------------------------------------------------------------- SDK


def test_sync_chat_headers_from_actual_usage_with_cached_tokens(gateway, fresh_stubs):
    fresh_stubs.config("small", cached_tokens=6)
    raw = gateway.client().chat.completions.with_raw_response.create(model="auto", messages=Q)
    resp = raw.parse()
    h = raw.headers
    assert resp.choices[0].message.content == "Hello from the stub upstream."
    u = resp.usage
    assert u.prompt_tokens_details.cached_tokens == 6
    fp = footprint("google", resp.model, "europe-west1", u.prompt_tokens - 6, 6, u.completion_tokens)
    assert h["x-energy-joules"] == fmt(fp.energy_j)
    assert h["x-carbon-mg"] == fmt(fp.co2_kg * 1e6)
    assert h["x-routed-to"] == "google/europe-west1/tpu-v5e"
    assert h["x-tier"] == "L0"
    assert h["x-receipt-id"].startswith("rcpt_")
    assert h["x-request-id"].startswith("req_")
    assert h["x-tokens-estimated"] == "false"
    # the gateway sends the upstream's credential from its env var, never the client's key
    assert gateway.tenants.key_a not in (fresh_stubs.apps["small"].stats.last_auth or "")


def test_request_id_is_echoed(gateway):
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="auto", messages=Q, extra_headers={"X-Request-Id": "my-trace-42"}
    )
    assert raw.headers["x-request-id"] == "my-trace-42"


def test_upstream_credential_comes_from_its_env_var(make_gateway, fresh_stubs, monkeypatch):
    monkeypatch.setenv("STUB_KEY_SMALL", "sk-upstream-secret")
    fresh_stubs.config("small", require_key="sk-upstream-secret")
    gw = make_gateway()
    raw = gw.client().chat.completions.with_raw_response.create(model="auto", messages=Q)
    assert raw.headers["x-routed-to"] == "google/europe-west1/tpu-v5e"
    assert fresh_stubs.apps["small"].stats.last_auth == "Bearer sk-upstream-secret"
    assert "sk-upstream-secret" not in raw.http_response.text


def test_async_client_concurrent(gateway):
    async def run():
        client = gateway.aclient()
        rs = await asyncio.gather(
            *[client.chat.completions.with_raw_response.create(model="auto", messages=Q) for _ in range(25)]
        )
        await client.close()
        return rs

    rs = asyncio.run(run())
    ids = {r.headers["x-receipt-id"] for r in rs}
    assert len(ids) == 25
    assert all(r.parse().choices[0].message.content for r in rs)


def test_streaming_with_include_usage(gateway, fresh_stubs):
    fresh_stubs.config("cheap-eu", cached_tokens=3)
    client = gateway.client()
    with client.chat.completions.with_streaming_response.create(
        model="auto",
        messages=[{"role": "user", "content": "summarize this contract"}],
        max_tokens=512,
        stream=True,
        stream_options={"include_usage": True},
    ) as resp:
        h = resp.headers
        chunks = list(resp.parse())
    assert h["x-routed-to"] == "aws/eu-north-1/h100-sxm5" and h["x-tier"] == "L2"
    assert h["x-energy-basis"] == "stream-estimate" and h["x-tokens-estimated"] == "true"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the stub upstream."
    final = chunks[-1]
    assert final.choices == [] and final.usage is not None
    assert final.usage.prompt_tokens_details.cached_tokens == 3
    extra = final.model_extra["joulestream"]
    assert extra["receipt_id"] == h["x-receipt-id"] and extra["tokens_estimated"] is False
    u = final.usage
    fp = footprint("aws", final.model, "eu-north-1", u.prompt_tokens - 3, 3, u.completion_tokens)
    assert extra["energy_joules"] == pytest.approx(fp.energy_j)
    gateway.wait_receipts_stored()
    rec = gateway.http("GET", f"/v1/receipts/{h['x-receipt-id']}").json()
    assert rec["payload"]["tokens"] == {
        "input_uncached": u.prompt_tokens - 3,
        "input_cached": 3,
        "output": u.completion_tokens,
        "total": u.total_tokens,
        "estimated": False,
    }
    assert rec["payload"]["energy_j"] == pytest.approx(fp.energy_j)


def test_streaming_without_include_usage_still_books_actual_usage(gateway, fresh_stubs):
    client = gateway.client()
    with client.chat.completions.with_streaming_response.create(
        model="auto", messages=Q, stream=True
    ) as resp:
        rid = resp.headers["x-receipt-id"]
        chunks = list(resp.parse())
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    # the gateway asked the upstream for the usage chunk anyway
    assert fresh_stubs.apps["small"].stats.last_body["stream_options"] == {"include_usage": True}
    rec = gateway.http("GET", f"/v1/receipts/{rid}").json()
    assert rec["payload"]["tokens"]["estimated"] is False and rec["payload"]["tokens"]["output"] > 0


def test_completions_embeddings_and_models(gateway, fresh_stubs):
    client = gateway.client()
    raw = client.completions.with_raw_response.create(model="auto", prompt="Say hi", max_tokens=5)
    assert raw.parse().choices[0].text and raw.headers["x-tier"] == "L0"
    raw = client.embeddings.with_raw_response.create(model="auto", input=["hello", "world"])
    emb = raw.parse()  # the SDK asks for base64 and decodes it
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 8
    assert raw.headers["x-routed-to"] == "openai/us/a100" and float(raw.headers["x-energy-joules"]) > 0
    pinned = client.embeddings.create(model="text-embedding-3-small", input="x", encoding_format="float")
    assert isinstance(pinned.data[0].embedding[0], float)
    models = {m.id: m for m in client.models.list()}
    assert {"auto", "gpt-4o", "gemini-2.0-flash", "text-embedding-3-small"} <= set(models)
    assert models["gpt-4o"].model_extra["joulestream"]["tiers"] == ["L0", "L1", "L2", "L3"]
    assert models["gpt-4o"].model_extra["joulestream"]["cost_tier"] == "high"


# --------------------------------------------------------------------------------------------- routing


def test_auto_routing_by_tier_and_pinned(gateway):
    client = gateway.client()

    def route(**kw):
        raw = client.chat.completions.with_raw_response.create(**kw)
        return raw.headers["x-routed-to"], raw.headers["x-tier"], raw.parse().model

    assert route(model="auto", messages=Q) == ("google/europe-west1/tpu-v5e", "L0", "gemini-2.0-flash")
    # L2: the two llama upstreams cost the same; eu-north-1 has the lower grid intensity
    assert route(
        model="auto", messages=[{"role": "user", "content": "summarize this contract"}], max_tokens=512
    )[:2] == (
        "aws/eu-north-1/h100-sxm5",
        "L2",
    )
    assert route(model="auto", messages=[{"role": "user", "content": "Prove that 17 is prime"}]) == (
        "azure/swedencentral/h200",
        "L3",
        "gpt-4o",
    )
    assert route(model="o3-mini", messages=Q) == ("azure/swedencentral/h200", "L0", "o3-mini")
    assert route(model="auto", messages=Q, extra_headers={"X-Joulestream-Tier": "L3"})[1] == "L3"
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=Q)
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="text-embedding-3-small", messages=Q)


@pytest.mark.parametrize("mode", ["500", "503", "429", "garbage", "401"])
def test_fallback_to_next_capable_upstream(gateway, fresh_stubs, mode):
    fresh_stubs.config("cheap-eu", fail=mode)
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "summarize this"}]
    )
    assert raw.headers["x-routed-to"] == "aws/us-east-1/h100-sxm5"
    assert fresh_stubs.requests("cheap-eu") == 1 and fresh_stubs.requests("cheap-us") == 1


def test_fallback_on_connect_error_then_502_and_503(make_gateway, fresh_stubs):
    gw = make_gateway(dead={"cheap-eu": free_port()})
    client = gw.client()
    msgs = [{"role": "user", "content": "summarize this"}]
    assert (
        client.chat.completions.with_raw_response.create(model="auto", messages=msgs).headers["x-routed-to"]
        == "aws/us-east-1/h100-sxm5"
    )
    for name in ("cheap-us", "big"):
        fresh_stubs.config(name, fail="500")
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="auto", messages=msgs)
    assert e.value.status_code == 502 and "cheap-eu" in e.value.message and "HTTP 500" in e.value.message
    for name in ("cheap-us", "big"):
        fresh_stubs.config(name, fail="429")
    r = gw.http("POST", "/v1/chat/completions", json={"model": "auto", "messages": msgs})
    err = assert_openai_error(r, 503)
    assert err["code"] == "upstream_unavailable" and r.headers["retry-after"]


def test_client_errors_from_upstream_are_passed_back(gateway, fresh_stubs):
    fresh_stubs.config("small", fail="400")
    r = gateway.http("POST", "/v1/chat/completions", json={"model": "auto", "messages": Q})
    assert_openai_error(r, 400)
    assert fresh_stubs.requests("cheap-eu") == 0  # no fallback for the client's own mistake


def test_missing_usage_is_estimated_and_flagged(gateway, fresh_stubs):
    fresh_stubs.config("small", omit_usage=True)
    raw = gateway.client().chat.completions.with_raw_response.create(model="auto", messages=Q)
    assert raw.headers["x-tokens-estimated"] == "true" and raw.headers["x-energy-estimated"] == "true"
    rec = gateway.http("GET", f"/v1/receipts/{raw.headers['x-receipt-id']}").json()["payload"]
    assert rec["tokens"]["estimated"] is True and rec["is_estimated"] is True
    assert rec["tokens"]["output"] == (len("Hello from the stub upstream.") + 3) // 4


# --------------------------------------------------------------------------------------------- receipts


def test_receipt_verifies_offline_and_is_scoped_to_the_org(gateway):
    raw = gateway.client().chat.completions.with_raw_response.create(model="auto", messages=Q)
    rid = raw.headers["x-receipt-id"]
    rec = gateway.http("GET", f"/v1/receipts/{rid}").json()  # may still be pending: served from memory
    pk = gateway.http("GET", "/v1/receipts/public-key", key=None).json()
    assert pk["algorithm"] == "ed25519" and pk["key_version"] == rec["key_version"]
    vk = VerifyKey(base64.b64decode(pk["public_key"]))
    body = canonical(rec["payload"])
    assert hashlib.sha256(body).hexdigest() == rec["sha256"]
    vk.verify(body, base64.b64decode(rec["signature"]))
    p = rec["payload"]
    assert p["receipt_id"] == rid and p["org_id"] == gateway.tenants.org_a.id
    assert p["routed_to"] == raw.headers["x-routed-to"] and p["tier"] == "L0"
    assert fmt(p["energy_j"]) == raw.headers["x-energy-joules"]
    assert p["factors_version"] == FS.version  # the built-in current set
    # a changed field fails verification
    tampered = {**p, "energy_j": p["energy_j"] / 2}
    with pytest.raises(BadSignatureError):
        vk.verify(canonical(tampered), base64.b64decode(rec["signature"]))
    assert hashlib.sha256(canonical(tampered)).hexdigest() != rec["sha256"]
    # the stored copy is byte-identical to the one served while pending
    gateway.wait_receipts_stored()
    assert gateway.http("GET", f"/v1/receipts/{rid}").json() == rec
    # another org: 404, no key: 401, read scope: fine
    assert_openai_error(gateway.http("GET", f"/v1/receipts/{rid}", key=gateway.tenants.key_b), 404)
    assert_openai_error(gateway.http("GET", f"/v1/receipts/{rid}", key=None), 401)
    assert gateway.http("GET", f"/v1/receipts/{rid}", key=gateway.tenants.key_a_read).status_code == 200
    assert_openai_error(gateway.http("GET", "/v1/receipts/rcpt_nope"), 404)


def test_receipts_survive_a_restart(make_gateway):
    gw = make_gateway()
    rids = [
        gw.client()
        .chat.completions.with_raw_response.create(model="auto", messages=Q)
        .headers["x-receipt-id"]
        for _ in range(5)
    ]
    gw.server.stop()  # graceful: pending receipts are flushed
    gw2 = make_gateway()
    for rid in rids:
        r = gw2.http("GET", f"/v1/receipts/{rid}")
        assert r.status_code == 200 and r.json()["payload"]["receipt_id"] == rid


# --------------------------------------------------------------------------------------------- auth, budgets


def test_auth_errors(gateway):
    t = gateway.tenants
    with pytest.raises(openai.AuthenticationError):
        gateway.client(key="js_live_" + "x" * 43).chat.completions.create(model="auto", messages=Q)
    assert_openai_error(gateway.http("POST", "/v1/chat/completions", key=None, json={}), 401)
    assert_openai_error(gateway.http("POST", "/v1/chat/completions", key="garbage", json={}), 401)
    with pytest.raises(openai.PermissionDeniedError):
        gateway.client(key=t.key_a_read).chat.completions.create(model="auto", messages=Q)
    key_id = ApiKeys(t.engine).authenticate(t.key_b).id
    ApiKeys(t.engine).revoke(key_id)
    with pytest.raises(openai.AuthenticationError):  # auth_cache_ttl_s: 0 in the test routes
        gateway.client(key=t.key_b).chat.completions.create(model="auto", messages=Q)


def test_project_comes_from_the_keys_workload(gateway):
    t = gateway.tenants
    proj = Projects(t.engine).create(t.org_a.id, "search")
    key = t.new_key(t.org_a.id)
    key_id = ApiKeys(t.engine).authenticate(key).id
    Workloads(t.engine).remap(t.org_a.id, "gateway_key", key_id, proj.id)
    rid = (
        gateway.client(key=key)
        .chat.completions.with_raw_response.create(model="auto", messages=Q)
        .headers["x-receipt-id"]
    )
    assert gateway.http("GET", f"/v1/receipts/{rid}").json()["payload"]["project_id"] == proj.id
    rid = (
        gateway.client()
        .chat.completions.with_raw_response.create(model="auto", messages=Q)
        .headers["x-receipt-id"]
    )
    default = Projects(t.engine).ensure_default_project(t.org_a.id)
    assert gateway.http("GET", f"/v1/receipts/{rid}").json()["payload"]["project_id"] == default.id


def test_request_rate_budget_429_with_retry_after(make_gateway):
    gw = make_gateway(extra="budgets:\n  orgs:\n    acme: {requests_per_minute: 3}\n")
    client = gw.client()
    for _ in range(3):
        client.chat.completions.create(model="auto", messages=Q)
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="auto", messages=Q)
    assert e.value.code == "rate_limit_exceeded"
    assert int(e.value.response.headers["retry-after"]) >= 1
    gw.client(key=gw.tenants.key_b).chat.completions.create(model="auto", messages=Q)  # other org unaffected


def test_token_budget_429(make_gateway):
    gw = make_gateway(extra="budgets:\n  plans:\n    free: {tokens_per_minute: 30}\n")
    client = gw.client()
    client.chat.completions.create(model="auto", messages=Q)  # ~23 tokens: still positive
    client.chat.completions.create(model="auto", messages=Q)  # overdraws
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="auto", messages=Q)
    assert e.value.code == "token_budget_exceeded" and int(e.value.response.headers["retry-after"]) >= 1


def test_prepaid_balance_is_debited_then_402(gateway):
    t = gateway.tenants
    balances = Balances(t.engine)
    balances.top_up(t.org_a.id, 200)  # 200 micro-USD
    client = gateway.client()
    prices = []
    with pytest.raises(openai.APIStatusError) as e:
        for _ in range(100):
            raw = client.chat.completions.with_raw_response.create(model="auto", messages=Q, max_tokens=20)
            prices.append(
                gateway.http("GET", f"/v1/receipts/{raw.headers['x-receipt-id']}").json()["payload"][
                    "price_usd_micros"
                ]
            )
    assert e.value.status_code == 402 and e.value.code == "insufficient_balance"
    assert prices and all(p > 0 for p in prices)
    deadline = time.monotonic() + 5
    while balances.get(t.org_a.id) != 200 - sum(prices) and time.monotonic() < deadline:
        time.sleep(0.05)  # settlement of the reservations is batched in the background
    assert balances.get(t.org_a.id) == 200 - sum(prices)
    # an org with no prepaid account is not charged and never gets 402
    gateway.client(key=t.key_b).chat.completions.create(model="auto", messages=Q)
    assert balances.get(t.org_b.id) is None


def test_require_prepaid(make_gateway):
    gw = make_gateway(extra="billing: {require_prepaid: true}\n")
    r = gw.http("POST", "/v1/chat/completions", json={"model": "auto", "messages": Q})
    assert assert_openai_error(r, 402)["type"] == "insufficient_balance"


# --------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("content", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        (b"", 400, None),
        (orjson.dumps({"model": "auto"}), 422, "messages"),
        (orjson.dumps({"model": "auto", "messages": []}), 422, "messages"),
        (
            orjson.dumps({"model": "auto", "messages": [{"role": "wizard", "content": "x"}]}),
            422,
            "messages.0.role",
        ),
        (orjson.dumps({"model": "auto", "messages": Q, "max_tokens": "5"}), 422, "max_tokens"),
        (orjson.dumps({"model": "auto", "messages": Q, "max_tokens": -1}), 422, "max_tokens"),
        (orjson.dumps({"model": "", "messages": Q}), 422, "model"),
        (orjson.dumps({"model": 5, "messages": Q}), 422, "model"),
        (orjson.dumps({"model": "auto", "messages": Q, "stream": "yes"}), 422, "stream"),
    ],
)
def test_bad_bodies_get_openai_errors(gateway, content, status, param):
    r = gateway.http(
        "POST", "/v1/chat/completions", content=content, headers={"Content-Type": "application/json"}
    )
    err = assert_openai_error(r, status)
    assert err["type"] == "invalid_request_error" and err["param"] == param
    assert r.headers["x-request-id"]


def test_sdk_raises_typed_errors_for_bad_bodies(gateway):
    client = gateway.client()
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="auto", messages=[])
    with pytest.raises(openai.UnprocessableEntityError):
        client.embeddings.create(
            model="auto", input=[], encoding_format="float", extra_body={"input": {"a": 1}}
        )


def test_never_a_500(gateway):
    bodies = [
        None,
        0,
        "s",
        [],
        {},
        {"model": None},
        {"model": "auto", "messages": [None]},
        {"model": "auto", "messages": [{"role": "user", "content": 5}]},
        {"model": "auto", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
        {"model": "auto", "messages": Q, "tools": "x"},
        {"model": "auto", "messages": Q, "n": 0},
        {"model": "auto", "prompt": [[1, "a"]]},
        {"model": "auto", "input": [-1]},
        {"model": "auto", "messages": Q, "stream_options": {"include_usage": "x"}},
    ]
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        for body in bodies:
            r = gateway.http("POST", path, content=orjson.dumps(body))
            assert r.status_code in (200, 400, 404, 422), (path, body, r.text)
            if r.status_code != 200:
                assert_openai_error(r, r.status_code)
    assert_openai_error(gateway.http("GET", "/v1/nope"), 404)
    assert_openai_error(gateway.http("GET", "/v1/chat/completions"), 405)


# --------------------------------------------------------------------------------------------- usage events


def test_one_usage_event_per_request_on_kafka(gateway, stack):
    client = gateway.client()
    rids = [
        client.chat.completions.with_raw_response.create(model="auto", messages=Q).headers["x-receipt-id"]
        for _ in range(5)
    ]
    with client.chat.completions.with_streaming_response.create(
        model="auto", messages=Q, stream=True
    ) as resp:
        rids.append(resp.headers["x-receipt-id"])
        list(resp.parse())
    msgs = read_topic(stack.settings.kafka, stack.settings.raw_topic, expect=6)
    events = [orjson.loads(m.value) for m in msgs]
    assert len(events) == 6
    assert sorted(e["labels"]["receipt_id"] for e in events) == sorted(rids)
    for m, e in zip(msgs, events, strict=True):
        assert m.key.decode() == e["event_id"] and e["source"] == "gateway"
        assert e["event_id"][14] == "7"  # UUIDv7
        assert e["org_id"] == gateway.tenants.org_a.id and e["routing_tier"] == "L0"
        assert e["input_tokens_uncached"] > 0 and e["output_tokens"] > 0
        assert e["labels"]["routing"] == "auto" and e["labels"]["failed_attempts"] == "0"
    health = gateway.http("GET", "/health").json()
    assert health["spool"]["depth"] == 0 and health["kafka"]["kafka"] == "connected"


def test_kafka_down_spools_and_health_reports_depth(make_gateway, stack):
    dead = stack.settings.replace(kafka=f"127.0.0.1:{free_port()}")
    gw = make_gateway(settings=dead, publisher_options={"send_timeout_s": 0.5, "connect_timeout_s": 0.5})
    client = gw.client()
    for _ in range(10):
        client.chat.completions.create(model="auto", messages=Q)
    deadline = time.monotonic() + 15
    while gw.http("GET", "/health").json()["spool"]["depth"] < 10 and time.monotonic() < deadline:
        time.sleep(0.1)
    h = gw.http("GET", "/health").json()
    assert h["spool"]["depth"] == 10 and h["status"] == "degraded" and h["kafka"]["kafka"] == "unavailable"


def test_full_spool_refuses_requests_with_503(make_gateway, stack):
    dead = stack.settings.replace(kafka=f"127.0.0.1:{free_port()}")
    gw = make_gateway(
        settings=dead,
        extra="spool: {max_bytes: 65536, segment_bytes: 16384}\n",
        publisher_options={"send_timeout_s": 0.3, "connect_timeout_s": 0.3, "retry_s": 60},
    )
    client = gw.client()
    with pytest.raises(openai.APIStatusError) as e:
        for _ in range(500):
            client.chat.completions.create(model="auto", messages=Q)
    assert e.value.status_code == 503 and e.value.code == "spool_full"
    h = gw.http("GET", "/health")
    assert h.status_code == 503 and h.json()["spool"]["full"] is True
