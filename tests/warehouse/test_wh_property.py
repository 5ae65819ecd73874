"""Property: whatever the order, duplication, revision sequence and crashes of the batches, the rollup totals
equal an independent expectation (the highest revision seen per event_id wins) — exactly for counts, within
1e-9 relative for floats."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.processing import to_json
from tests.conftest import empty_database
from warehouse.ledger import write_enriched, write_enriched_json
from warehouse.queries import ledger_totals, live_event_count, totals, totals_by

N_EVENTS = 12
ORGS = ("org_a", "org_b")
DAYS = (
    datetime(2025, 2, 28, 23, tzinfo=UTC),
    datetime(2025, 3, 1, tzinfo=UTC),
    datetime(2025, 3, 2, 5, tzinfo=UTC),
)


def event(make_enriched, seed: int, n: int, revision: int):
    """Deterministic content per (event, revision): same revision = same content (a contract rule); org and
    bucket fixed per event_id (event identity includes the bucket)."""
    rng = random.Random(f"{seed}:{n}:{revision}")
    fixed = random.Random(f"{seed}:{n}")
    return make_enriched(
        f"ev-{n}",
        revision,
        org_id=ORGS[n % 2],
        project_id=f"proj_{fixed.randrange(2)}",
        model=fixed.choice(["gpt-4o", "claude-3-5-haiku"]),
        bucket_start=DAYS[fixed.randrange(3)] + timedelta(minutes=fixed.randrange(60)),
        input_tokens_uncached=rng.randrange(0, 10**9),
        input_tokens_cached=rng.randrange(0, 10**6),
        input_tokens_cache_creation=rng.randrange(0, 10**4),
        output_tokens=rng.randrange(0, 10**7),
        request_count=rng.randrange(0, 5),
        pue=1 + rng.random(),
        grid_intensity_kg_per_kwh=rng.random(),
        j_per_prefill_token=rng.random(),
        j_per_cached_token=rng.random() / 10,
    )


class CrashingClient:
    """Delegates to a real client; its ledger insert (Arrow, or the JSON path's INSERT … SELECT) writes a random
    subset of the rows, then raises — what a crash in the middle of a multi-partition insert leaves behind."""

    def __init__(self, client, rng: random.Random):
        self._client = client
        self._rng = rng

    def __getattr__(self, name):
        return getattr(self._client, name)

    def insert_arrow(self, table, arrow_table, *args, **kwargs):
        if table != "usage_events":
            return self._client.insert_arrow(table, arrow_table, *args, **kwargs)
        keep = [i for i in range(arrow_table.num_rows) if self._rng.random() < 0.5]
        if keep:
            self._client.insert_arrow(table, arrow_table.take(keep), *args, **kwargs)
        raise ConnectionError("simulated crash mid-insert")

    def command(self, cmd, *args, **kwargs):
        if not (isinstance(cmd, str) and cmd.startswith("INSERT INTO usage_events ")):
            return self._client.command(cmd, *args, **kwargs)
        head, found, select = cmd.partition(") SELECT ")  # the column list ends at the first ") SELECT "
        assert found, cmd
        salt = self._rng.randrange(2**32)
        self._client.command(
            f"{head}) SELECT * FROM (SELECT {select}) WHERE cityHash64(event_id, revision, sign, {salt}) % 2 = 0",
            *args,
            **kwargs,
        )
        raise ConnectionError("simulated crash mid-insert")


batch_item = st.tuples(st.integers(0, N_EVENTS - 1), st.integers(0, 4))
step = st.tuples(
    st.lists(batch_item, min_size=1, max_size=15), st.sampled_from(["ok", "ok", "replay", "crash"])
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(0, 2**32), steps=st.lists(step, min_size=1, max_size=6), as_json=st.booleans())
def test_rollups_equal_last_revision_wins(warehouse, make_enriched, seed, steps, as_json):
    """`as_json`: batches go through the sink's JSON writer (ClickHouse parses) instead of the object one.
    Each example starts from the migrated database emptied (a fresh migration per example cost ~0.5 s)."""
    write = (lambda c, b: write_enriched_json(c, [to_json(e) for e in b])) if as_json else write_enriched
    expected: dict[int, int] = {}  # event n → highest revision written
    client, database = warehouse
    empty_database(client, database)
    for i, (items, mode) in enumerate(steps):
        batch = [event(make_enriched, seed, n, rev) for n, rev in items]
        if mode == "crash":
            try:
                write(CrashingClient(client, random.Random(seed + i)), batch)
            except ConnectionError:
                pass
        write(client, batch)
        if mode == "replay":
            write(client, batch)
        for n, rev in items:
            expected[n] = max(rev, expected.get(n, -1))

    finals = [event(make_enriched, seed, n, rev) for n, rev in expected.items()]
    got = totals(client)
    assert got.events == len(finals) == live_event_count(client)
    for name in (
        "request_count",
        "input_tokens_uncached",
        "input_tokens_cached",
        "input_tokens_cache_creation",
        "output_tokens",
        "total_tokens",
    ):
        want = sum(getattr(e, name) for e in finals)
        assert getattr(got, name) == want, name
    for name in ("energy_j", "energy_j_low", "energy_j_high", "co2_kg", "co2_kg_low", "co2_kg_high"):
        want = math.fsum(getattr(e, name) for e in finals)
        assert math.isclose(getattr(got, name), want, rel_tol=1e-9, abs_tol=1e-12), name
    assert got.approx_equal(ledger_totals(client))
    for org in ORGS:
        org_finals = [e for e in finals if e.org_id == org]
        assert totals(client, org_id=org).output_tokens == sum(e.output_tokens for e in org_finals)
    by_day = {r.day: r.events for r in totals_by(client, "day")}
    want_days: dict = {}
    for e in finals:
        want_days[e.bucket_start.date()] = want_days.get(e.bucket_start.date(), 0) + 1
    assert by_day == want_days
