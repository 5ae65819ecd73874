"""Issue 21 through the real pipeline: the providers' documented examples (tests/pollers/fixtures.py) served by
the stubs → the real pollers → usage.raw.v1 on the embedded broker → a real stream worker enriching with factor
set v2.0.1 → the warehouse. The totals per token kind, modality part, unit and serving region equal the values
computed by hand below (and the energy the methodology's functions give for the same events); a re-poll
changes nothing; OpenRouter's BYOK rows are not counted a second time."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import pytest

from controlplane import FactorVersions, Orgs, get_engine, upgrade
from core.methodology import FACTORS_DIR
from tests.pollers import fixtures as fx
from tests.pollers.test_pollers_pipeline import Harness, hour
from tests.stack import WorkerProcess

pytestmark = pytest.mark.slow

# By hand, from the fixtures (docs/pollers.md has the mapping):
#   OpenAI completions example 3000 / 1800 cached / 200 writes / 1000 out, 5 requests; batch+flex 10000 / 2000,
#   20 requests; embeddings 16 (2 req); moderations 16 (2 req); images 2 (2 req) + 3 (1 req); speech 45 chars
#   (1 req); transcription 20 s (1 req); web search 7 calls.
#   Anthropic us: 1500 / 200 cached / 1000 + 500 writes / 500 out, 10 web searches; global: 4000 / 800 out.
#   OpenRouter (both upstreams connected): gpt-4.1 mixed row, BYOK share 0.012 / (0.012 + 0.015 − 0.05 × 0.012)
#   = 0.4545…: 50 → 27 prompt, 125 → 68 completion, 5 → 3 requests; the BYOK-only row → 0.
WANT = {
    "events": 13,
    "request_count": 5 + 20 + 2 + 2 + 2 + 1 + 1 + 1 + 3,
    "input_tokens_uncached": 3000 + 10_000 + 16 + 16 + 1500 + 4000 + 27,
    "input_tokens_cached": 1800 + 200,
    "input_tokens_cache_creation": 200 + 1500,
    "output_tokens": 1000 + 2000 + 500 + 800 + 68,
    "input_audio_tokens": 300,
    "input_image_tokens": 200,
    "input_cached_audio_tokens": 100,
    "input_cached_image_tokens": 200,
    "output_audio_tokens": 100,
    "output_image_tokens": 100,
    "images": 5,
    "audio_seconds": 20.0,
    "audio_characters": 45,
    "web_search_calls": 7 + 10,
}
BY_REGION = {  # (provider, region) → (events, uncached, cached, cache writes, output, web searches)
    ("anthropic", "us"): (1, 1500, 200, 1500, 500, 10),
    ("anthropic", "global"): (1, 4000, 0, 0, 800, 0),
    ("openai", ""): (9, 3000 + 10_000 + 32, 1800, 200, 3000, 7),
    ("openrouter", ""): (2, 27, 0, 0, 68, 0),
}


def seed(stubs, day: date) -> None:
    o, a, r = stubs["openai"], stubs["anthropic"], stubs["openrouter"]
    o.put_result("completions", hour(5), fx.OPENAI_COMPLETIONS_EXAMPLE)
    o.put_result("completions", hour(5), fx.OPENAI_COMPLETIONS_BATCH_FLEX)
    o.put_result("embeddings", hour(4), fx.OPENAI_EMBEDDINGS_EXAMPLE)
    o.put_result("moderations", hour(4), fx.OPENAI_MODERATIONS_EXAMPLE)
    o.put_result("images", hour(3), fx.OPENAI_IMAGES_EXAMPLE)
    o.put_result("images", hour(3), fx.OPENAI_IMAGES_TALL)
    o.put_result("audio_speeches", hour(2), fx.OPENAI_AUDIO_SPEECHES_EXAMPLE)
    o.put_result("audio_transcriptions", hour(2), fx.OPENAI_AUDIO_TRANSCRIPTIONS_EXAMPLE)
    o.put_result("web_search_calls", hour(2), fx.OPENAI_WEB_SEARCH_EXAMPLE)
    a.put_result(hour(4), fx.ANTHROPIC_MESSAGES_EXAMPLE)
    a.put_result(hour(4), fx.ANTHROPIC_MESSAGES_GLOBAL)
    r.put(day, "ep-gpt41", **fx.OPENROUTER_BYOK_EXAMPLE)
    r.put(day, "ep-sonnet", **fx.OPENROUTER_BYOK_ONLY)


def publish_v201(stack) -> None:
    """The worker's control plane with v2.0.1 current (seeded v1.0/v2.0 first, so v2.0.1 is the later one)."""
    stack.settings.home.mkdir(parents=True, exist_ok=True)
    engine = get_engine(stack.settings.database)
    upgrade(engine)
    versions = FactorVersions(engine)
    versions.ensure_seeded()
    versions.publish((FACTORS_DIR / "v2.0.1.yaml").read_text(encoding="utf-8"))
    assert versions.current().version == "v2.0.1"


@pytest.fixture
def harness(stack, tmp_path, stubs):
    h = Harness(stack, tmp_path, stubs)
    yield h
    h.close()


def test_documented_usage_shapes_land_with_hand_computed_totals(
    harness: Harness, stubs, worker: WorkerProcess
):
    h = harness
    seed(stubs, datetime.now(UTC).date() - timedelta(days=2))
    publish_v201(h.stack)
    h.factors_version = "v2.0.1"
    org = Orgs(h.engine).create("acme")
    ids = [h.register(org.id, p) for p in ("openai", "anthropic", "openrouter")]
    worker.start()

    results = h.poll()
    assert sorted((r.provider, r.outcome, r.published) for r in results) == [
        ("anthropic", "ok", 2),
        ("openai", "ok", 9),
        ("openrouter", "ok", 2),
    ]
    (orr,) = [r for r in results if r.provider == "openrouter"]
    assert len([n for n in orr.notes if "BYOK" in n]) == 2

    got = h.wait_settled(worker)  # the energy/CO2e of the same events by the methodology's functions
    for name, value in WANT.items():
        assert got[name] == value, name
    assert got["total_tokens"] == sum(
        WANT[k]
        for k in (
            "input_tokens_uncached",
            "input_tokens_cached",
            "input_tokens_cache_creation",
            "output_tokens",
        )
    )  # the modality parts are inside the token kinds, never added again

    rows = {(r["provider"], r.get("region", "")): r for r in worker.totals(by="region")["rows"]}
    assert set(rows) == set(BY_REGION)
    for key, (n, unc, cached, writes, out, searches) in BY_REGION.items():
        r = rows[key]
        assert (r["events"], r["input_tokens_uncached"], r["input_tokens_cached"]) == (n, unc, cached), key
        assert (r["input_tokens_cache_creation"], r["output_tokens"], r["web_search_calls"]) == (
            writes,
            out,
            searches,
        ), key
    # the serving region drives the grid: Anthropic's US events carry the factor set's US intensity
    assert rows[("anthropic", "us")]["co2_kg"] > 0

    # polling again changes nothing
    again = h.poll(*ids)
    assert [r.published for r in again] == [0, 0, 0]
    final = h.wait_settled(worker)
    assert all(
        math.isclose(final[k], got[k], rel_tol=1e-12) if isinstance(got[k], float) else final[k] == got[k]
        for k in got
    )
