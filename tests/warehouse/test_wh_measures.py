"""The measure spec (warehouse.measures) against the migrated tables, and the per-event cached savings."""

from __future__ import annotations

import math
import shutil
import uuid
from datetime import UTC, datetime

import orjson
import pytest

from core.contracts import MODALITY_FIELDS, UNIT_FIELDS, UsageEvent
from core.methodology import cached_savings, enrich, load_factor_set
from warehouse.ledger import to_arrow, write_enriched, write_enriched_json
from warehouse.measures import LEDGER_SCHEMA, MEASURES, ROLLUP_MEASURES, ROLLUPS
from warehouse.migrate import MIGRATIONS_DIR, migrate
from warehouse.queries import cached_vs_uncached, ledger_totals, totals
from warehouse.reconcile import reconcile_rollups
from warehouse.staging import OPTIONAL_FIELDS


def _columns(client, table: str) -> list[tuple[str, str]]:
    return [
        (name, type_)
        for name, type_ in client.query(
            "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = {t:String} "
            "ORDER BY position",
            parameters={"t": table},
        ).result_rows
    ]


def test_spec_matches_the_migrated_tables(warehouse):
    client, _ = warehouse
    ledger = dict(_columns(client, "usage_events"))
    assert [n for n in ledger if n != "ingested_at"] == LEDGER_SCHEMA.names
    for m in MEASURES:
        if m.field is not None:
            assert ledger[m.field] == m.ledger_type, m.name
    for rollup in ROLLUPS:
        table = rollup.table
        cols = _columns(client, table)
        keys = [n for n, _ in cols[: len(rollup.keys) + 1]]
        assert keys == [rollup.keys[0], rollup.bucket, *rollup.keys[1:]]
        assert cols[len(keys) :] == [(m.name, m.rollup_type) for m in MEASURES], table
        assert tuple(n for n, _ in cols[len(keys) :]) == ROLLUP_MEASURES


def _enriched(make_enriched, event_id: str, revision: int = 0, **overrides):
    """An event enriched by the methodology itself (so it carries the cached savings), on make_enriched's
    identity fields."""
    base = make_enriched(event_id, revision, **overrides)
    raw = UsageEvent(**base.model_dump(include=set(UsageEvent.model_fields)))
    return enrich(raw, load_factor_set(), datetime(2025, 3, 1, 13, tzinfo=UTC))


def test_rollups_sum_the_per_event_savings(warehouse, make_enriched):
    client, _ = warehouse
    events = [
        _enriched(make_enriched, f"e{i}", input_tokens_cached=1000 * (i + 1), model=model)
        for i, model in enumerate(("gpt-4o", "gpt-4o-mini", "gpt-4.1"))
    ]
    assert all(e.co2_cached_savings_kg and e.energy_cached_savings_j for e in events)
    write_enriched(client, events[:2])
    write_enriched_json(client, [orjson.dumps(events[2].model_dump(mode="json"))])
    split = cached_vs_uncached(client, "org_a", None, None)
    assert split.energy_cached_savings_j == pytest.approx(
        math.fsum(e.energy_cached_savings_j for e in events), rel=1e-12
    )
    assert split.co2_cached_savings_kg == pytest.approx(
        math.fsum(e.co2_cached_savings_kg for e in events), rel=1e-12
    )
    for e in events:  # the methodology's own formula
        assert (e.energy_cached_savings_j, e.co2_cached_savings_kg) == cached_savings(
            e.input_tokens_cached,
            e.j_per_prefill_token,
            e.j_per_cached_token,
            e.pue,
            e.grid_intensity_kg_per_kwh,
        )


def test_payloads_without_the_savings_fields_are_filled_in(warehouse, make_enriched):
    """An enriched payload of a producer that predates the fields: the writer computes them."""
    client, _ = warehouse
    old = make_enriched("old", input_tokens_cached=500)
    body = old.model_dump(mode="json", exclude={"energy_cached_savings_j", "co2_cached_savings_kg"})
    write_enriched_json(client, [orjson.dumps(body)])
    stored = client.query(
        "SELECT energy_cached_savings_j, co2_cached_savings_kg FROM usage_events"
    ).result_rows
    want = cached_savings(500, old.j_per_prefill_token, old.j_per_cached_token, old.pue, 0.37)
    assert stored == [want]


def test_rows_written_before_migration_0002_use_the_documented_fallback(
    warehouse_dsn, make_enriched, tmp_path
):
    """Ledger rows written under migration 0001 (no savings columns) read the column defaults, which equal the
    methodology's figures: rollup totals stay the same across the migration, and a revision of such an event
    cancels exactly what was counted."""
    from core.settings import load_settings
    from warehouse.client import close_clients, get_client

    database = f"test_{uuid.uuid4().hex}"
    client = get_client(load_settings().replace(clickhouse=warehouse_dsn), database=database)
    try:
        only_first = tmp_path / "migrations"
        only_first.mkdir()
        shutil.copy(MIGRATIONS_DIR / "0001_usage.sql", only_first)
        migrate(client, database, only_first)
        events = [make_enriched(f"v{i}", input_tokens_cached=100 * (i + 1)) for i in range(3)]
        old_rows = to_arrow(events).drop_columns(
            [
                "energy_cached_savings_j",
                "co2_cached_savings_kg",
                "energy_source",
                *OPTIONAL_FIELDS,
                *MODALITY_FIELDS,
                *UNIT_FIELDS,
            ]
        )
        client.insert_arrow("usage_events", old_rows)
        before = client.query(
            "SELECT sum(energy_cached_savings_j), sum(co2_cached_savings_kg) FROM usage_daily"
        ).result_rows[0]

        assert migrate(client, database) == [
            "0002_cached_savings",
            "0003_methodology_v2",
            "0004_reporting_dimensions",
            "0005_modalities",
        ]
        stored = client.query(
            "SELECT energy_cached_savings_j, co2_cached_savings_kg FROM usage_events ORDER BY event_id"
        ).result_rows
        assert stored == [
            cached_savings(
                e.input_tokens_cached,
                e.j_per_prefill_token,
                e.j_per_cached_token,
                e.pue,
                e.grid_intensity_kg_per_kwh,
            )
            for e in events
        ]
        split = cached_vs_uncached(client, "org_a", None, None)
        assert (split.energy_cached_savings_j, split.co2_cached_savings_kg) == pytest.approx(
            before, rel=1e-12
        )
        assert reconcile_rollups(client, datetime(2000, 1, 1, tzinfo=UTC)) == 0

        write_enriched(client, [make_enriched("v0", 1, input_tokens_cached=7)])  # cancels the old row
        e1, e2 = events[1:]
        revised = make_enriched("v0", 1, input_tokens_cached=7)
        want = [
            cached_savings(
                e.input_tokens_cached,
                e.j_per_prefill_token,
                e.j_per_cached_token,
                e.pue,
                e.grid_intensity_kg_per_kwh,
            )
            for e in (revised, e1, e2)
        ]
        split = cached_vs_uncached(client, "org_a", None, None)
        assert split.energy_cached_savings_j == pytest.approx(math.fsum(w[0] for w in want), rel=1e-12)
        assert split.co2_cached_savings_kg == pytest.approx(math.fsum(w[1] for w in want), rel=1e-12)
        assert totals(client).approx_equal(ledger_totals(client))
        assert reconcile_rollups(client, datetime(2000, 1, 1, tzinfo=UTC)) == 0
    finally:
        try:
            client.command(f"DROP DATABASE IF EXISTS `{database}`")
        finally:
            close_clients(database)


def test_the_last_view_of_each_rollup_equals_the_spec():
    """The newest CREATE MATERIALIZED VIEW of each rollup across the migrations is `rollup_view_sql` of the spec
    (a migration adding measures re-creates the views from it)."""
    from warehouse.measures import ROLLUPS, rollup_view_sql
    from warehouse.migrate import load_migrations, quote_identifier

    db = quote_identifier("wh")
    for rollup in ROLLUPS:
        want = rollup_view_sql(rollup).replace("{db}", db).rstrip(";")
        head = want.split(" AS\n", 1)[0]
        last = None
        for m in load_migrations():
            for stmt in m.statements("wh"):
                if stmt.startswith(head):
                    last = stmt.rstrip(";")
        assert last == want, rollup.table
