"""Issue 21: the providers' current documented usage shapes (tests/pollers/fixtures.py) through the real
provider clients and scheduler against the stubs — cache writes, modality parts, every OpenAI inference usage
endpoint, Anthropic's serving region and groupings, OpenRouter BYOK and its settle time, partial and unknown
bucket shapes — and the energy treatment of modalities and units in factor set v2.0.1, by hand."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from controlplane import Orgs
from controlplane.connections import Connections
from core.contracts import UsageEvent
from core.methodology import enrich, load_factor_set
from providers import client_for
from providers.base import PARTIAL_LABEL, HttpPolicy, bucket_span, event_id_for, floor_to
from providers.openai import EXCLUDED_KINDS, KINDS
from providers.openrouter import SETTLE, OpenRouterUsage, apply_byok, byok_share
from tests.pollers import fixtures as fx
from tests.pollers.stubs import ADMIN_KEYS
from tests.pollers.test_pollers_scheduler import events, make_scheduler, register  # noqa: F401

pytestmark = pytest.mark.anyio

H = timedelta(hours=1)


def hour(n: int) -> datetime:
    return floor_to(datetime.now(UTC), H) - n * H


def client(stubs, provider):
    return client_for(
        provider,
        ADMIN_KEYS[provider],
        base_url=stubs[provider].url,
        policy=HttpPolicy(timeout_s=5, max_attempts=2, backoff_s=0.01),
    )


def by_kind(buckets):
    out: dict[str, list] = {}
    for b in buckets:
        out.setdefault(b.labels.get("usage_api", ""), []).append(b)
    return out


# ------------------------------------------------------------------------------------------------ OpenAI


async def test_openai_current_schema_reads_cache_writes_and_modalities_directly(stubs):
    o = stubs["openai"]
    o.put_result("completions", hour(2), fx.OPENAI_COMPLETIONS_EXAMPLE)
    o.put_result("completions", hour(2), fx.OPENAI_COMPLETIONS_BATCH_FLEX)
    async with client(stubs, "openai") as c:
        buckets = await c.fetch(hour(3), hour(0) + H)
    (default,) = [b for b in buckets if b.labels.get("batch") == "false"]
    # the spec's example: 5,000 input = 3,000 uncached + 200 cache writes + 1,800 cached (not 3,200 / 1,800 / 0)
    assert (
        default.input_tokens_uncached,
        default.input_tokens_cache_creation,
        default.input_tokens_cached,
    ) == (
        3000,
        200,
        1800,
    )
    assert default.output_tokens == 1000 and default.request_count == 5
    assert (default.input_audio_tokens, default.input_image_tokens) == (300, 200)
    assert (default.input_cached_audio_tokens, default.input_cached_image_tokens) == (100, 200)
    assert (default.output_audio_tokens, default.output_image_tokens) == (100, 100)
    # default tier / not batch: no extra id keys (the id the bucket had before these groupings were asked for)
    assert default.group_keys == (("kind", "completions"), ("project_id", "proj_abc"))
    assert default.labels["service_tier"] == "default"
    (flex,) = [b for b in buckets if b.labels.get("batch") == "true"]
    assert ("batch", "true") in flex.group_keys and ("service_tier", "flex") in flex.group_keys
    assert event_id_for("c1", flex) != event_id_for("c1", default)
    assert flex.input_tokens_uncached == 10_000 and flex.output_tokens == 2_000
    req = next(r for r in o.requests if r.path.endswith("/completions"))
    assert sorted(req.params("group_by")) == ["batch", "model", "project_id", "service_tier"]


async def test_openai_older_schema_falls_back_to_subtraction_and_adds_audio(stubs):
    stubs["openai"].put_result("completions", hour(2), fx.OPENAI_COMPLETIONS_LEGACY)
    async with client(stubs, "openai") as c:
        (b,) = await c.fetch(hour(3), hour(0) + H)
    # text 1,000 input (400 cached) + 50 audio on top; 300 text output + 20 audio
    assert (b.input_tokens_uncached, b.input_tokens_cached, b.input_tokens_cache_creation) == (650, 400, 0)
    assert b.output_tokens == 320 and (b.input_audio_tokens, b.output_audio_tokens) == (50, 20)


async def test_openai_polls_every_inference_endpoint_with_its_unit(stubs):
    o = stubs["openai"]
    for kind, example in (
        ("embeddings", fx.OPENAI_EMBEDDINGS_EXAMPLE),
        ("moderations", fx.OPENAI_MODERATIONS_EXAMPLE),
        ("images", fx.OPENAI_IMAGES_EXAMPLE),
        ("images", fx.OPENAI_IMAGES_TALL),
        ("audio_speeches", fx.OPENAI_AUDIO_SPEECHES_EXAMPLE),
        ("audio_transcriptions", fx.OPENAI_AUDIO_TRANSCRIPTIONS_EXAMPLE),
        ("web_search_calls", fx.OPENAI_WEB_SEARCH_EXAMPLE),
    ):
        o.put_result(kind, hour(1), example)
    async with client(stubs, "openai") as c:
        got = by_kind(await c.fetch(hour(2), hour(0) + H))
    assert {p.rsplit("/", 1)[1] for p in (r.path for r in o.requests)} == set(KINDS)
    assert not set(EXCLUDED_KINDS) & set(KINDS)
    assert [(b.input_tokens_uncached, b.request_count) for b in got["embeddings"]] == [(16, 2)]
    assert [(b.input_tokens_uncached, b.request_count) for b in got["moderations"]] == [(16, 2)]
    images = sorted(
        (b.labels["image_size"], b.labels["source"], b.images, b.request_count) for b in got["images"]
    )
    assert images == [("1024x1024", "image.generation", 2, 2), ("1024x1536", "image.edit", 3, 1)]
    assert len({b.group_keys for b in got["images"]}) == 2  # size and source split the bucket
    assert [(b.audio_characters, b.request_count) for b in got["audio_speeches"]] == [(45, 1)]
    assert [(b.audio_seconds, b.request_count) for b in got["audio_transcriptions"]] == [(20.0, 1)]
    # web searches: the calls; their model requests are already counted by completions
    assert [(b.web_search_calls, b.request_count) for b in got["web_search_calls"]] == [(7, 0)]
    images_req = next(r for r in o.requests if r.path.endswith("/images"))
    assert sorted(images_req.params("group_by")) == ["model", "project_id", "size", "source"]


async def test_partial_last_bucket_is_accepted_under_the_whole_buckets_id(stubs):
    o = stubs["openai"]
    o.now = hour(0) + timedelta(minutes=20)
    o.partial_last = True
    o.put_result("embeddings", hour(0), fx.OPENAI_EMBEDDINGS_EXAMPLE)
    async with client(stubs, "openai") as c:
        (partial,) = await c.fetch(hour(1), hour(0) + H)
    assert partial.bucket_end - partial.bucket_start == H and partial.labels[PARTIAL_LABEL] == "true"
    o.partial_last = False
    async with client(stubs, "openai") as c:
        (whole,) = await c.fetch(hour(1), hour(0) + H)
    assert PARTIAL_LABEL not in whole.labels and event_id_for("c", whole) == event_id_for("c", partial)


def test_unknown_bucket_shapes_are_skipped_with_a_note_not_an_error():
    notes: list[str] = []
    start = hour(5)
    assert bucket_span(start, start + H, H, notes, "x") == (start, start + H)
    assert bucket_span(start, start + timedelta(minutes=5), H, notes, "x") == (start, start + H)
    assert bucket_span(start, start + 2 * H, H, notes, "x") is None  # longer
    assert bucket_span(start + timedelta(minutes=1), start + H, H, notes, "x") is None  # misaligned
    assert bucket_span(start, start, H, notes, "x") is None  # empty
    assert len(notes) == 3 and all("unexpected shape" in n for n in notes)


# ------------------------------------------------------------------------------------------------ Anthropic


async def test_anthropic_groups_by_workspace_tier_context_and_serving_region(stubs):
    a = stubs["anthropic"]
    a.put_result(hour(2), fx.ANTHROPIC_MESSAGES_EXAMPLE)
    a.put_result(hour(2), fx.ANTHROPIC_MESSAGES_GLOBAL)
    async with client(stubs, "anthropic") as c:
        buckets = await c.fetch(hour(3), hour(0) + H)
    req = a.requests[0]
    assert set(req.params("group_by[]")) == {"model", "workspace_id", "service_tier", "context_window",
                                             "inference_geo"}  # fmt: skip
    us = next(b for b in buckets if b.region == "us")
    assert (us.input_tokens_uncached, us.input_tokens_cached, us.input_tokens_cache_creation) == (
        1500,
        200,
        1500,
    )
    assert us.output_tokens == 500 and us.web_search_calls == 10
    assert us.labels["anthropic_workspace_id"] == "wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ"
    assert ("workspace_id", "wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ") in us.group_keys
    assert ("service_tier", "standard") not in us.group_keys  # the default does not split
    glob = next(b for b in buckets if b.region == "global")
    assert glob.input_tokens_uncached == 4000 and ("context_window", "200k-1M") in glob.group_keys
    assert "anthropic_workspace_id" not in glob.labels  # the default workspace reports null
    assert event_id_for("c", us) != event_id_for("c", glob)


def test_anthropic_global_region_is_flagged_and_us_uses_the_us_grid():
    fs = load_factor_set("v2.0.1")
    now = hour(3)
    base = dict(event_id="e", source="poller", org_id="o", project_id="p", workload_id="w",
                provider="anthropic", model="claude-sonnet-4-20250514", bucket_start=now, bucket_end=now + H,
                event_timestamp=now + H, input_tokens_uncached=1000)  # fmt: skip
    us = enrich(UsageEvent(**base, region="us"), fs, datetime.now(UTC))
    glob = enrich(UsageEvent(**base, region="global"), fs, datetime.now(UTC))
    assert us.grid_intensity_kg_per_kwh == fs.grid["anthropic"]["us"] and not us.is_estimated
    assert glob.is_estimated and any("unknown region 'global'" in r for r in glob.estimation_reasons)


# ------------------------------------------------------------------------------------------------ OpenRouter


def test_openrouter_byok_share_by_cost():
    assert byok_share(0.01, 0.0) == 0.0
    assert byok_share(0.005, 0.1) == 1.0  # usage is only the 5% fee
    assert math.isclose(byok_share(0.015, 0.012), 0.012 / (0.012 + 0.015 - 0.0006))


async def test_openrouter_byok_rows_are_not_counted_twice(stubs):
    o = stubs["openrouter"]
    day = datetime.now(UTC).date() - timedelta(days=2)
    o.put(day, "ep-gpt41", **fx.OPENROUTER_BYOK_EXAMPLE)
    o.put(day, "ep-sonnet", **fx.OPENROUTER_BYOK_ONLY)
    start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    async with client(stubs, "openrouter") as c:
        buckets = await c.fetch(start, start + timedelta(days=1))
    assert {b.labels["reasoning_tokens"] for b in buckets if "reasoning_tokens" in b.labels} == {"25"}
    # the org polls Anthropic itself but not OpenAI
    out, notes = apply_byok(buckets, {"anthropic"})
    sonnet = next(b for b in out if b.model == "anthropic/claude-sonnet-4")
    assert (sonnet.input_tokens_uncached, sonnet.output_tokens, sonnet.request_count) == (0, 0, 0)
    assert sonnet.labels["byok_counted_by"] == "anthropic" and "usage_note" in sonnet.labels
    gpt = next(b for b in out if b.model == "openai/gpt-4.1")
    assert (gpt.input_tokens_uncached, gpt.output_tokens) == (50, 125)  # no OpenAI connection: counted here
    assert gpt.labels["byok_counted_by"] == "openrouter"
    # both upstreams polled: the mixed row keeps its credit-paid part (1 − share, share = 0.4545…)
    out, notes = apply_byok(buckets, {"anthropic", "openai"})
    gpt = next(b for b in out if b.model == "openai/gpt-4.1")
    assert (gpt.input_tokens_uncached, gpt.output_tokens, gpt.request_count) == (27, 68, 3)
    assert len(notes) == 2 and all("BYOK" in n for n in notes)


def test_openrouter_publishes_a_day_only_after_it_settled():
    c = OpenRouterUsage("k")
    midnight = floor_to(datetime.now(UTC), timedelta(days=1))
    yesterday = (midnight - timedelta(days=1)).date()
    window = (midnight - timedelta(days=2), midnight + timedelta(days=1))
    assert yesterday not in c.completed_days(*window, now=midnight + SETTLE - timedelta(minutes=1))
    assert yesterday in c.completed_days(*window, now=midnight + SETTLE)
    assert SETTLE == timedelta(minutes=30)


async def test_reasoning_above_completion_is_counted_on_top(stubs):
    day = datetime.now(UTC).date() - timedelta(days=2)
    stubs["openrouter"].put(day, "ep-r1", model="deepseek/deepseek-r1", requests=1, prompt_tokens=10,
                            completion_tokens=5, reasoning_tokens=40)  # fmt: skip
    start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    async with client(stubs, "openrouter") as c:
        (b,) = await c.fetch(start, start + timedelta(days=1))
    assert b.output_tokens == 45 and "reasoning_tokens 40 > completion_tokens 5" in b.labels["usage_note"]


async def test_scheduler_applies_byok_and_reports_it_on_the_poll(
    engine,
    stubs,
    secret_store,
    producer,
    make_scheduler,  # noqa: F811
):
    org = Orgs(engine).create("acme")
    day = datetime.now(UTC).date() - timedelta(days=1)
    stubs["openrouter"].put(day, "ep-sonnet", **fx.OPENROUTER_BYOK_ONLY)
    conn = register(engine, secret_store, org.id, "openrouter")
    register(engine, secret_store, org.id, "anthropic")
    (r,) = [await make_scheduler().poll_connection(conn.id)]
    assert r.outcome == "ok" and any("BYOK" in n and "anthropic" in n for n in r.notes)
    # visible on the connection (GET /api/v1/connections/{id} → poll_notes) until the next successful poll
    stored = Connections(engine).get(org.id, conn.id)
    assert stored is not None and any("BYOK" in n for n in stored.poll_notes)
    (ev,) = [e for e in events(producer) if e.provider == "openrouter"]
    assert ev.total_tokens == 0 and ev.labels["byok_counted_by"] == "anthropic"
    enriched = enrich(ev, load_factor_set("v2.0.1"), datetime.now(UTC))
    assert enriched.is_estimated and any("openrouter BYOK" in x for x in enriched.estimation_reasons)


# ------------------------------------------------------------------------------------------------ energy


def test_units_and_modalities_energy_by_hand():
    fs = load_factor_set("v2.0.1")
    now = hour(3)
    base = dict(event_id="e", source="poller", org_id="o", project_id="p", workload_id="w", provider="openai",
                bucket_start=now, bucket_end=now + H, event_timestamp=now + H)  # fmt: skip
    pue = fs.pue["openai"]
    tall = enrich(
        UsageEvent(**base, model="gpt-image-1", images=3, labels={"image_size": "1024x1536"}), fs, now
    )
    assert math.isclose(tall.energy_j, 3 * 10465 * 1.5 * pue) and tall.is_estimated
    assert math.isclose(tall.energy_j_high, 3 * 41364 * 1.5 * pue)
    speech = enrich(UsageEvent(**base, model="tts-1", audio_characters=45), fs, now)
    assert math.isclose(speech.energy_j, 45 * 1.0 * pue)
    stt = enrich(UsageEvent(**base, model="whisper-1", audio_seconds=20), fs, now)
    assert math.isclose(stt.energy_j, 20 * 15 * pue) and math.isclose(stt.energy_j_low, 20 * 3.75 * pue)
    web = enrich(UsageEvent(**base, model="gpt-4o-mini", web_search_calls=7), fs, now)
    assert math.isclose(web.energy_j, 7 * 1000 * pue)
    # modality parts: the point is the text figure (multiplier 1.0); the high bound adds (m − 1) per part
    text = UsageEvent(**base, model="gpt-4o-mini", input_tokens_uncached=3000, output_tokens=1000)
    mixed = text.model_copy(update={"input_audio_tokens": 300, "output_image_tokens": 100})
    a, b = enrich(text, fs, now), enrich(mixed, fs, now)
    assert a.energy_j == b.energy_j and not a.is_estimated and b.is_estimated
    tier = fs.tiers[a.model_tier]
    extra_high = 300 * tier.high.prefill * 0.5 + 100 * tier.high.decode * 1.0
    assert math.isclose(b.energy_j_high, a.energy_j_high + extra_high * pue)
    # a factor set without the unit section says the units were not counted
    old = enrich(UsageEvent(**base, model="dall-e-3", images=2), load_factor_set("v2.0"), now)
    assert old.energy_j == 0 and any("not counted" in r for r in old.estimation_reasons)


def test_modality_parts_larger_than_their_total_are_rejected():
    now = hour(3)
    with pytest.raises(ValueError, match="parts of the token figures"):
        UsageEvent(event_id="e", source="poller", org_id="o", project_id="p", workload_id="w", provider="openai",
                   model="m", bucket_start=now, bucket_end=now + H, event_timestamp=now + H,
                   input_tokens_uncached=10, input_audio_tokens=11)  # fmt: skip


async def test_connecting_the_upstream_later_corrects_openrouter_days_in_the_backfill(
    engine,
    stubs,
    secret_store,
    producer,
    make_scheduler,  # noqa: F811
):
    org = Orgs(engine).create("acme")
    day = datetime.now(UTC).date() - timedelta(days=4)  # older than the lookback, inside the backfill
    stubs["openrouter"].put(day, "ep-sonnet", **fx.OPENROUTER_BYOK_ONLY)
    conn = register(engine, secret_store, org.id, "openrouter")
    sched = make_scheduler(lookback=timedelta(hours=6), initial_backfill=timedelta(days=7))
    await sched.poll_connection(conn.id)
    (first,) = events(producer)
    assert first.input_tokens_uncached == 20_000  # no Anthropic connection: counted here
    register(engine, secret_store, org.id, "anthropic")  # now its poller reports these tokens too
    await sched.poll_connection(conn.id)
    (second,) = events(producer, 1)
    assert second.event_id == first.event_id and second.revision > first.revision
    assert second.total_tokens == 0 and second.labels["byok_counted_by"] == "anthropic"
