"""The sink's hot path, `write_enriched_json`: ClickHouse parses the enriched topic's payloads. It must store
exactly what `write_enriched` stores for the same events, and refuse (write nothing) what does not fit."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from streams.processing import to_json
from warehouse.ledger import UnfitRows, WriteResult, write_enriched, write_enriched_json
from warehouse.queries import live_event_count

ROW = "* EXCEPT (ingested_at)"


def stored(client) -> list[tuple]:
    return client.query(f"SELECT {ROW} FROM usage_events ORDER BY event_id, revision, sign").result_rows


def test_json_and_objects_store_identical_rows(warehouse, make_enriched):
    """Same events through each writer (into two databases' worth of ids) → identical ledger rows, including
    ms-truncated times, None/empty optionals, labels, reasons and awkward doubles."""
    client, _ = warehouse
    rng = random.Random(7)
    start = datetime(2025, 3, 1, 12, 0, 0, 123987, tzinfo=UTC)
    events = [
        make_enriched(
            f"e{i}",
            i % 3,
            bucket_start=start + timedelta(minutes=i),
            connection_id=None if i % 2 else f"conn_{i}",
            routing_tier=None if i % 3 else "L2",
            pue=1 + rng.random(),
            grid_intensity_kg_per_kwh=rng.random(),
            j_per_prefill_token=rng.random() / 3,
        )
        for i in range(40)
    ]
    assert write_enriched(client, events) == WriteResult(40, 0, 0, 0)
    by_objects = stored(client)
    client.command("TRUNCATE TABLE usage_events")
    assert write_enriched_json(client, [to_json(e) for e in events]) == WriteResult(40, 0, 0, 0)
    assert stored(client) == by_objects
    # and each writer recognises the other's rows: a replay through either is a duplicate
    assert write_enriched(client, events).skipped_duplicates == 40
    assert write_enriched_json(client, [to_json(e) for e in events]).skipped_duplicates == 40


def test_doubles_survive_exactly(warehouse, make_enriched):
    """precise_float_parsing: the stored double is the one Python serialised (e2e totals are exact)."""
    client, _ = warehouse
    rng = random.Random(11)
    values = [rng.random() * 10 ** rng.randint(-12, 6) for _ in range(500)]
    events = [make_enriched(f"f{i}", pue=1 + v) for i, v in enumerate(values)]
    write_enriched_json(client, [to_json(e) for e in events])
    rows = {r[0]: r[1:] for r in client.query("SELECT event_id, pue, energy_j FROM usage_events").result_rows}
    for e in events:
        assert rows[e.event_id] == (e.pue, e.energy_j)


def test_revisions_and_batch_duplicates(warehouse, make_enriched):
    client, _ = warehouse
    write_enriched_json(client, [to_json(make_enriched("p", 0))])
    res = write_enriched_json(
        client,
        [to_json(make_enriched("p", 1)), to_json(make_enriched("p", 2)), to_json(make_enriched("p", 2))],
    )
    assert res == WriteResult(inserted=1, cancelled=1, skipped_duplicates=1, skipped_stale=1)
    assert client.query(
        "SELECT revision FROM usage_events GROUP BY revision HAVING sum(sign) = 1"
    ).result_rows == [(2,)]


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: b"{not json", "parse"),
        (lambda d: b"[1, 2]", "parse"),
        (lambda d: orjson.dumps({**d, "output_tokens": -3}), "parse"),
        (lambda d: orjson.dumps({**d, "energy_j": "lots"}), "parse"),
        (lambda d: orjson.dumps({k: v for k, v in d.items() if k != "co2_kg"}), "co2_kg"),
        (lambda d: orjson.dumps({**d, "org_id": None}), "org_id"),
        (lambda d: orjson.dumps(d) + orjson.dumps({**d, "event_id": "smuggled"}), "staged as"),
        (lambda d: b"", "staged as"),
    ],
    ids=["bad-json", "array", "negative", "string-for-double", "missing", "null", "two-objects", "empty"],
)
def test_misfits_raise_and_write_nothing(warehouse, make_enriched, mutate, reason):
    client, _ = warehouse
    good = to_json(make_enriched("good"))
    bad = mutate(orjson.loads(to_json(make_enriched("bad"))))
    with pytest.raises(UnfitRows, match=reason):
        write_enriched_json(client, [good, bad])
    assert live_event_count(client) == 0
    assert client.query(
        "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name LIKE '\\_ledger\\_tmp\\_%'"
    ).result_rows == [(0,)]
