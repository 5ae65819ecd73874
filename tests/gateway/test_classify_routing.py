"""Classification rules (docs/gateway.md) and upstream ordering: cheapest capable, ties by grid intensity."""

from __future__ import annotations

import pytest

from core.contracts import RoutingTier
from core.methodology import load_factor_set
from pipelines.gateway.classify import classify, estimate_chat_prompt, estimate_prompt_input
from pipelines.gateway.config import RoutesError, parse_routes
from pipelines.gateway.errors import GatewayError
from pipelines.gateway.routing import Router


def chat(text: str, **kw):
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **kw}


@pytest.mark.parametrize(
    ("body", "tier"),
    [
        (chat("What is the capital of France?"), "L0"),
        (chat("Is this review positive or negative? 'great product'"), "L0"),
        (chat("summarize this contract"), "L2"),
        (chat("Translate this paragraph to German: hello"), "L2"),
        (chat("hi", max_tokens=2000), "L2"),
        (chat("hi", max_tokens=8000), "L3"),
        (chat("hi", reasoning_effort="high"), "L3"),
        (chat("Prove that the square root of 2 is irrational"), "L3"),
        (chat("Think step by step: how many r's in strawberry?"), "L3"),
        (chat("Write a function that merges two sorted lists"), "L3"),
        (chat("Extract the names and dates from this email"), "L1"),
        (chat("hello", response_format={"type": "json_object"}), "L1"),
        (chat("what's the weather", tools=[{"type": "function", "function": {"name": "w"}}]), "L1"),
        (chat("x " * 5000), "L2"),
        ({"model": "auto", "messages": [{"role": "user", "content": "hi"}] * 8}, "L2"),
    ],
)
def test_classification_rules(body, tier):
    prompt = estimate_chat_prompt(body["messages"])
    assert classify("chat", body, prompt).tier == RoutingTier(tier)


def test_hint_header_embeddings_and_completions():
    assert classify("chat", chat("prove it"), 10, hint="l0").tier == RoutingTier.L0
    assert classify("chat", chat("hi"), 10, hint="bogus").tier == RoutingTier.L0
    assert classify("embeddings", {"input": "prove step by step"}, 5).tier == RoutingTier.L0
    assert classify("completions", {"prompt": "Summarize: the cat sat"}, 5).tier == RoutingTier.L2
    assert estimate_prompt_input([[1, 2, 3], [4]]) == 4 and estimate_prompt_input("abcdefgh") == 2


ROUTES = """
upstreams:
  - {name: us, provider: aws, region: us-east-1, base_url: "http://a/v1", models: [llama-3.3-70b-instruct],
     price_in_per_1m: 0.2, price_out_per_1m: 0.6, tiers: [L0, L1, L2]}
  - {name: eu, provider: aws, region: eu-north-1, base_url: "http://b/v1", models: [llama-3.3-70b-instruct],
     price_in_per_1m: 0.2, price_out_per_1m: 0.6, tiers: [L0, L1, L2]}
  - {name: small, provider: google, region: us-central1, base_url: "http://c/v1", models: [gemini-2.0-flash],
     price_in_per_1m: 0.1, price_out_per_1m: 0.4, tiers: [L0]}
  - {name: big, provider: azure, base_url: "http://d/v1", models: [gpt-4o], price_in_per_1m: 2.5,
     price_out_per_1m: 10, tiers: [L0, L1, L2, L3]}
  - {name: emb, provider: openai, base_url: "http://e/v1", models: [text-embedding-3-small],
     price_in_per_1m: 0.02, price_out_per_1m: 0, tiers: [L0], endpoints: [embeddings]}
"""


def names(cands):
    return [c.upstream.name for c in cands]


def test_auto_is_cheapest_capable_then_lower_grid():
    r = Router(parse_routes(ROUTES), load_factor_set())
    assert names(r.candidates("chat", "auto", RoutingTier.L0, 100, 100)) == ["small", "eu", "us", "big"]
    assert names(r.candidates("chat", "auto", RoutingTier.L2, 100, 100)) == [
        "eu",
        "us",
        "big",
    ]  # tie → eu (0.008 kg/kWh)
    assert names(r.candidates("chat", "auto", RoutingTier.L3, 100, 100)) == ["big"]
    assert names(r.candidates("embeddings", "auto", RoutingTier.L0, 100, 0)) == ["emb"]
    assert r.candidates("chat", "auto", RoutingTier.L2, 100, 100)[0].model == "llama-3.3-70b-instruct"


def test_pinned_models():
    r = Router(parse_routes(ROUTES), load_factor_set())
    assert names(r.candidates("chat", "llama-3.3-70b-instruct", RoutingTier.L3, 10, 10)) == ["eu", "us"]
    assert names(r.candidates("chat", "gpt-4o", RoutingTier.L0, 10, 10)) == ["big"]
    with pytest.raises(GatewayError) as e:
        r.candidates("chat", "no-such-model", RoutingTier.L0, 10, 10)
    assert e.value.status == 404 and e.value.code == "model_not_found"
    with pytest.raises(GatewayError) as e:
        r.candidates("chat", "text-embedding-3-small", RoutingTier.L0, 10, 10)
    assert e.value.status == 400
    fallback = Router(parse_routes(ROUTES + "routing: {pinned_fallback_to_tier: true}\n"), load_factor_set())
    assert names(fallback.candidates("chat", "gpt-4o", RoutingTier.L0, 10, 10)) == [
        "big",
        "small",
        "eu",
        "us",
    ]


def test_model_list_has_tiers_and_cost_tier():
    r = Router(parse_routes(ROUTES), load_factor_set())
    models = {m["id"]: m for m in r.model_list()}
    assert set(models) == {
        "auto",
        "llama-3.3-70b-instruct",
        "gemini-2.0-flash",
        "gpt-4o",
        "text-embedding-3-small",
    }
    assert models["gpt-4o"]["joulestream"]["tiers"] == ["L0", "L1", "L2", "L3"]
    assert models["gpt-4o"]["joulestream"]["cost_tier"] == "high"
    assert models["gemini-2.0-flash"]["joulestream"]["cost_tier"] == "low"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("upstreams: []", "upstreams"),
        ("- just a list", "mapping"),
        (
            "upstreams: [{name: a, provider: x, base_url: 'ftp://x', models: [m], price_in_per_1m: 1, price_out_per_1m: 1}]",
            "base_url",
        ),
        (
            "upstreams: [{name: a, provider: x, base_url: 'http://x', models: [auto], price_in_per_1m: 1, price_out_per_1m: 1}]",
            "reserved",
        ),
        (
            "upstreams: [{name: a, provider: x, base_url: 'http://x', models: [m], price_in_per_1m: 1, price_out_per_1m: 1, tiers: [L9]}]",
            "tiers",
        ),
    ],
)
def test_bad_routing_files(text, problem):
    with pytest.raises(RoutesError, match=problem):
        parse_routes(text)
