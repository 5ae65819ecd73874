"""reconcile_rollups closes the gap MVs cannot: a crash between the ledger part and the MV parts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from warehouse.ledger import write_enriched
from warehouse.queries import ledger_totals, totals, totals_by
from warehouse.reconcile import reconcile_rollups


def _detach_mvs(client):
    client.command("DETACH TABLE usage_hourly_mv")
    client.command("DETACH TABLE usage_daily_mv")


def _attach_mvs(client):
    client.command("ATTACH TABLE usage_hourly_mv")
    client.command("ATTACH TABLE usage_daily_mv")


def _hourly_matches_ledger(client) -> bool:
    rolled = client.query(
        "SELECT org_id, hour, sum(events), sum(output_tokens) FROM usage_hourly GROUP BY org_id, hour "
        "HAVING sum(events) != 0 OR sum(output_tokens) != 0 ORDER BY org_id, hour"
    ).result_rows
    truth = client.query(
        "SELECT org_id, toStartOfHour(bucket_start) AS hour, sum(toInt64(sign)), sum(sign * output_tokens) "
        "FROM usage_events GROUP BY org_id, hour HAVING sum(toInt64(sign)) != 0 ORDER BY org_id, hour"
    ).result_rows
    return rolled == truth


def test_reconcile_repairs_a_missed_mv_insert_and_is_idempotent(warehouse, make_enriched):
    client, _ = warehouse
    t0 = datetime(2025, 3, 1, 10, tzinfo=UTC)
    write_enriched(client, [make_enriched(f"e{i}", bucket_start=t0 + timedelta(hours=i)) for i in range(4)])
    before = datetime.now(UTC) - timedelta(seconds=1)
    assert reconcile_rollups(client, before - timedelta(hours=1)) == 0  # nothing to repair

    # the "crash": ledger rows land, the MV parts do not
    _detach_mvs(client)
    try:
        write_enriched(
            client,
            [
                make_enriched("e1", 1, bucket_start=t0 + timedelta(hours=1)),  # revision: cancel + insert
                make_enriched("e9", 0, bucket_start=t0 + timedelta(days=1), org_id="org_b"),  # new
            ],
        )
    finally:
        _attach_mvs(client)
    assert not totals(client).approx_equal(ledger_totals(client))
    assert not _hourly_matches_ledger(client)

    repaired = reconcile_rollups(client, before)
    assert repaired == 4  # e1's hour and e9's hour (hourly), e1's day and e9's day (daily)
    assert totals(client).approx_equal(ledger_totals(client))
    assert _hourly_matches_ledger(client)
    for org in ("org_a", "org_b"):
        assert totals(client, org_id=org).approx_equal(ledger_totals(client, org_id=org))
    assert [(r.day, r.events) for r in totals_by(client, "day")] == [
        (t0.date(), 4),
        ((t0 + timedelta(days=1)).date(), 1),
    ]

    assert reconcile_rollups(client, before) == 0  # idempotent
    assert reconcile_rollups(client, before - timedelta(days=1)) == 0


def test_reconcile_removes_a_double_counted_mv_insert(warehouse, make_enriched):
    """The other direction: a rollup part counted twice (e.g. an MV re-run) is cancelled back out."""
    client, _ = warehouse
    since = datetime.now(UTC) - timedelta(seconds=1)
    write_enriched(client, [make_enriched("e0"), make_enriched("e1", project_id="proj_2")])
    client.command("INSERT INTO usage_daily SELECT * FROM usage_daily WHERE project_id = 'proj_2'")
    assert totals(client).events == 3
    assert reconcile_rollups(client, since) == 1
    assert totals(client).events == 2
    assert totals(client).approx_equal(ledger_totals(client))
    assert reconcile_rollups(client, since) == 0


def test_reconcile_only_looks_at_recent_ingestion(warehouse, make_enriched):
    client, _ = warehouse
    _detach_mvs(client)
    try:
        write_enriched(client, [make_enriched("e0")])
    finally:
        _attach_mvs(client)
    assert reconcile_rollups(client, datetime.now(UTC) + timedelta(minutes=5)) == 0
    assert totals(client).events == 0
    assert reconcile_rollups(client, datetime.now(UTC) - timedelta(minutes=5)) == 2
    assert totals(client).events == 1
