"""Telemetry test data for the API tests, written through the pipeline's own code path.

Raw `UsageEvent`s go through `streams.processing.Enricher` (validate → dedup → enrich, exactly what the
worker's enrich agent runs), `parse_enriched` (the sink's decoding) and `warehouse.ledger.write_enriched`
(the sink's write) into the test's warehouse database. Each batch uses a fresh Enricher, like a restarted
worker, so re-sent duplicates and stale revisions reach the ledger and are resolved there. The expected
figures are computed separately from the final events with the methodology's pure functions
(`tests/e2e/expectations.py`).
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import pytest

from controlplane import Project, Projects
from core.contracts import EnrichedUsage, UsageEvent
from core.methodology import load_factor_set
from streams.processing import Enricher, InRecord, parse_enriched
from tests.e2e.expectations import expected
from tests.fixtures_api import Tenant, client_for
from warehouse.ledger import write_enriched

FACTORS = load_factor_set()

# (provider, model, region, typical input, typical output, cache-capable)
MODELS = [
    ("openai", "gpt-4o", "eastus", 1200, 350, True),
    ("openai", "gpt-4o-mini", "eastus", 900, 250, True),
    ("anthropic", "claude-sonnet-4-20250514", "us-east-1", 2500, 500, True),
    ("google", "gemini-2.0-flash", "us-central1", 1500, 300, False),
    ("acme-ai", "acme-experimental-1", None, 700, 200, False),
]


def push(client, events: list[UsageEvent]) -> list[EnrichedUsage]:
    """raw events → Enricher → enriched topic bytes → parse_enriched → write_enriched (the worker's path)."""
    enricher = Enricher(lambda: FACTORS)
    raw = [
        InRecord(e.event_id.encode(), e.model_dump_json().encode(), "usage.raw.v1", 0, i)
        for i, e in enumerate(events)
    ]
    res = enricher.process(raw)
    assert not res.dlq, [d.value[:300] for d in res.dlq]
    enriched = [InRecord(o.key, o.value, "usage.enriched.v1", 0, i) for i, o in enumerate(res.out)]
    good, bad = parse_enriched(enriched)
    assert not bad
    write_enriched(client, good)
    return good


@dataclass
class Dataset:
    a: Tenant
    b: Tenant
    projects: dict[
        str, Project
    ]  # name → project (org A: Default, Alpha, Beta, Gamma (deleted); org B: Bravo)
    final: dict[str, UsageEvent] = field(default_factory=dict)  # event_id → live revision (both orgs)
    enriched: dict[tuple[str, int], EnrichedUsage] = field(default_factory=dict)
    superseded: set[tuple[str, int]] = field(default_factory=set)  # (event_id, revision) no longer live
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def today(self) -> date:
        return self.now.date()

    def events(
        self,
        org_id: str,
        *,
        start: date | None = None,
        end: date | None = None,
        project_id: str | None = None,
        model: str | None = None,
    ) -> list[UsageEvent]:
        out = []
        for e in self.final.values():
            d = e.bucket_start.date()
            if e.org_id != org_id or (start and d < start) or (end and d > end):
                continue
            if (project_id and e.project_id != project_id) or (model and e.model != model):
                continue
            out.append(e)
        return out

    def expected(self, events: list[UsageEvent], by: str = "none") -> dict[str, dict[str, float]]:
        return expected(events, by)

    def savings(self, events: list[UsageEvent]) -> float:
        total = 0.0
        for e in events:
            x = self.enriched[(e.event_id, e.revision)]
            total += (
                x.input_tokens_cached
                * (x.j_per_prefill_token - x.j_per_cached_token)
                * x.pue
                * x.grid_intensity_kg_per_kwh
                / 3.6e6
            )
        return total

    def daily_rows(self, org_id: str, start: date, end: date, **filters) -> dict[tuple, dict[str, float]]:
        """Expected export rows: (date, project_id, provider, model) → sums."""
        rows: dict[tuple, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for e in self.events(org_id, start=start, end=end, **filters):
            key = (e.bucket_start.date().isoformat(), e.project_id, e.provider, e.model)
            x = self.enriched[(e.event_id, e.revision)]
            r = rows[key]
            for f in (
                "input_tokens_uncached",
                "input_tokens_cached",
                "input_tokens_cache_creation",
                "output_tokens",
                "energy_j",
                "co2_kg",
                "co2_kg_low",
                "co2_kg_high",
            ):
                r[f] += getattr(x, f)
        return {k: dict(v) for k, v in rows.items()}


def _event(rng: random.Random, now: datetime, org_id: str, project_id: str, days: int) -> UsageEvent:
    provider, model, region, tin, tout, cache = rng.choice(MODELS)
    ago = timedelta(days=rng.randrange(days), hours=rng.randrange(1, 24), seconds=rng.randrange(3600))
    ts = (now - ago).replace(microsecond=0)
    hourly = rng.random() < 0.3
    start = ts.replace(minute=0, second=0) if hourly else ts
    end = start + timedelta(hours=1) if hourly else ts
    total_in = max(1, int(rng.lognormvariate(0, 0.6) * tin))
    cached = int(total_in * rng.uniform(0.1, 0.6)) if cache and rng.random() < 0.5 else 0
    creation = int(total_in * 0.05) if cached and provider == "anthropic" else 0
    return UsageEvent(
        event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        source="gateway" if not hourly else "poller",
        org_id=org_id,
        project_id=project_id,
        workload_id=f"{project_id}-wl",
        provider=provider,
        model=model,
        region=region,
        bucket_start=start,
        bucket_end=end,
        event_timestamp=end,
        input_tokens_uncached=total_in - cached - creation,
        input_tokens_cached=cached,
        input_tokens_cache_creation=creation,
        output_tokens=int(rng.lognormvariate(0, 0.6) * tout),
        request_count=rng.randint(20, 200) if hourly else 1,
        labels={"synthetic": "true"},
    )


def build(
    client, engine, tenants: tuple[Tenant, Tenant], *, n_a: int = 240, n_b: int = 40, seed: int = 5
) -> Dataset:
    """Org A: `n_a` events over 45 days across Default/Alpha/Beta/Gamma (Gamma deleted afterwards); org B:
    `n_b` events in its project Bravo. Then revisions (some twice), exact re-sends and a stale revision."""
    a, b = tenants
    repo = Projects(engine)
    projects = {
        "Default": repo.ensure_default_project(a.org.id),
        "Alpha": repo.create(a.org.id, "Alpha"),
        "Beta": repo.create(a.org.id, "Beta"),
        "Gamma": repo.create(a.org.id, "Gamma"),
        "Bravo": repo.create(b.org.id, "Bravo"),
    }
    ds = Dataset(a=a, b=b, projects=projects)
    rng = random.Random(seed)
    a_projects = [projects[n].id for n in ("Default", "Alpha", "Beta", "Gamma")]
    originals = [_event(rng, ds.now, a.org.id, rng.choice(a_projects), 45) for _ in range(n_a)]
    originals += [_event(rng, ds.now, b.org.id, projects["Bravo"].id, 20) for _ in range(n_b)]

    def record(batch: list[UsageEvent]) -> None:
        for x in push(client, batch):
            ds.enriched[(x.event_id, x.revision)] = x

    record(originals)
    ds.final = {e.event_id: e for e in originals}

    # later revisions (a provider's correction): rev 1 for 20 events, rev 2 for 6 of them; plus exact re-sends
    revised = rng.sample([e for e in originals if e.org_id == a.org.id], 20)
    rev1 = [
        e.model_copy(update={"revision": 1, "output_tokens": e.output_tokens + 1000 + i, "request_count": 2})
        for i, e in enumerate(revised)
    ]
    resent = rng.sample(originals, 10)
    record(rev1 + resent)
    for e in rev1:
        ds.superseded.add((e.event_id, 0))
        ds.final[e.event_id] = e
    rev2 = [
        e.model_copy(update={"revision": 2, "input_tokens_uncached": e.input_tokens_uncached + 7})
        for e in rev1[:6]
    ]
    stale = [revised[10]]  # revision 0 again, after revision 1: must change nothing
    record(rev2 + stale)
    for e in rev2:
        ds.superseded.add((e.event_id, 1))
        ds.final[e.event_id] = e
    repo.delete(a.org.id, projects["Gamma"].id)  # history stays on the deleted project
    return ds


# --------------------------------------------------------------------------------------------- fixtures
# An app over a warehouse holding this telemetry: the fixtures of the telemetry, export, metrics and report
# tests (imported by tests/api/conftest.py).


@pytest.fixture
def wh(warehouse):
    return warehouse[0]


@pytest.fixture
def tapp(make_app, wh):
    app = make_app(warehouse_client_factory=lambda: wh)
    yield app
    app.state.ctx.telemetry.close()


@pytest.fixture
def ds(wh, engine, tenants) -> Dataset:
    return build(wh, engine, tenants)


@pytest.fixture
async def c(tapp):
    async with client_for(tapp) as client:
        yield client
