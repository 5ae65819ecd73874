"""Labelled synthetic traffic: realistic usage events, with a known share of exact duplicates, later
revisions and invalid messages, and the expected final state to check a pipeline against.

Every generated event carries `source="simulated"` and `labels={"synthetic": "true", ...}` so it can
never be mistaken for (or mixed into) real usage.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson

from core.contracts import FAILED_ATTEMPTS_LABEL, ROUTING_LABEL, RoutingTier, Source, UsageEvent
from core.kafka import OutRecord, producer, send_many
from core.settings import Settings

# (provider, model, region, weight, typical input tokens, typical output tokens, cache-capable)
MODELS: list[tuple[str, str, str | None, float, int, int, bool]] = [
    ("openai", "gpt-4o", "eastus", 0.20, 1200, 350, True),
    ("openai", "gpt-4o-mini", "eastus", 0.20, 900, 250, True),
    ("openai", "o3-mini", None, 0.05, 1500, 2500, True),
    ("openai", "text-embedding-3-small", None, 0.05, 600, 0, False),
    ("anthropic", "claude-sonnet-4-20250514", "us-east-1", 0.12, 2500, 500, True),
    ("anthropic", "claude-3-5-haiku-20241022", "us-east-1", 0.08, 1000, 200, True),
    ("google", "gemini-2.0-flash", "us-central1", 0.08, 1500, 300, True),
    ("openrouter", "meta-llama/llama-3.3-70b-instruct", None, 0.06, 1000, 300, False),
    ("mistral", "mistral-large-latest", None, 0.05, 1200, 400, False),
    ("openrouter", "deepseek/deepseek-r1", None, 0.04, 800, 1800, False),
    ("openrouter", "qwen/qwen-2.5-72b-instruct", None, 0.04, 900, 300, False),
    ("acme-ai", "acme-experimental-1", None, 0.03, 700, 200, False),  # unknown: exercises the fallback
]
TIERS = [RoutingTier.L0, RoutingTier.L1, RoutingTier.L2, RoutingTier.L3]
LABELS = {"synthetic": "true", "generator": "joulestream-simulate"}


@dataclass
class Traffic:
    """What to publish (in order) and what a correct pipeline must end up with."""

    messages: list[OutRecord] = field(default_factory=list)
    final: dict[str, UsageEvent] = field(default_factory=dict)  # event_id -> the live revision
    invalid: int = 0
    duplicates: int = 0
    revisions: int = 0

    @property
    def expected_events(self) -> list[UsageEvent]:
        return list(self.final.values())


def _tokens(rng: random.Random, typical: int) -> int:
    return 0 if typical == 0 else max(1, int(rng.lognormvariate(0, 0.8) * typical))


Tenants = dict[str, list[str]]  # org_id -> its project ids


def sim_tenants(orgs: int = 3, projects: int = 2) -> Tenants:
    """Made-up tenants for pipeline tests; `joulestream up` passes real control-plane ids instead."""
    return {f"org-sim-{i}": [f"org-sim-{i}-proj-{j}" for j in range(projects)] for i in range(orgs)}


def _event(rng: random.Random, now: datetime, days: int, tenants: Tenants) -> UsageEvent:
    provider, model, region, _, tin, tout, cache = rng.choices(MODELS, weights=[m[3] for m in MODELS])[0]
    org = rng.choice(sorted(tenants))
    project = rng.choice(tenants[org])
    hourly = rng.random() < 0.3  # a provider's hourly bucket rather than one request
    n_req = rng.randint(20, 400) if hourly else 1
    ts = now - timedelta(seconds=rng.uniform(0, days * 86400))
    if hourly:
        start = ts.replace(minute=0, second=0, microsecond=0)
        end = start + timedelta(hours=1)
    else:
        start = end = ts
    total_in = sum(_tokens(rng, tin) for _ in range(min(n_req, 8))) * max(1, n_req // 8)
    cached = int(total_in * rng.uniform(0.1, 0.6)) if cache and rng.random() < 0.5 else 0
    creation = int(total_in * rng.uniform(0.02, 0.1)) if cached and provider == "anthropic" else 0
    uid = uuid.UUID(int=rng.getrandbits(128), version=4)
    return UsageEvent(
        event_id=str(uid),
        source=Source.simulated,
        org_id=org,
        project_id=project,
        workload_id=f"{project}-gw",
        provider=provider,
        model=model,
        region=region,
        routing_tier=None if hourly else rng.choice(TIERS),
        bucket_start=start,
        bucket_end=end,
        event_timestamp=end,
        input_tokens_uncached=total_in - cached - creation,
        input_tokens_cached=cached,
        input_tokens_cache_creation=creation,
        output_tokens=sum(_tokens(rng, tout) for _ in range(min(n_req, 8))) * max(1, n_req // 8),
        request_count=n_req,
        labels=LABELS if hourly else {**LABELS, **_gateway_labels(uid.int)},
    )


def _gateway_labels(n: int) -> dict[str, str]:
    """What the gateway records of a request's routing (core.contracts.ROUTING_LABEL, FAILED_ATTEMPTS_LABEL),
    derived from the event id so that the random draws — and every other figure — stay as they were: 40 % of
    the requests ask for model "auto", one in 25 needed a second upstream."""
    return {
        ROUTING_LABEL: "auto" if n % 10 < 4 else "pinned",
        FAILED_ATTEMPTS_LABEL: "1" if n % 25 == 0 else "0",
    }


_INVALID: list[Callable[[dict], bytes]] = [
    lambda d: b"{not json",
    lambda d: orjson.dumps({**d, "output_tokens": -5}),
    lambda d: orjson.dumps({k: v for k, v in d.items() if k != "org_id"}),
    lambda d: orjson.dumps({**d, "bucket_end": "2020-01-01T00:00:00Z"}),  # before bucket_start
    lambda d: orjson.dumps({**d, "event_timestamp": "1999-12-31T23:00:00Z"}),  # impossible timestamp
    lambda d: orjson.dumps({**d, "input_tokens_uncached": "lots"}),
    lambda d: b"",
]


def generate(
    n: int,
    *,
    orgs: int = 3,
    projects: int = 2,
    days: int = 7,
    duplicate_rate: float = 0.05,
    revision_rate: float = 0.02,
    invalid_rate: float = 0.01,
    seed: int = 7,
    now: datetime | None = None,
    tenants: Tenants | None = None,
) -> Traffic:
    """`n` messages in all: valid originals plus the given shares of duplicates, revisions, invalid."""
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    tenants = tenants or sim_tenants(orgs, projects)
    t = Traffic()
    sent: list[UsageEvent] = []
    n_dup, n_rev, n_bad = int(n * duplicate_rate), int(n * revision_rate), int(n * invalid_rate)
    n_orig = n - n_dup - n_rev - n_bad
    kinds = ["orig"] * n_orig + ["dup"] * n_dup + ["rev"] * n_rev + ["bad"] * n_bad
    # keep the first messages original, so duplicates and revisions always have something to refer to
    head, tail = kinds[: max(1, n_orig // 10)], kinds[max(1, n_orig // 10) :]
    rng.shuffle(tail)
    for kind in head + tail:
        if kind == "orig" or not sent:
            ev = _event(rng, now, days, tenants)
            sent.append(ev)
            t.final[ev.event_id] = ev
            t.messages.append(OutRecord(ev.event_id.encode(), ev.model_dump_json().encode()))
        elif kind == "dup":
            ev = rng.choice(sent)
            t.duplicates += 1
            t.messages.append(OutRecord(ev.event_id.encode(), ev.model_dump_json().encode()))
        elif kind == "rev":
            base = t.final[rng.choice(sent).event_id]
            ev = base.model_copy(
                update={
                    "revision": base.revision + 1,
                    "output_tokens": base.output_tokens + rng.randint(1, 500),
                    "input_tokens_uncached": max(0, base.input_tokens_uncached - rng.randint(0, 100)),
                }
            )
            t.revisions += 1
            t.final[ev.event_id] = ev
            sent.append(ev)
            t.messages.append(OutRecord(ev.event_id.encode(), ev.model_dump_json().encode()))
        else:
            src = _event(rng, now, days, tenants)
            t.invalid += 1
            t.messages.append(
                OutRecord(src.event_id.encode(), rng.choice(_INVALID)(src.model_dump(mode="json")))
            )
    return t


def live_event(rng: random.Random, tenants: Tenants | None = None) -> UsageEvent:
    """One request-sized event stamped now, for a steady trickle of live traffic."""
    return _event(rng, datetime.now(UTC), 0, tenants or sim_tenants())


async def publish(
    settings: Settings,
    messages: list[OutRecord],
    on_progress: Callable[[int], None] | None = None,
    chunk: int = 10_000,
) -> int:
    prod = producer(settings)
    await prod.start()
    try:
        done = 0
        for i in range(0, len(messages), chunk):
            done += await send_many(prod, settings.raw_topic, messages[i : i + chunk])
            if on_progress:
                on_progress(done)
        return done
    finally:
        await prod.stop()


def run_publish(
    settings: Settings, messages: list[OutRecord], on_progress: Callable[[int], None] | None = None
) -> int:
    return asyncio.run(publish(settings, messages, on_progress))
