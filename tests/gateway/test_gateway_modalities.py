"""Issue 21 at the gateway: the audio parts an upstream reports in its OpenAI `usage` (prompt_tokens_details /
completion_tokens_details .audio_tokens) travel on the usage event; text-only answers carry none."""

from __future__ import annotations

import orjson

from pipelines.gateway.booking import usage_tokens
from tests.gateway.conftest import read_topic

Q = [{"role": "user", "content": "What is the capital of France?"}]


def test_usage_tokens_reads_documented_modality_details():
    # OpenAI chat completion `usage` (platform.openai.com/docs/api-reference/chat/object): audio and image
    # tokens are parts of prompt_tokens / completion_tokens
    t = usage_tokens(
        {
            "prompt_tokens": 120,
            "completion_tokens": 80,
            "prompt_tokens_details": {"cached_tokens": 20, "audio_tokens": 60, "image_tokens": 50},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 70},
        }
    )
    assert (t.uncached, t.cached, t.output) == (100, 20, 80)
    # the cached split of a modality is not reported: parts count as uncached, capped at the uncached 100
    assert t.parts == {"input_audio_tokens": 60, "input_image_tokens": 40, "output_audio_tokens": 70}
    assert usage_tokens({"prompt_tokens": 5, "completion_tokens": 1}).parts == {}


def test_audio_parts_reach_the_usage_event(gateway, fresh_stubs, stack):
    fresh_stubs.config("small", audio_tokens=3, output_audio_tokens=2)
    client = gateway.client()
    client.chat.completions.create(model="auto", messages=Q)
    fresh_stubs.config("small", audio_tokens=0, output_audio_tokens=0)
    client.chat.completions.create(model="auto", messages=Q)
    events = [
        orjson.loads(m.value) for m in read_topic(stack.settings.kafka, stack.settings.raw_topic, expect=2)
    ]
    with_audio = [e for e in events if e["input_audio_tokens"]]
    assert len(with_audio) == 1
    (e,) = with_audio
    assert e["input_audio_tokens"] == 3 and e["output_audio_tokens"] == 2
    assert (
        e["input_audio_tokens"] <= e["input_tokens_uncached"]
        and e["output_audio_tokens"] <= e["output_tokens"]
    )
    (text,) = [x for x in events if not x["input_audio_tokens"]]
    assert text["output_audio_tokens"] == 0
