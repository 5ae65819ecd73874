"""Unit tests of the close's arithmetic (orchestration.figures): no warehouse, no control plane."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pyarrow as pa
import pytest

from orchestration.figures import compute, cross_check, retired_kg
from warehouse.close import conform
from warehouse.ledger import to_arrow

JAN = datetime(2026, 1, 10, 12, tzinfo=UTC)
DEC = datetime(2025, 12, 30, 8, tzinfo=UTC)


@dataclass(frozen=True)
class _Period:
    org_id: str = "org_a"
    month: str = "2026-01"
    period_start: date = date(2026, 1, 1)
    period_end: date = date(2026, 1, 31)
    cutoff: datetime | None = datetime(2026, 2, 1, 6, tzinfo=UTC)
    adjustment_from: datetime | None = datetime(2026, 1, 1, 6, tzinfo=UTC)


def _rows(events, sign: int, adjustment: bool) -> pa.Table:
    table = to_arrow(events, sign=sign)
    n = table.num_rows
    table = table.append_column("ingested_at", pa.array([JAN] * n, type=pa.timestamp("ms", tz="UTC")))
    return table.append_column("adjustment", pa.array([adjustment] * n, type=pa.bool_()))


def test_signed_rows_sum_per_part_exactly(make_enriched):
    a = make_enriched("a", bucket_start=JAN, co2_kg_high=0.1)
    b = make_enriched("b", bucket_start=JAN, input_tokens_uncached=1000, co2_kg_high=0.2)
    b1 = make_enriched("b", 1, bucket_start=JAN, input_tokens_uncached=1500, co2_kg_high=0.3)
    late = make_enriched("late", bucket_start=DEC, output_tokens=7, co2_kg_high=1e-9)
    table = conform(
        pa.concat_tables(
            [
                _rows([a, b, b1], +1, False),
                _rows([b], -1, False),  # b's revision 0 cancelled by revision 1
                _rows([late], +1, True),
            ]
        )
    )
    figures, breakdown = compute(table, _Period())

    month, adj, total = figures["month_totals"], figures["adjustment_totals"], figures["totals"]
    assert (month["ledger_rows"], month["events"]) == (4, 2)
    assert (adj["ledger_rows"], adj["events"]) == (1, 1)
    assert total["events"] == 3
    assert month["input_tokens_uncached"] == a.input_tokens_uncached + 1500
    assert adj["output_tokens"] == 7
    assert month["total_tokens"] == a.total_tokens + b1.total_tokens
    assert month["energy_j"] == math.fsum([a.energy_j, b1.energy_j])
    assert total["co2_kg_high"] == math.fsum([0.1, 0.3, 1e-9])
    assert figures["co2_kg_high"] == total["co2_kg_high"]
    assert figures["co2_retired_kg"] == 0.400001  # rounded up to the milligram
    assert figures["credits_tonnes"] == 1
    assert figures["factors_versions"] == ["v1.0"]
    assert (figures["cutoff"], figures["period_start"]) == ("2026-02-01T06:00:00+00:00", "2026-01-01")

    rows = breakdown["rows"]
    assert [(r["day"], r["adjustment"], r["events"]) for r in rows] == [
        ("2026-01-10", False, 2),
        ("2025-12-30", True, 1),
    ]
    assert rows[0]["tokens"]["request_count"] == a.request_count + b1.request_count
    assert rows[0]["results"]["energy_kwh"] == rows[0]["results"]["energy_j"] / 3.6e6
    assert rows[0]["factors"]["pue"] == a.pue


def test_retired_kg():
    assert retired_kg(0.0) == 0.0
    assert retired_kg(-1.0) == 0.0
    assert retired_kg(1.0) == 1.0
    assert retired_kg(1.0000001) == 1.000001
    assert retired_kg(2.5e-7) == 1e-6


def test_cross_check(make_enriched):
    table = conform(_rows([make_enriched("a", bucket_start=JAN)], +1, False))
    figures, _ = compute(table, _Period())
    same = {
        "month": dict(figures["month_totals"]),
        "adjustment": dict(figures["adjustment_totals"]),
    }
    cross_check(figures, same)
    off = {**same, "month": {**same["month"], "energy_j": same["month"]["energy_j"] * (1 + 1e-6)}}
    with pytest.raises(RuntimeError, match="month_totals.energy_j"):
        cross_check(figures, off)
    with pytest.raises(RuntimeError, match="adjustment_totals.events"):
        cross_check(figures, {**same, "adjustment": {"events": 1}})
