"""The enrich handler under a failing broker: a batch whose publish failed is published in full on the retry.

The dedup window admits a batch's event ids when the batch is processed; processing it again would drop every
event as an already-seen duplicate. The agent therefore retries only the delivery of what was computed once.
"""

from __future__ import annotations

import asyncio

from core.kafka import OutRecord
from core.methodology import load_factor_set
from core.settings import load_settings
from pipelines.simulate import generate
from streams.agents import BatchAgent, RetryableError
from streams.processing import InRecord
from streams.worker import Pipeline


def test_a_failed_publish_is_retried_with_the_same_output() -> None:
    fs = load_factor_set()
    settings = load_settings({})
    p = Pipeline(settings, factors=lambda: fs, with_sink=False)
    traffic = generate(40, duplicate_rate=0, revision_rate=0, invalid_rate=0, seed=3)
    records = [InRecord(m.key, m.value, settings.raw_topic, 0, i) for i, m in enumerate(traffic.messages)]
    published: list[tuple[str, list[OutRecord]]] = []
    calls = {"n": 0}

    async def publish(topic: str, out: list[OutRecord]) -> None:
        calls["n"] += 1
        if calls["n"] <= 2:  # the broker is down for the first two attempts
            raise RetryableError("broker unavailable")
        published.append((topic, list(out)))

    p._publish = publish  # type: ignore[method-assign]

    async def run() -> None:
        agent = BatchAgent(
            name="enrich",
            settings=settings,
            topic=settings.raw_topic,
            group_id="g",
            handler=p.handle_raw,
            prepare=p.prepare_raw,
        )
        agent.max_retry_delay_s = 0.01
        await agent._handle_until_done(records)

    asyncio.run(run())
    enriched = [r for topic, rs in published if topic == settings.enriched_topic for r in rs]
    assert sorted(r.key for r in enriched) == sorted(m.key for m in traffic.messages)
