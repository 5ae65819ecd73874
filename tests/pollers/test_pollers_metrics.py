"""The poller metrics (core/metrics.py) move when the scheduler polls the stub provider APIs: polls by outcome,
failures, events published, the last successful poll's time; read from the Prometheus exposition and parsed
with prometheus_client."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from controlplane import Orgs
from controlplane.connections import Connections, new_connection_id
from core.metrics import exposition
from core.settings import load_settings
from pipelines.pollers.scheduler import PollerConfig, PollScheduler
from providers.base import HttpPolicy, floor_to
from tests.pollers.stubs import ADMIN_KEYS
from tests.prom import Samples, parse, value

pytestmark = pytest.mark.anyio


async def _no_sleep(_s: float) -> None:
    return None


def scrape() -> Samples:
    body, content_type = exposition()
    assert content_type.startswith("text/plain")
    return parse(body.decode())


def register(engine, store, org_id, provider):
    cid = new_connection_id()
    return Connections(engine).create(
        org_id, provider, store.put(cid, ADMIN_KEYS[provider]), None, connection_id=cid
    )


async def test_poll_outcomes_events_and_last_success_are_counted(
    engine, stubs, secret_store, producer, tmp_path, db_url
):
    org = Orgs(engine).create("acme")
    hour = floor_to(datetime.now(UTC), timedelta(hours=1))
    stubs["openai"].put("completions", hour - timedelta(hours=3), "gpt-4o", "p", input_tokens=1000,
                        output_tokens=300, num_model_requests=4)  # fmt: skip
    stubs["openai"].put("completions", hour - timedelta(hours=2), "gpt-4o-mini", "p", input_tokens=10,
                        output_tokens=3, num_model_requests=1)  # fmt: skip
    ok = register(engine, secret_store, org.id, "openai")
    revoked = register(engine, secret_store, org.id, "anthropic")
    stubs["anthropic"].keys[ADMIN_KEYS["anthropic"]] = "revoked"  # 401: the connection is disabled
    failing = register(engine, secret_store, org.id, "openrouter")
    stubs["openrouter"].fail_next(502, times=100)  # a provider error: failed, retried later
    settings = load_settings({"JOULESTREAM_HOME": str(tmp_path / "home"), "JOULESTREAM_DATABASE": db_url})
    sched = PollScheduler(
        settings,
        engine,
        producer,
        secrets=secret_store,
        config=PollerConfig(
            base_urls={p: s.url for p, s in stubs.items()},
            http=HttpPolicy(timeout_s=5, max_attempts=1, backoff_s=0.01, max_retry_after_s=5),
            lookback=timedelta(hours=6),
            initial_backfill=timedelta(hours=12),
        ),
        sleep=_no_sleep,
    )
    before = scrape()
    started = time.time()
    results = {r.connection_id: r for r in await sched.run_once()}
    after = scrape()

    assert results[ok.id].outcome == "ok" and results[ok.id].published == 2
    assert results[revoked.id].outcome == "disabled" and results[failing.id].outcome == "failed"

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("joulestream_poller_polls_total", provider="openai", outcome="ok") == 1
    assert moved("joulestream_poller_polls_total", provider="anthropic", outcome="disabled") == 1
    assert moved("joulestream_poller_polls_total", provider="openrouter", outcome="failed") == 1
    assert moved("joulestream_poller_events_published_total", provider="openai") == 2 == len(producer.sent)
    assert moved("joulestream_poller_failures_total", provider="anthropic") == 1
    assert moved("joulestream_poller_failures_total", provider="openrouter") == 1
    assert moved("joulestream_poller_failures_total", provider="openai") == 0
    last = value(after, "joulestream_poller_last_success_timestamp_seconds", provider="openai")
    assert started <= last <= time.time()
    assert value(after, "joulestream_poller_last_success_timestamp_seconds", provider="openrouter") == value(
        before, "joulestream_poller_last_success_timestamp_seconds", provider="openrouter"
    )
    # no connection or org in any label
    for (_n, labels), _v in after.items():
        for _k, v in labels:
            assert v not in (ok.id, revoked.id, failing.id, org.id)
