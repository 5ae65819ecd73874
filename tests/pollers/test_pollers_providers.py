"""The provider clients (pipelines/pollers/<provider>.py) against the local stub servers: documented request
shapes, pagination, the bucket → figures mapping, 429 + Retry-After, 5xx, revoked and under-privileged keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from providers import client_for
from providers.base import (
    AuthError,
    HttpPolicy,
    ProviderUnavailable,
    RateLimited,
    UsageBucket,
    content_hash,
    event_id_for,
    floor_to,
    next_revision,
    retry_after_seconds,
)
from tests.pollers.stubs import ADMIN_KEYS, LIMITED_KEYS

pytestmark = pytest.mark.anyio

H = timedelta(hours=1)


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, s: float) -> None:
        self.calls.append(s)


def client(stubs, provider, key=None, **kw):
    return client_for(
        provider,
        key or ADMIN_KEYS[provider],
        base_url=stubs[provider].url,
        policy=kw.pop("policy", HttpPolicy(timeout_s=5, max_attempts=3, backoff_s=0.01)),
        **kw,
    )


def hour(n: int) -> datetime:
    """The start of the hour n hours before the current one."""
    return floor_to(datetime.now(UTC), H) - n * H


async def test_openai_pages_and_maps_completions_and_embeddings(stubs):
    stub = stubs["openai"]
    stub.put("completions", hour(5), "gpt-4o", "proj_a", input_tokens=1000, input_cached_tokens=300,
             output_tokens=200, num_model_requests=7)  # fmt: skip
    stub.put(
        "completions", hour(5), "gpt-4o", "proj_b", input_tokens=10, output_tokens=1, num_model_requests=1
    )
    stub.put(
        "completions",
        hour(2),
        "gpt-4o-mini",
        "proj_a",
        input_tokens=50,
        output_tokens=5,
        num_model_requests=2,
    )
    stub.put(
        "embeddings", hour(3), "text-embedding-3-small", "proj_a", input_tokens=4000, num_model_requests=9
    )
    stub.page_limit = 2  # 2 hourly buckets per page: the 8-hour window needs 4 pages per endpoint
    async with client(stubs, "openai") as c:
        buckets = await c.fetch(hour(7), hour(0) + H)
    assert len([r for r in stub.requests if r.path.endswith("/completions")]) == 4
    assert len([r for r in stub.requests if r.path.endswith("/embeddings")]) == 4
    first = stub.requests[0]
    assert first.params("bucket_width") == ["1h"]
    assert sorted(first.params("group_by")) == ["batch", "model", "project_id", "service_tier"]
    assert first.params("start_time") == [str(int(hour(7).timestamp()))]
    assert first.headers["authorization"] == f"Bearer {ADMIN_KEYS['openai']}"
    assert all(ADMIN_KEYS["openai"] not in f"{r.path}?{r.query}" for r in stub.requests)  # only in the header
    by = {(b.bucket_start, b.model, dict(b.group_keys)["project_id"]): b for b in buckets}
    assert len(by) == 4
    b = by[(hour(5), "gpt-4o", "proj_a")]
    assert (b.input_tokens_uncached, b.input_tokens_cached, b.output_tokens, b.request_count) == (
        700,
        300,
        200,
        7,
    )
    assert b.bucket_end - b.bucket_start == H and b.labels["openai_project_id"] == "proj_a"
    e = by[(hour(3), "text-embedding-3-small", "proj_a")]
    assert (e.input_tokens_uncached, e.output_tokens, e.request_count) == (4000, 0, 9)
    assert dict(e.group_keys)["kind"] == "embeddings"


async def test_anthropic_maps_cache_read_and_creation(stubs):
    stub = stubs["anthropic"]
    stub.put(hour(4), "claude-sonnet-4-20250514", uncached_input_tokens=900, cache_read_input_tokens=5000,
             cache_5m=300, cache_1h=200, output_tokens=400)  # fmt: skip
    stub.put(hour(1), "claude-3-5-haiku-20241022", uncached_input_tokens=10, output_tokens=3)
    stub.page_limit = 3
    async with client(stubs, "anthropic") as c:
        buckets = await c.fetch(hour(6), hour(0) + H)
    assert len(stub.requests) == 3  # 7 buckets, 3 per page
    r = stub.requests[0]
    assert (
        r.headers["x-api-key"] == ADMIN_KEYS["anthropic"] and r.headers["anthropic-version"] == "2023-06-01"
    )
    assert "authorization" not in r.headers
    assert r.params("group_by[]") == [
        "model",
        "workspace_id",
        "service_tier",
        "context_window",
        "inference_geo",
    ]
    assert r.params("bucket_width") == ["1h"]
    assert r.params("starting_at") == [hour(6).strftime("%Y-%m-%dT%H:%M:%SZ")]
    by = {b.model: b for b in buckets}
    s = by["claude-sonnet-4-20250514"]
    assert (
        s.input_tokens_uncached,
        s.input_tokens_cached,
        s.input_tokens_cache_creation,
        s.output_tokens,
    ) == (
        900,
        5000,
        500,
        400,
    )
    assert s.bucket_start == hour(4) and s.request_count == 0


async def test_openrouter_daily_completed_days_only(stubs):
    stub = stubs["openrouter"]
    today = datetime.now(UTC).date()
    for i in (1, 2, 5):
        stub.put(today - timedelta(days=i), "ep-1", model="openai/gpt-4.1", requests=5 * i, prompt_tokens=100 * i,
                 completion_tokens=30 * i, reasoning_tokens=7)  # fmt: skip
    stub.put(today - timedelta(days=1), "ep-2", model="meta-llama/llama-3.3-70b-instruct", requests=1,
             prompt_tokens=11, completion_tokens=2, provider_name="Groq")  # fmt: skip
    now = datetime.now(UTC)
    async with client(stubs, "openrouter") as c:
        buckets = await c.fetch(floor_to(now - timedelta(days=2), timedelta(days=1)), now)
    # the window covers 2 completed days (+ today, which the API does not serve yet): one request per day
    assert sorted(r.params("date")[0] for r in stub.requests) == [
        (today - timedelta(days=2)).isoformat(),
        (today - timedelta(days=1)).isoformat(),
    ]
    assert {(b.bucket_start.date(), b.model) for b in buckets} == {
        (today - timedelta(days=2), "openai/gpt-4.1"),
        (today - timedelta(days=1), "openai/gpt-4.1"),
        (today - timedelta(days=1), "meta-llama/llama-3.3-70b-instruct"),
    }
    b = next(b for b in buckets if b.model.startswith("meta"))
    assert b.bucket_end - b.bucket_start == timedelta(days=1) and b.labels["granularity"] == "1d"
    assert (b.input_tokens_uncached, b.output_tokens, b.request_count) == (11, 2, 1)
    assert b.labels["upstream_provider"] == "Groq"
    # a wide window: one unfiltered request (the API serves 30 days), filtered to the window
    stub.requests.clear()
    async with client(stubs, "openrouter") as c:
        wide = await c.fetch(now - timedelta(days=20), now)
    assert len(stub.requests) == 1 and stub.requests[0].params("date") == []
    assert len(wide) == 4


async def test_429_waits_retry_after_then_succeeds(stubs):
    stubs["openai"].fail_next(429, retry_after="2", times=2)
    sleeps = Sleeps()
    async with client(stubs, "openai", sleep=sleeps) as c:
        await c.fetch(hour(1), hour(0) + H)
    assert sleeps.calls[:2] == [2.0, 2.0]


async def test_429_that_persists_raises_rate_limited(stubs):
    stubs["anthropic"].fail_next(429, retry_after="7", times=10)
    async with client(stubs, "anthropic", sleep=Sleeps()) as c:
        with pytest.raises(RateLimited) as info:
            await c.fetch(hour(1), hour(0) + H)
    assert info.value.retry_after == 7


async def test_5xx_retried_then_unavailable(stubs):
    stubs["openrouter"].fail_next(503, times=1)
    sleeps = Sleeps()
    async with client(stubs, "openrouter", sleep=sleeps) as c:
        await c.validate()  # one 503, then fine
        assert len(sleeps.calls) == 1
        stubs["openrouter"].fail_next(500, times=5)
        with pytest.raises(ProviderUnavailable, match="500"):
            await c.validate()


@pytest.mark.parametrize("provider", ["openai", "anthropic", "openrouter"])
async def test_revoked_and_limited_keys(stubs, provider):
    stubs[provider].keys[ADMIN_KEYS[provider]] = "revoked"
    async with client(stubs, provider) as c:
        with pytest.raises(AuthError) as info:
            await c.validate()
    assert info.value.status == 401
    assert ADMIN_KEYS[provider] not in str(info.value)
    async with client(stubs, provider, key=LIMITED_KEYS[provider]) as c:
        with pytest.raises(AuthError) as info:
            await c.validate()
    assert info.value.status == 403 and "permission" in str(info.value)


def test_key_format_checks():
    assert "sk-admin-" in client_for("openai", "sk-proj-abc123456").check_key_format()
    assert client_for("openai", "sk-admin-abc123456").check_key_format() is None
    assert "sk-ant-admin" in client_for("anthropic", "sk-ant-api03-xyz").check_key_format()
    assert client_for("openrouter", "sk-or-v1-anything").check_key_format() is None


def test_event_ids_are_deterministic_and_keyed():
    t = datetime(2026, 3, 1, 12, tzinfo=UTC)
    b = UsageBucket(
        "openai", t, t + H, "gpt-4o", (("kind", "completions"), ("project_id", "p")), 1, 2, 0, 3, 4
    )
    same = UsageBucket(
        "openai", t, t + H, "gpt-4o", (("project_id", "p"), ("kind", "completions")), 9, 9, 9, 9, 9
    )
    assert event_id_for("c1", b) == event_id_for("c1", same)  # figures and key order do not matter
    assert event_id_for("c1", b) != event_id_for("c2", b)
    other = UsageBucket("openai", t, t + H, "gpt-4o", (("kind", "completions"), ("project_id", "q")))
    assert event_id_for("c1", b) != event_id_for("c1", other)
    later = UsageBucket("openai", t + H, t + 2 * H, "gpt-4o", b.group_keys)
    assert event_id_for("c1", b) != event_id_for("c1", later)
    assert event_id_for("c1", b).startswith("openai-")
    assert content_hash(b) != content_hash(same)
    assert next_revision(t, None) == int(t.timestamp() * 1000)
    assert next_revision(t, 10**13) == 10**13 + 1  # always strictly above the previous revision


def test_retry_after_formats():
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    http_date = (datetime.now(UTC) + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert 25 <= retry_after_seconds(http_date) <= 31
