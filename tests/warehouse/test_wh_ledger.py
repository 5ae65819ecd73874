from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from warehouse.ledger import WriteResult, to_arrow, write_enriched
from warehouse.queries import ledger_totals, live_event_count, totals


def live_revisions(client) -> dict[str, int]:
    """event_id → its live revision; asserts the ledger invariant on the way."""
    rows = client.query(
        "SELECT event_id, revision, sum(sign) AS net FROM usage_events GROUP BY event_id, revision "
        "HAVING net != 0 ORDER BY event_id, revision"
    ).result_rows
    live: dict[str, int] = {}
    for eid, rev, net in rows:
        assert net == 1, f"{eid} r{rev} has net sign {net}"
        assert eid not in live, f"{eid} has two live revisions"
        live[eid] = rev
    return live


def assert_rollups_match_ledger(client) -> None:
    rolled, truth = totals(client), ledger_totals(client)
    assert rolled.approx_equal(truth), (rolled, truth)


def test_new_events_are_inserted(warehouse, make_enriched):
    client, _ = warehouse
    res = write_enriched(client, [make_enriched(f"e{i}") for i in range(3)])
    assert res == WriteResult(inserted=3, cancelled=0, skipped_duplicates=0, skipped_stale=0)
    assert live_revisions(client) == {"e0": 0, "e1": 0, "e2": 0}
    t = totals(client)
    assert t.events == 3
    assert t.output_tokens == 150
    assert t.request_count == 9
    assert_rollups_match_ledger(client)


def test_empty_batch(warehouse):
    client, _ = warehouse
    assert write_enriched(client, []) == WriteResult(0, 0, 0, 0)


def test_duplicates_within_one_batch(warehouse, make_enriched):
    client, _ = warehouse
    e = make_enriched("dup")
    res = write_enriched(client, [e, e, e, make_enriched("other")])
    assert res == WriteResult(inserted=2, cancelled=0, skipped_duplicates=2, skipped_stale=0)
    assert live_event_count(client) == 2
    assert totals(client).output_tokens == 100


def test_duplicates_across_batches(warehouse, make_enriched):
    client, _ = warehouse
    batch = [make_enriched(f"e{i}") for i in range(4)]
    write_enriched(client, batch)
    before = totals(client)
    res = write_enriched(client, batch)
    assert res == WriteResult(inserted=0, cancelled=0, skipped_duplicates=4, skipped_stale=0)
    assert totals(client) == before
    assert client.query("SELECT count() FROM usage_events").result_rows[0][0] == 4


def test_revisions_in_order_replace(warehouse, make_enriched):
    client, _ = warehouse
    write_enriched(client, [make_enriched("p", 0)])
    res = write_enriched(client, [make_enriched("p", 1)])
    assert res == WriteResult(inserted=1, cancelled=1, skipped_duplicates=0, skipped_stale=0)
    res = write_enriched(client, [make_enriched("p", 2)])
    assert res == WriteResult(inserted=1, cancelled=1, skipped_duplicates=0, skipped_stale=0)
    assert live_revisions(client) == {"p": 2}
    t = totals(client)
    assert (t.events, t.input_tokens_uncached, t.output_tokens) == (1, 102, 70)
    assert t.co2_kg == pytest.approx(make_enriched("p", 2).co2_kg, rel=1e-12)
    assert_rollups_match_ledger(client)


def test_revisions_out_of_order_and_stale_after_newer(warehouse, make_enriched):
    client, _ = warehouse
    write_enriched(client, [make_enriched("p", 3)])
    res = write_enriched(client, [make_enriched("p", 1)])
    assert res == WriteResult(inserted=0, cancelled=0, skipped_duplicates=0, skipped_stale=1)
    res = write_enriched(client, [make_enriched("p", 0), make_enriched("p", 2)])
    assert res == WriteResult(inserted=0, cancelled=0, skipped_duplicates=0, skipped_stale=2)
    assert live_revisions(client) == {"p": 3}
    assert totals(client).output_tokens == 80


def test_highest_revision_in_batch_wins(warehouse, make_enriched):
    client, _ = warehouse
    batch = [make_enriched("p", 1), make_enriched("p", 4), make_enriched("p", 2), make_enriched("p", 4)]
    res = write_enriched(client, batch)
    assert res == WriteResult(inserted=1, cancelled=0, skipped_duplicates=1, skipped_stale=2)
    assert live_revisions(client) == {"p": 4}


def _insert_by_hand(client, events, sign=1):
    client.insert_arrow("usage_events", to_arrow(events, sign))


def test_rerun_after_partial_write_of_new_events_converges(warehouse, make_enriched):
    """A crash after some partitions' parts were written: re-running the batch writes only the rest."""
    client, _ = warehouse
    batch = [make_enriched(f"e{i}", bucket_start=datetime(2025, 1 + i % 3, 1, tzinfo=UTC)) for i in range(9)]
    _insert_by_hand(client, batch[:4])
    res = write_enriched(client, batch)
    assert res == WriteResult(inserted=5, cancelled=0, skipped_duplicates=4, skipped_stale=0)
    assert live_revisions(client) == {f"e{i}": 0 for i in range(9)}
    assert_rollups_match_ledger(client)


def test_rerun_after_partial_revision_write_only_new_row(warehouse, make_enriched):
    """Crashed after writing r1's +1 row but before r0's cancel row: two live revisions until the re-run."""
    client, _ = warehouse
    write_enriched(client, [make_enriched("p", 0)])
    _insert_by_hand(client, [make_enriched("p", 1)])
    assert live_event_count(client) == 2  # the broken state
    res = write_enriched(client, [make_enriched("p", 1)])
    assert res == WriteResult(inserted=0, cancelled=1, skipped_duplicates=1, skipped_stale=0)
    assert live_revisions(client) == {"p": 1}
    assert totals(client).output_tokens == 60
    assert_rollups_match_ledger(client)


def test_rerun_after_partial_revision_write_only_cancel(warehouse, make_enriched):
    client, _ = warehouse
    write_enriched(client, [make_enriched("p", 0)])
    _insert_by_hand(client, [make_enriched("p", 0)], sign=-1)
    assert live_event_count(client) == 0
    res = write_enriched(client, [make_enriched("p", 1)])
    assert res == WriteResult(inserted=1, cancelled=0, skipped_duplicates=0, skipped_stale=0)
    assert live_revisions(client) == {"p": 1}
    assert_rollups_match_ledger(client)


def test_overcounted_revision_is_repaired(warehouse, make_enriched):
    """Two concurrent writers (a broken assumption) left r0 live twice: the next write repairs it."""
    client, _ = warehouse
    _insert_by_hand(client, [make_enriched("p", 0)])
    _insert_by_hand(client, [make_enriched("p", 0)])
    res = write_enriched(client, [make_enriched("p", 0)])
    assert res == WriteResult(inserted=0, cancelled=1, skipped_duplicates=1, skipped_stale=0)
    assert live_revisions(client) == {"p": 0}
    _insert_by_hand(client, [make_enriched("q", 0)])
    _insert_by_hand(client, [make_enriched("q", 0)])
    res = write_enriched(client, [make_enriched("q", 1)])
    assert res == WriteResult(inserted=1, cancelled=2, skipped_duplicates=0, skipped_stale=0)
    assert live_revisions(client) == {"p": 0, "q": 1}
    assert_rollups_match_ledger(client)


def test_two_live_revisions_heal_whichever_revision_arrives(warehouse, make_enriched):
    """Broken state r1 and r3 both live: a re-sent r1 (stale) still cancels r1 and keeps r3."""
    client, _ = warehouse
    _insert_by_hand(client, [make_enriched("p", 1)])
    _insert_by_hand(client, [make_enriched("p", 3)])
    res = write_enriched(client, [make_enriched("p", 1)])
    assert res == WriteResult(inserted=0, cancelled=1, skipped_duplicates=0, skipped_stale=1)
    assert live_revisions(client) == {"p": 3}
    assert_rollups_match_ledger(client)


def test_cancel_row_is_an_exact_copy_of_the_live_row(warehouse, make_enriched):
    client, _ = warehouse
    e0 = make_enriched(
        "p", 0, labels={"a": "1", "b": "2"}, estimation_reasons=["model_fallback"], region="eu"
    )
    write_enriched(client, [e0])
    write_enriched(client, [make_enriched("p", 1)])
    cols = "* EXCEPT (sign, ingested_at)"
    rows = client.query(f"SELECT {cols}, sign FROM usage_events WHERE revision = 0 ORDER BY sign").result_rows
    assert len(rows) == 2
    assert rows[0][:-1] == rows[1][:-1]
    assert [r[-1] for r in rows] == [-1, 1]


def test_mapping_rows_with_iso_strings(warehouse, make_enriched):
    client, _ = warehouse
    e = make_enriched("m", 0, routing_tier="L2", connection_id="conn_1")
    row = e.model_dump(mode="json")  # what the sink gets from Kafka JSON
    assert isinstance(row["bucket_start"], str)
    res = write_enriched(client, [row])
    assert res.inserted == 1
    assert write_enriched(client, [e]).skipped_duplicates == 1  # model and mapping are the same event
    stored = client.query(
        "SELECT bucket_start, routing_tier, connection_id, labels, source FROM usage_events"
    ).result_rows[0]
    assert stored[0] == e.bucket_start.replace(tzinfo=None)
    assert stored[1:] == ("L2", "conn_1", {"team": "search"}, "poller")


def test_times_are_stored_with_millisecond_precision(warehouse, make_enriched):
    client, _ = warehouse
    start = datetime(2025, 3, 1, 12, 0, 0, 123987, tzinfo=UTC)
    e = make_enriched("t", 0, bucket_start=start)
    write_enriched(client, [e])
    assert write_enriched(client, [e]).skipped_duplicates == 1  # the lookup matches the truncated time
    write_enriched(client, [make_enriched("t", 1, bucket_start=start)])
    assert live_revisions(client) == {"t": 1}
    stored = client.query("SELECT DISTINCT bucket_start FROM usage_events").result_rows
    assert stored == [(datetime(2025, 3, 1, 12, 0, 0, 123000),)]


def test_many_distinct_buckets_use_range_lookup(warehouse, make_enriched):
    """Gateway-like batches: every event has its own bucket_start (more than the IN-list threshold)."""
    client, _ = warehouse
    base = datetime(2025, 3, 1, tzinfo=UTC)
    batch = [make_enriched(f"g{i}", bucket_start=base + timedelta(seconds=37 * i)) for i in range(600)]
    assert write_enriched(client, batch).inserted == 600
    res = write_enriched(
        client,
        [make_enriched(f"g{i}", 1, bucket_start=base + timedelta(seconds=37 * i)) for i in range(0, 600, 2)]
        + batch[1::2],
    )
    assert res == WriteResult(inserted=300, cancelled=300, skipped_duplicates=300, skipped_stale=0)
    assert live_event_count(client) == 600
    assert_rollups_match_ledger(client)


def test_missing_required_field_is_a_clear_error(warehouse, make_enriched):
    client, _ = warehouse
    row = make_enriched("x").model_dump()
    del row["co2_kg"]
    with pytest.raises(ValueError, match="co2_kg"):
        write_enriched(client, [row])


def test_key_tables_are_cleaned_up(warehouse, make_enriched):
    client, database = warehouse
    write_enriched(client, [make_enriched("p", 0)])
    write_enriched(client, [make_enriched("p", 1)])
    left = client.query(
        "SELECT count() FROM system.tables WHERE database = {d:String} AND name LIKE '\\_ledger\\_tmp\\_%'",
        parameters={"d": database},
    ).result_rows[0][0]
    assert left == 0
