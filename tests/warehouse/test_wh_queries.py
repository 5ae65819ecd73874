from __future__ import annotations

import math
from datetime import UTC, date, datetime

import pytest

from warehouse.ledger import write_enriched
from warehouse.queries import (
    CacheSplit,
    Totals,
    TotalsRow,
    cached_vs_uncached,
    ledger_totals,
    live_event_count,
    totals,
    totals_by,
)

D1 = datetime(2025, 3, 1, 9, tzinfo=UTC)
D2 = datetime(2025, 3, 2, 23, 30, tzinfo=UTC)
D3 = datetime(2025, 4, 1, 0, 0, tzinfo=UTC)


@pytest.fixture
def populated(warehouse, make_enriched):
    client, _ = warehouse
    events = [
        make_enriched("a1", org_id="org_a", project_id="p1", bucket_start=D1, model="gpt-4o"),
        make_enriched("a2", org_id="org_a", project_id="p2", bucket_start=D2, model="gpt-4o-mini"),
        make_enriched(
            "a3", org_id="org_a", project_id="p1", bucket_start=D3, provider="anthropic", model="haiku"
        ),
        make_enriched("b1", org_id="org_b", project_id="p1", bucket_start=D1, input_tokens_cached=1000),
    ]
    write_enriched(client, events)
    write_enriched(
        client,
        [make_enriched("a2", 1, org_id="org_a", project_id="p2", bucket_start=D2, model="gpt-4o-mini")],
    )
    finals = {e.event_id: e for e in events}
    finals["a2"] = make_enriched(
        "a2", 1, org_id="org_a", project_id="p2", bucket_start=D2, model="gpt-4o-mini"
    )
    return client, finals


def _expect(events) -> Totals:
    t = Totals(
        events=len(events),
        request_count=sum(e.request_count for e in events),
        input_tokens_uncached=sum(e.input_tokens_uncached for e in events),
        input_tokens_cached=sum(e.input_tokens_cached for e in events),
        input_tokens_cache_creation=sum(e.input_tokens_cache_creation for e in events),
        output_tokens=sum(e.output_tokens for e in events),
        total_tokens=sum(e.total_tokens for e in events),
        **{
            f: math.fsum(getattr(e, f) for e in events)
            for f in ("energy_j", "energy_j_low", "energy_j_high", "co2_kg", "co2_kg_low", "co2_kg_high")
        },
    )
    return t


def test_totals_all_and_by_org(populated):
    client, finals = populated
    assert totals(client).approx_equal(_expect(list(finals.values())))
    org_a = [e for e in finals.values() if e.org_id == "org_a"]
    assert totals(client, org_id="org_a").approx_equal(_expect(org_a))
    assert totals(client, org_id="org_a").approx_equal(ledger_totals(client, org_id="org_a"))
    assert totals(client, org_id="nobody") == Totals()


def test_totals_filters_are_half_open_days(populated):
    client, finals = populated
    march_1 = totals(client, org_id="org_a", start=date(2025, 3, 1), end=date(2025, 3, 2))
    assert march_1.approx_equal(_expect([finals["a1"]]))
    march = totals(client, org_id="org_a", start=date(2025, 3, 1), end=date(2025, 4, 1))
    assert march.approx_equal(_expect([finals["a1"], finals["a2"]]))
    assert march.approx_equal(
        ledger_totals(client, org_id="org_a", start=date(2025, 3, 1), end=date(2025, 4, 1))
    )
    assert totals(client, org_id="org_a", start=date(2025, 4, 1)).events == 1
    assert totals(client, org_id="org_a", end=date(2025, 3, 2)).events == 1
    p1 = totals(client, org_id="org_a", project_id="p1")
    assert p1.approx_equal(_expect([finals["a1"], finals["a3"]]))


def test_totals_by_groups(populated):
    client, finals = populated
    by_org = totals_by(client, "org")
    assert [r.org_id for r in by_org] == ["org_a", "org_b"]
    assert all(isinstance(r, TotalsRow) and r.project_id is None for r in by_org)
    assert by_org[1].approx_equal(_expect([finals["b1"]]))

    by_project = totals_by(client, "project", org_id="org_a")
    assert [(r.org_id, r.project_id, r.events) for r in by_project] == [
        ("org_a", "p1", 2),
        ("org_a", "p2", 1),
    ]
    assert by_project[1].output_tokens == finals["a2"].output_tokens

    by_model = totals_by(client, "model", org_id="org_a")
    assert [(r.provider, r.model, r.events) for r in by_model] == [
        ("anthropic", "haiku", 1),
        ("openai", "gpt-4o", 1),
        ("openai", "gpt-4o-mini", 1),
    ]

    by_day = totals_by(client, "day", org_id="org_a", start=date(2025, 3, 1), end=date(2025, 4, 1))
    assert [(r.day, r.events) for r in by_day] == [(date(2025, 3, 1), 1), (date(2025, 3, 2), 1)]
    assert by_day[0].approx_equal(TotalsRow(day=date(2025, 3, 1), **_expect([finals["a1"]]).model_dump()))


def test_cached_vs_uncached(populated):
    client, finals = populated
    split = cached_vs_uncached(client, "org_b", None, None)
    b1 = finals["b1"]
    saved_j = b1.input_tokens_cached * (b1.j_per_prefill_token - b1.j_per_cached_token) * b1.pue
    assert isinstance(split, CacheSplit)
    assert (split.uncached_tokens, split.cached_tokens, split.cache_creation_tokens) == (
        b1.input_tokens_uncached,
        1000,
        b1.input_tokens_cache_creation,
    )
    assert split.energy_cached_savings_j == pytest.approx(saved_j, rel=1e-12)
    assert split.co2_cached_savings_kg == pytest.approx(
        saved_j / 3.6e6 * b1.grid_intensity_kg_per_kwh, rel=1e-12
    )
    # the revised a2 counts once, with its latest figures
    split_a = cached_vs_uncached(client, "org_a", date(2025, 3, 2), date(2025, 3, 3), project_id="p2")
    assert split_a.uncached_tokens == finals["a2"].input_tokens_uncached


def test_live_event_count(populated):
    client, _ = populated
    assert live_event_count(client) == 4
    assert live_event_count(client, org_id="org_a") == 3
    assert live_event_count(client, org_id="nobody") == 0


def test_fully_cancelled_groups_are_left_out(warehouse, make_enriched):
    """A group whose rollup sums net to zero events is not reported (a cancelled pair, e.g. a move)."""
    client, _ = warehouse
    write_enriched(client, [make_enriched("x", project_id="p1")])
    from warehouse.ledger import to_arrow

    client.insert_arrow("usage_events", to_arrow([make_enriched("x", project_id="p1")], sign=-1))
    assert totals_by(client, "project") == []
    assert totals(client) == Totals()
