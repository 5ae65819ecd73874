"""The scheduler (pipelines/pollers/scheduler.py) on the control plane (SQLite and PostgreSQL), polling the
stub providers and publishing through `core.kafka.send_many` into a recording producer: ids and revisions,
idempotent re-polls, corrections, failure handling (401/403 → disabled, backoff, active → error), sync
requests, re-mapping, cursor, leases — and that the key never lands in a table or a log line."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.errors import KafkaConnectionError
from sqlalchemy import select, update

from controlplane import Orgs, Projects
from controlplane.connections import Connections, new_connection_id
from controlplane.poll_state import PollState
from controlplane.schema import connections, metadata
from core.contracts import Source, UsageEvent
from core.settings import load_settings
from pipelines.pollers.scheduler import PollerConfig, PollScheduler, last_poll_at
from providers.base import HttpPolicy, floor_to
from tests.pollers.stubs import ADMIN_KEYS, LIMITED_KEYS

pytestmark = pytest.mark.anyio

H = timedelta(hours=1)
D = timedelta(days=1)


async def _no_sleep(_s: float) -> None:
    return None


def hour(n: int) -> datetime:
    return floor_to(datetime.now(UTC), H) - n * H


def day(n: int):
    return datetime.now(UTC).date() - timedelta(days=n)


@pytest.fixture
def org(engine):
    return Orgs(engine).create("acme")


@pytest.fixture
def make_scheduler(engine, producer, secret_store, stubs, tmp_path, db_url):
    settings = load_settings({"JOULESTREAM_HOME": str(tmp_path / "home"), "JOULESTREAM_DATABASE": db_url})

    def make(**overrides) -> PollScheduler:
        cfg = {
            "base_urls": {p: s.url for p, s in stubs.items()},
            "http": HttpPolicy(timeout_s=5, max_attempts=2, backoff_s=0.01, max_retry_after_s=5),
            "lookback": timedelta(hours=6),
            "initial_backfill": timedelta(hours=12),
            "max_failures": 3,
            **overrides,
        }
        return PollScheduler(
            settings, engine, producer, secrets=secret_store, config=PollerConfig(**cfg), sleep=_no_sleep
        )

    return make


def register(engine, store, org_id, provider, key=None, project_id=None):
    cid = new_connection_id()
    ref = store.put(cid, key or ADMIN_KEYS[provider])
    return Connections(engine).create(org_id, provider, ref, project_id, connection_id=cid)


def events(producer, start: int = 0) -> list[UsageEvent]:
    return [UsageEvent.model_validate_json(v) for _t, _k, v in producer.sent[start:]]


def seed(stubs):
    stubs["openai"].put("completions", hour(3), "gpt-4o", "proj_x", input_tokens=1000, input_cached_tokens=100,
                        output_tokens=300, num_model_requests=4)  # fmt: skip
    stubs["openai"].put("embeddings", hour(2), "text-embedding-3-small", "proj_x", input_tokens=500,
                        num_model_requests=2)  # fmt: skip
    stubs["anthropic"].put(hour(4), "claude-sonnet-4-20250514", uncached_input_tokens=200,
                           cache_read_input_tokens=800, cache_5m=50, output_tokens=90)  # fmt: skip
    stubs["openrouter"].put(day(1), "ep-1", model="deepseek/deepseek-r1", requests=3, prompt_tokens=70,
                            completion_tokens=700)  # fmt: skip


async def test_first_poll_publishes_every_bucket_and_a_repoll_changes_nothing(
    engine, org, stubs, secret_store, producer, make_scheduler
):
    seed(stubs)
    conns = {p: register(engine, secret_store, org.id, p) for p in ("openai", "anthropic", "openrouter")}
    default = Projects(engine).ensure_default_project(org.id)
    sched = make_scheduler()

    results = await sched.run_once()
    assert sorted((r.provider, r.outcome, r.published) for r in results) == [
        ("anthropic", "ok", 1),
        ("openai", "ok", 2),
        ("openrouter", "ok", 1),
    ]
    first = events(producer)
    assert len(first) == 4
    for ev in first:
        c = conns[ev.provider]
        assert ev.source == Source.poller and ev.org_id == org.id and ev.connection_id == c.id
        assert ev.project_id == default.id and ev.workload_id == c.workload_id
        assert ev.revision > 10**12  # poll time in ms
    assert {(t, k.decode()) for t, k, _ in producer.sent} == {("usage.raw.v1", e.event_id) for e in first}
    gpt = next(e for e in first if e.model == "gpt-4o")
    assert (gpt.input_tokens_uncached, gpt.input_tokens_cached, gpt.output_tokens, gpt.request_count) == (
        900,
        100,
        300,
        4,
    )
    assert gpt.bucket_start == hour(3) and gpt.bucket_end == hour(2) and gpt.event_timestamp == gpt.bucket_end
    orr = next(e for e in first if e.provider == "openrouter")
    assert orr.bucket_end - orr.bucket_start == D

    # nothing due for an hour; polling anyway (as a sync would) finds the same figures: nothing is published
    assert await sched.run_once() == []
    for c in conns.values():
        r = await sched.poll_connection(c.id)
        assert r.outcome == "ok" and r.published == 0 and r.unchanged >= 1
    assert len(producer.sent) == 4
    # and another poller process computes the very same (event_id, revision) for the same bucket
    states = PollState(engine).bucket_states(conns["openai"].id)
    assert {(s.event_id, s.revision) for s in states.values()} == {
        (e.event_id, e.revision) for e in first if e.provider == "openai"
    }
    after = Connections(engine).get(org.id, conns["openai"].id)
    assert after.status == "active" and after.consecutive_failures == 0 and after.last_polled_at is not None
    assert after.next_poll_at > datetime.now(UTC) + timedelta(minutes=50)


async def test_a_correction_replaces_with_a_higher_revision_and_a_vanished_bucket_goes_to_zero(
    engine, org, stubs, secret_store, producer, make_scheduler
):
    seed(stubs)
    c = register(engine, secret_store, org.id, "openai")
    sched = make_scheduler()
    await sched.poll_connection(c.id)
    before = {e.model: e for e in events(producer)}
    n = len(producer.sent)

    stubs["openai"].put("completions", hour(3), "gpt-4o", "proj_x", input_tokens=1500, input_cached_tokens=100,
                        output_tokens=310, num_model_requests=5)  # fmt: skip
    stubs["openai"].remove("embeddings", hour(2), "text-embedding-3-small", "proj_x")
    r = await sched.poll_connection(c.id)
    assert (r.published, r.zeroed) == (2, 1)
    fixed = {e.model: e for e in events(producer, n)}
    g = fixed["gpt-4o"]
    assert g.event_id == before["gpt-4o"].event_id and g.revision > before["gpt-4o"].revision
    assert (g.input_tokens_uncached, g.output_tokens, g.request_count) == (1400, 310, 5)
    z = fixed["text-embedding-3-small"]
    assert z.event_id == before["text-embedding-3-small"].event_id and z.revision > before[z.model].revision
    assert z.total_tokens == 0 and z.request_count == 0
    # polling again: still nothing new (the zero is remembered too)
    assert (await sched.poll_connection(c.id)).published == 0


async def test_401_disables_the_connection_and_403_too(
    engine, org, stubs, secret_store, make_scheduler, caplog
):
    caplog.set_level(logging.DEBUG)
    c = register(engine, secret_store, org.id, "anthropic")
    limited = register(engine, secret_store, org.id, "openrouter", key=LIMITED_KEYS["openrouter"])
    stubs["anthropic"].keys[ADMIN_KEYS["anthropic"]] = "revoked"
    sched = make_scheduler()
    results = {r.provider: r for r in await sched.run_once()}
    assert results["anthropic"].outcome == "disabled" and "401" in results["anthropic"].error
    assert results["openrouter"].outcome == "disabled" and "management" in results["openrouter"].error
    repo = Connections(engine)
    for cid in (c.id, limited.id):
        after = repo.get(org.id, cid)
        assert after.status == "disabled" and after.next_poll_at is None and after.last_error
    assert PollState(engine).due(datetime.now(UTC) + timedelta(days=30)) == []  # never polled again
    assert await sched.poll_connection(c.id) is None
    assert ADMIN_KEYS["anthropic"] not in caplog.text and LIMITED_KEYS["openrouter"] not in caplog.text


async def test_failures_back_off_then_error_then_recover(engine, org, stubs, secret_store, make_scheduler):
    seed(stubs)
    c = register(engine, secret_store, org.id, "openai")
    stubs["openai"].fail_next(502, times=1000)
    sched = make_scheduler(backoff_base=timedelta(minutes=1), backoff_max=timedelta(minutes=30))
    repo = Connections(engine)
    delays = []
    for i in range(1, 4):
        t0 = datetime.now(UTC)
        r = await sched.poll_connection(c.id, t0)
        assert r.outcome == "failed" and "502" in r.error
        after = repo.get(org.id, c.id)
        assert after.consecutive_failures == i
        delays.append(round((after.next_poll_at - t0).total_seconds()))
        assert after.status == ("error" if i >= 3 else "active")
    assert delays == [60, 120, 240]
    r = await sched.poll_connection(c.id)  # in error: still retried, at the longest backoff
    assert repo.get(org.id, c.id).consecutive_failures == 4
    stubs["openai"].faults.clear()
    r = await sched.poll_connection(c.id)
    assert r.outcome == "ok" and r.published == 2
    after = repo.get(org.id, c.id)
    assert (after.status, after.consecutive_failures, after.last_error) == ("active", 0, None)


async def test_rate_limit_backoff_respects_retry_after(engine, org, stubs, secret_store, make_scheduler):
    c = register(engine, secret_store, org.id, "anthropic")
    stubs["anthropic"].fail_next(429, retry_after="900", times=5)
    t0 = datetime.now(UTC)
    r = await make_scheduler().poll_connection(c.id, t0)
    assert r.outcome == "failed" and "429" in r.error
    after = Connections(engine).get(org.id, c.id)
    assert after.next_poll_at >= t0 + timedelta(seconds=900)


async def test_sync_request_makes_a_connection_due_once(engine, org, stubs, secret_store, make_scheduler):
    c = register(engine, secret_store, org.id, "openai")
    sched = make_scheduler()
    assert len(await sched.run_once()) == 1
    assert await sched.run_once() == []
    repo = Connections(engine)
    job = repo.request_sync(org.id, c.id)
    assert job and repo.get(org.id, c.id).sync_requested_at is not None
    assert [r.connection_id for r in await sched.run_once()] == [c.id]
    assert repo.get(org.id, c.id).sync_requested_at is None
    assert await sched.run_once() == []


async def test_remap_sends_new_buckets_to_the_new_project_and_keeps_old_ones(
    engine, org, stubs, secret_store, producer, make_scheduler
):
    seed(stubs)
    c = register(engine, secret_store, org.id, "openai")
    sched = make_scheduler()
    await sched.poll_connection(c.id)
    old = {e.event_id: e for e in events(producer)}
    prod = Projects(engine).create(org.id, "Production App")
    remapped = Connections(engine).set_project(org.id, c.id, prod.id)
    assert remapped.project_id == prod.id and remapped.workload_id != c.workload_id
    n = len(producer.sent)
    stubs["openai"].put(
        "completions", hour(3), "gpt-4o", "proj_x", input_tokens=1001, output_tokens=300, num_model_requests=4
    )  # fmt: skip  (a correction of an old bucket)
    stubs["openai"].put(
        "completions", hour(1), "gpt-4o", "proj_x", input_tokens=5, output_tokens=5, num_model_requests=1
    )  # fmt: skip  (new usage)
    await sched.poll_connection(c.id)
    new = events(producer, n)
    corrected = next(e for e in new if e.event_id in old)
    fresh = next(e for e in new if e.event_id not in old)
    assert corrected.project_id == old[corrected.event_id].project_id != prod.id
    assert corrected.workload_id == c.workload_id
    assert (fresh.project_id, fresh.workload_id) == (prod.id, remapped.workload_id)


async def test_cursor_catches_up_after_an_outage(engine, org, stubs, secret_store, make_scheduler):
    c = register(engine, secret_store, org.id, "openai")
    with engine.begin() as conn:
        conn.execute(update(connections).where(connections.c.id == c.id).values(poll_cursor=hour(30)))
    stubs["openai"].put(
        "completions", hour(25), "gpt-4o", "p", input_tokens=9, output_tokens=9, num_model_requests=1
    )
    r = await make_scheduler().poll_connection(c.id)  # lookback is 6 h, but the cursor is 30 h back
    assert r.window[0] == hour(30) and r.published == 1
    assert Connections(engine).get(org.id, c.id).poll_cursor == hour(0)


def test_the_window_always_covers_the_last_completed_bucket(engine, org, secret_store, make_scheduler):
    """A daily provider polled late in the day with a lookback under a day still re-reads yesterday."""
    c = register(engine, secret_store, org.id, "openrouter")
    today = datetime.combine(day(0), datetime.min.time(), tzinfo=UTC)
    conn = c.model_copy(update={"poll_cursor": today})  # the last poll ended at today's midnight
    sched = make_scheduler()  # lookback 6 h
    for hours in (1, 7, 23):
        assert sched.window(conn, D, today + timedelta(hours=hours)) == (today - D, today + D)
    hourly = c.model_copy(update={"poll_cursor": today + 23 * H})  # hourly: the 6 h lookback decides
    assert sched.window(hourly, H, today + 23.5 * H) == (today + 17 * H, today + 24 * H)


async def test_a_leased_connection_is_not_polled_twice(engine, org, stubs, secret_store, make_scheduler):
    c = register(engine, secret_store, org.id, "openai")
    repo = PollState(engine)
    now = datetime.now(UTC)
    assert repo.claim(c.id, "other-poller", now, timedelta(minutes=5)) is not None
    sched = make_scheduler()
    assert await sched.poll_connection(c.id) is None
    assert await sched.run_once() == []
    repo.release(c.id, "other-poller")
    assert (await sched.poll_connection(c.id)).outcome == "ok"


async def test_kafka_failure_postpones_without_counting_and_republishes_the_same_events(
    engine, org, stubs, secret_store, producer, make_scheduler
):
    seed(stubs)
    c = register(engine, secret_store, org.id, "openai")
    producer.fail = KafkaConnectionError("broker down")
    sched = make_scheduler()
    r = await sched.poll_connection(c.id)
    assert r.outcome == "postponed"
    after = Connections(engine).get(org.id, c.id)
    assert after.consecutive_failures == 0 and after.status == "active" and after.last_polled_at is None
    assert PollState(engine).bucket_states(c.id) == {}
    producer.fail = None
    r = await sched.poll_connection(c.id)
    assert r.outcome == "ok" and r.published == 2


async def test_the_key_is_in_no_table_and_no_log_line(
    engine, org, stubs, secret_store, make_scheduler, caplog
):
    caplog.set_level(logging.DEBUG)
    seed(stubs)
    conns = [register(engine, secret_store, org.id, p) for p in ("openai", "anthropic", "openrouter")]
    sched = make_scheduler()
    await sched.run_once()
    key = ADMIN_KEYS["openai"]
    # a provider that echoes the key in its error message (some do, masked or not)
    stubs["openai"].fail_next(500, times=10, body={"message": f"internal error for key {key}"})
    r = await sched.poll_connection(conns[0].id)
    assert r.outcome == "failed" and key not in r.error and "***" in r.error
    stubs["anthropic"].keys[ADMIN_KEYS["anthropic"]] = "revoked"
    await sched.poll_connection(conns[1].id)
    Connections(engine).delete(org.id, conns[2].id)

    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)).all():
                for value in row:
                    text = str(value)
                    for secret in ADMIN_KEYS.values():
                        assert secret not in text, f"{table.name} holds a key in clear"
                        assert secret[-16:] not in text
    for secret in ADMIN_KEYS.values():
        assert secret not in caplog.text


async def test_last_poll_at(engine, org, stubs, secret_store, make_scheduler):
    assert last_poll_at(engine) is None
    c = register(engine, secret_store, org.id, "openai")
    sched = make_scheduler()
    t0 = datetime.now(UTC)
    await sched.run_once()
    assert t0 <= last_poll_at(engine) <= datetime.now(UTC)
    Connections(engine).delete(org.id, c.id)
    assert last_poll_at(engine) is None


def test_config_from_settings():
    s = load_settings(
        {
            "JOULESTREAM_POLL_INTERVAL_S": "600",
            "JOULESTREAM_POLL_LOOKBACK_H": "6",
            "JOULESTREAM_POLL_BACKFILL_DAYS": "2",
            "JOULESTREAM_POLL_MAX_FAILURES": "3",
            "JOULESTREAM_POLL_TICK_S": "1.5",
            "JOULESTREAM_OPENAI_BASE_URL": "http://127.0.0.1:9/",
        }
    )
    cfg = PollerConfig.from_settings(s, concurrency=2)
    assert (cfg.interval, cfg.lookback, cfg.initial_backfill) == (
        timedelta(minutes=10),
        timedelta(hours=6),
        timedelta(days=2),
    )
    assert (cfg.max_failures, cfg.tick_s, cfg.concurrency) == (3, 1.5, 2)
    assert cfg.base_urls["openai"] == "http://127.0.0.1:9"
    assert cfg.base_urls["anthropic"] == "https://api.anthropic.com"
    default = PollerConfig.from_settings(load_settings({}))
    assert default.interval == timedelta(hours=1) and default.max_failures == 5
