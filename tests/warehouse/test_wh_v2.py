"""Methodology v2 in the warehouse (migration 0003): the v2 figures through the ledger, the rollups, the typed
queries and the export file — exact sums, coverage counts for events that lack a figure (never a 0 that looks
measured), the measured part of energy and CO2e, and how each row was estimated."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import uuid
from datetime import UTC, date, datetime, timedelta

import orjson
import pandas as pd
import pyarrow.parquet as pq
import pytest

from core.contracts import MODALITY_FIELDS, UNIT_FIELDS
from warehouse.export import EXPORT_COLUMNS, iter_export
from warehouse.ledger import to_arrow, write_enriched, write_enriched_json
from warehouse.measures import BY_NAME, MEASURES, columns, present
from warehouse.migrate import MIGRATIONS_DIR, migrate
from warehouse.queries import ledger_totals, totals, totals_by
from warehouse.reconcile import reconcile_rollups
from warehouse.staging import OPTIONAL_FIELDS
from warehouse.telemetry import Scope, estimation, events_page, models

V2_POINTS = ("co2_kg_market", "co2_kg_embodied", "water_l", "cost_usd")
DAY = datetime(2025, 3, 1, 12, tzinfo=UTC)
REASON = "model 'mystery-1' not in the factor set: tier default"


def _fsum(events, field: str) -> float:
    return math.fsum(getattr(e, field) or 0.0 for e in events)


def _mixed(make_enriched):
    """v1 events (no v2 figure), v2 estimated events, v2 measured events, one estimated with a reason."""
    return [
        make_enriched("v1-a"),
        make_enriched("v1-b", output_tokens=900),
        make_enriched("v2-a", v2=True),
        make_enriched("v2-b", v2=True, output_tokens=4000, model="gpt-4o"),
        make_enriched("m-a", v2=True, measured=True, output_tokens=250),
        make_enriched("m-b", v2=True, measured=True, input_tokens_uncached=7000),
        make_enriched(
            "est",
            v2=True,
            model="mystery-1",
            model_tier="medium",
            is_estimated=True,
            estimation_reasons=[REASON],
        ),
    ]


def test_v2_rollups_are_exact_with_coverage_and_the_measured_part(warehouse, make_enriched):
    client, _ = warehouse
    events = _mixed(make_enriched)
    write_enriched(client, events[:4])
    write_enriched_json(client, [orjson.dumps(e.model_dump(mode="json")) for e in events[4:]])
    t = totals(client)
    assert t.approx_equal(ledger_totals(client))
    v2 = [e for e in events if e.co2_kg_market is not None]
    measured = [e for e in events if e.energy_source == "measured"]
    assert (t.events, t.events_market, t.events_embodied, t.events_water, t.events_cost) == (7, 5, 5, 5, 5)
    assert t.events_measured == 2
    for f in V2_POINTS + ("co2_kg_market_low", "co2_kg_market_high", "water_l_high", "co2_kg_embodied_low"):
        assert getattr(t, f) == pytest.approx(_fsum(v2, f), rel=1e-12), f
    assert t.energy_j_measured == pytest.approx(_fsum(measured, "energy_j"), rel=1e-12)
    assert t.co2_kg_measured == pytest.approx(_fsum(measured, "co2_kg"), rel=1e-12)
    assert t.co2_kg_measured_high == pytest.approx(_fsum(measured, "co2_kg_high"), rel=1e-12)
    # hand-computed figures of one event (tests/conftest.py's factors)
    e = events[2]
    it_j = 100 * 0.5 + 20 * 0.05 + 5 * 0.6 + 50 * 2.0
    assert e.co2_kg_market == pytest.approx(it_j * 1.2 / 3.6e6 * 0.12, rel=1e-12)
    assert e.cost_usd == pytest.approx((100 * 0.15 + 20 * 0.075 + 5 * 0.1875 + 50 * 0.6) / 1e6, rel=1e-12)
    # the measured events' raw fields are kept
    rows = client.query(
        "SELECT event_id, energy_source, measured_by, measured_boundary, measured_energy_j FROM usage_events "
        "WHERE event_id IN ('m-a', 'v1-a') ORDER BY event_id"
    ).result_rows
    assert rows == [
        ("m-a", "measured", "dcgm", "facility", events[4].energy_j),
        ("v1-a", "estimated", None, None, None),
    ]
    assert reconcile_rollups(client, datetime(2000, 1, 1, tzinfo=UTC)) == 0


def test_a_missing_figure_is_never_a_zero(warehouse, make_enriched):
    client, _ = warehouse
    write_enriched(client, [make_enriched("v1-a"), make_enriched("v1-b")])
    t = totals(client)
    shown = present(t.model_dump())
    assert all(shown[f] is None for f in V2_POINTS) and shown["co2_kg"] == t.co2_kg > 0
    stored = client.query("SELECT co2_kg_market, water_l, cost_usd FROM usage_events").result_rows
    assert stored == [(None, None, None)] * 2
    rows, _ = events_page(client, Scope("org_a"), 0, 10)
    assert {(r["co2_kg_market"], r["water_l"], r["cost_usd"], r["energy_source"]) for r in rows} == {
        (None, None, None, "estimated")
    }
    # a true zero (no tokens) is a figure: coverage 1, sum 0
    write_enriched(
        client,
        [
            make_enriched(
                "zero",
                v2=True,
                input_tokens_uncached=0,
                input_tokens_cached=0,
                input_tokens_cache_creation=0,
                output_tokens=0,
            )
        ],
    )
    shown = present(totals(client).model_dump())
    assert shown["cost_usd"] == 0.0 and shown["events_cost"] == 1


def test_revisions_and_re_enrichment_cancel_exactly(warehouse, make_enriched):
    """A v1 row revised by a v2 row (what re-enrichment writes): the old row's figures leave the sums, the new
    ones enter, the coverage moves from 0 to 1; a revision back to estimated removes the measured part."""
    client, _ = warehouse
    write_enriched(client, [make_enriched("e1"), make_enriched("e2", measured=True, v2=True)])
    assert totals(client).events_market == 1
    revised = [make_enriched("e1", 1, v2=True), make_enriched("e2", 1, v2=True)]
    write_enriched(client, revised)
    t = totals(client)
    assert (t.events, t.events_market, t.events_measured) == (2, 2, 0)
    assert t.energy_j_measured == 0.0 and t.co2_kg_measured == 0.0
    assert t.co2_kg_market == pytest.approx(_fsum(revised, "co2_kg_market"), rel=1e-12)
    assert t.approx_equal(ledger_totals(client))
    by_model = totals_by(client, "model")
    assert [r.events_market for r in by_model] == [2]
    assert reconcile_rollups(client, datetime(2000, 1, 1, tzinfo=UTC)) == 0


def test_the_reconciler_repairs_the_v2_measures(warehouse, make_enriched):
    client, _ = warehouse
    events = [make_enriched("a", v2=True), make_enriched("b", v2=True, measured=True)]
    client.command("DROP VIEW usage_hourly_mv")  # the MV part of the insert is lost (the crash window)
    client.command("DROP VIEW usage_daily_mv")
    client.insert_arrow("usage_events", to_arrow(events))
    assert totals(client).events == 0
    assert reconcile_rollups(client, datetime(2000, 1, 1, tzinfo=UTC)) == 2  # one hourly + one daily key
    t = totals(client)
    assert t.approx_equal(ledger_totals(client))
    assert (t.events_market, t.events_measured) == (2, 1)
    assert t.water_l == pytest.approx(_fsum(events, "water_l"), rel=1e-12)


def test_rows_written_before_migration_0003_have_no_v2_figures(warehouse_dsn, make_enriched, tmp_path):
    """Ledger and rollup rows written under 0001 + 0002 read NULL v2 figures, energy_source 'estimated' and
    coverage 0 after 0003; their totals do not move and a v2 revision of one cancels it exactly."""
    from core.settings import load_settings
    from warehouse.client import close_clients, get_client

    database = f"test_{uuid.uuid4().hex}"
    client = get_client(load_settings().replace(clickhouse=warehouse_dsn), database=database)
    try:
        older = tmp_path / "migrations"
        older.mkdir()
        for name in ("0001_usage.sql", "0002_cached_savings.sql"):
            shutil.copy(MIGRATIONS_DIR / name, older)
        migrate(client, database, older)
        events = [make_enriched(f"o{i}", output_tokens=10 * (i + 1)) for i in range(3)]
        client.insert_arrow(
            "usage_events",
            to_arrow(events).drop_columns(
                ["energy_source", *OPTIONAL_FIELDS, *MODALITY_FIELDS, *UNIT_FIELDS]
            ),
        )
        before = client.query("SELECT sum(co2_kg), sum(events) FROM usage_daily").result_rows[0]
        assert migrate(client, database) == [
            "0003_methodology_v2",
            "0004_reporting_dimensions",
            "0005_modalities",
        ]
        t = totals(client)
        assert (t.co2_kg, t.events) == pytest.approx(before, rel=1e-12)
        assert (t.events_market, t.events_measured, t.co2_kg_market) == (0, 0, 0.0)
        assert client.query("SELECT DISTINCT energy_source, co2_kg_market FROM usage_events").result_rows == [
            ("estimated", None)
        ]
        assert reconcile_rollups(client, datetime(2000, 1, 1, tzinfo=UTC)) == 0
        write_enriched(client, [make_enriched("o0", 1, v2=True, output_tokens=10)])
        t = totals(client)
        assert (t.events, t.events_market) == (3, 1)
        assert t.approx_equal(ledger_totals(client))
        assert reconcile_rollups(client, datetime(2000, 1, 1, tzinfo=UTC)) == 0
    finally:
        try:
            client.command(f"DROP DATABASE IF EXISTS `{database}`")
        finally:
            close_clients(database)


def test_estimation_share_and_reasons(warehouse, make_enriched):
    client, _ = warehouse
    write_enriched(client, _mixed(make_enriched))
    est = estimation(client, Scope("org_a"))
    assert set(est) == {("openai", "mystery-1")}
    assert est[("openai", "mystery-1")].estimated_events == 1
    assert est[("openai", "mystery-1")].reason_list() == [{"reason": REASON, "event_count": 1}]
    # a revision that is no longer estimated takes the reason away (signs cancel)
    write_enriched(client, [make_enriched("est", 1, v2=True, model="mystery-1", model_tier="medium")])
    assert estimation(client, Scope("org_a")) == {}
    rows = {m["model"]: m for m in models(client, Scope("org_a"))}
    assert rows["mystery-1"]["is_estimated"] is False and rows["mystery-1"]["estimation_reasons"] == []
    mini = rows["gpt-4o-mini"]
    assert mini["coverage"] == {"co2_market": 3, "co2_embodied": 3, "water": 3, "cost": 3}
    assert mini["event_count"] == 5 and mini["measured"]["event_count"] == 2
    assert mini["estimated"]["event_count"] == 3
    assert mini["measured"]["co2_kg"] + mini["estimated"]["co2_kg"] == pytest.approx(mini["total_co2_kg"])


def _csv_rows(body: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(body.decode())))


def test_export_formats_carry_the_v2_figures_and_agree(warehouse, make_enriched):
    """CSV (read back with pandas), JSON and Parquet (pyarrow) hold the same rows: the v2 sums with their
    coverage, null where no event of the row carries the figure, the measured part, and the estimation."""
    client, _ = warehouse
    events = _mixed(make_enriched)
    events.append(make_enriched("old-day", bucket_start=DAY - timedelta(days=1)))  # a v1-only row
    write_enriched(client, events)
    scope = Scope("org_a", date(2025, 2, 1), date(2025, 3, 31))
    names = {"proj_1": "Project One"}
    body = {fmt: b"".join(iter_export(client, scope, fmt, names)) for fmt in ("csv", "json", "parquet")}
    js = orjson.loads(body["json"])["data"]
    table = pq.read_table(io.BytesIO(body["parquet"]))
    frame = pd.read_csv(io.BytesIO(body["csv"]))
    assert table.column_names == list(EXPORT_COLUMNS) == list(frame.columns) == list(js[0])
    pq_rows = table.to_pylist()
    assert len(js) == len(pq_rows) == len(frame) == 4  # 2025-02-28 gpt-4o-mini; 03-01: three models
    key = lambda r: (str(r["date"]), r["model"])  # noqa: E731
    by_key = {key(r): r for r in js}
    old = by_key[("2025-02-28", "gpt-4o-mini")]
    assert all(old[f] is None for f in V2_POINTS) and old["events_market"] == 0
    assert old["is_estimated"] is False and old["estimation_reasons"] == ""
    mini = by_key[("2025-03-01", "gpt-4o-mini")]
    mini_events = [e for e in events if e.model == "gpt-4o-mini" and e.bucket_start == DAY]
    assert mini["co2_kg_market"] == pytest.approx(_fsum(mini_events, "co2_kg_market"), rel=1e-12)
    assert mini["events_market"] == 3 and mini["events_measured"] == 2
    assert mini["co2_kg_measured"] == pytest.approx(
        _fsum([e for e in mini_events if e.energy_source == "measured"], "co2_kg"), rel=1e-12
    )
    mystery = by_key[("2025-03-01", "mystery-1")]
    assert mystery["is_estimated"] is True and mystery["estimated_events"] == 1
    assert mystery["estimation_reasons"] == REASON
    # the three formats agree value for value (CSV: an empty cell is a missing figure, NaN in pandas)
    csv_rows = frame.to_dict("records")
    for j, p, c in zip(js, pq_rows, csv_rows, strict=True):
        for col in EXPORT_COLUMNS:
            jv, pv, cv = j[col], p[col], c[col]
            if col == "date":
                assert jv == str(pv) == cv
            elif jv is None:
                assert pv is None and (isinstance(cv, float) and math.isnan(cv)), col
            elif isinstance(jv, float):
                assert pv == pytest.approx(jv, rel=1e-12) and cv == pytest.approx(jv, rel=1e-12), col
            elif col == "estimation_reasons" and jv == "":
                assert pv == "" and (cv == "" or (isinstance(cv, float) and math.isnan(cv)))
            else:
                assert jv == pv == cv, col
    assert _csv_rows(body["csv"])[0]["co2_kg_market"] == ""  # the old row: an empty cell, not 0


def test_spec_readers(make_enriched):
    """Every v2 figure has a coverage count that the same readers show; every measure is summed by the rollups."""
    for m in MEASURES:
        if m.coverage:
            assert BY_NAME[m.coverage].readers >= m.readers - {"events"}, m.name
            assert m.nullable and m.ledger_type == "Nullable(Float64)"
    assert set(columns("export")) >= {*V2_POINTS, "events_measured", "co2_kg_measured"}
    assert (
        json.dumps(present({"co2_kg_market": 0.0, "events_market": 0}))
        == '{"co2_kg_market": null, "events_market": 0}'
    )
