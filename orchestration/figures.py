"""The arithmetic of a monthly close: the period's figures and calculation breakdown from its ledger rows.

Pure: no database, no artefact store. `compute` sums the close's ledger rows (`warehouse.close.CLOSE_SCHEMA`,
both signs) in Python with `math.fsum` (exactly rounded, so independent of row order and of ClickHouse's
parallel summation: the figures are reproducible to the bit), per part (the month, the adjustment for late
events of earlier months, both) and per breakdown group; `retired_kg` is the CO2e a paid plan retires
credits for. `cross_check` holds them against the warehouse's own SQL sums. The summed columns are the
`totals` measures of `warehouse.measures` (each measure's per-row value comes from the spec too, so the
coverage counts and the measured part are summed by the same rule as in ClickHouse).

Besides the location-based CO2e (`co2_kg`, whose upper bound is retired), the figures carry methodology v2's:
Scope 2 market-based and Scope 3 embodied CO2e, water and cost — None when no event of the period carries
the figure, with `coverage` counting the events that do — the measured and estimated parts of energy and
CO2e, and how many events are estimates and why (`estimation`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import date, datetime
from typing import Any, Protocol

import pyarrow as pa

from controlplane.billing import tonnes_needed
from core.methodology import joules_to_kwh
from warehouse.measures import BY_NAME, TOKEN_COLUMNS, columns, present

_SUMMED = columns("totals", exclude=("events",))
_INTS = tuple(c for c in _SUMMED if BY_NAME[c].is_int)
_FLOATS = tuple(c for c in _SUMMED if not BY_NAME[c].is_int)
_FACTORS = (
    "j_per_prefill_token",
    "j_per_decode_token",
    "j_per_cached_token",
    "j_per_cache_creation_token",
    "pue",
    "grid_intensity_kg_per_kwh",
    # methodology v2 (None on rows enriched before it)
    "grid_market_intensity_kg_per_kwh",
    "embodied_kg_per_it_j",
    "wue_onsite_l_per_kwh",
    "water_offsite_l_per_kwh",
    "price_usd_per_1m_input",
    "price_usd_per_1m_cached",
    "price_usd_per_1m_cache_write",
    "price_usd_per_1m_output",
    "price_source",
)
_V2_FIGURES = tuple(
    f"{point}{suffix}"
    for point in ("co2_kg_market", "co2_kg_embodied", "water_l")
    for suffix in ("", "_low", "_high")
) + ("cost_usd",)
SQL_REL_TOL = 1e-9


class PeriodLike(Protocol):
    """What the figures need of a billing period (controlplane.billing.Period has it)."""

    org_id: str
    month: str
    period_start: date
    period_end: date
    cutoff: datetime | None
    adjustment_from: datetime | None


def retired_kg(co2_kg_high: float) -> float:
    """The CO2e a retirement covers: the period's upper bound, rounded up to the milligram (0 when ≤ 0)."""
    co2_high = max(co2_kg_high, 0.0)
    return math.ceil(co2_high * 1e6 - 1e-6) / 1e6 if co2_high > 0 else 0.0


def _fsum_signed(signs: list[int], values: list[float]) -> float:
    return math.fsum(s * v for s, v in zip(signs, values, strict=True))


def compute(table: pa.Table, period: PeriodLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """(figures, breakdown) from the close's ledger rows. Float sums are `math.fsum` (exactly rounded)."""
    cols = {name: table.column(name).to_pylist() for name in table.column_names if name != "labels"}
    n = table.num_rows
    sign = cols["sign"]
    adj = cols["adjustment"]
    values = {c: BY_NAME[c].row_values(cols, n) for c in _SUMMED}

    def totals(mask: list[bool]) -> dict[str, Any]:
        idx = [i for i in range(n) if mask[i]]
        s = [sign[i] for i in idx]
        t: dict[str, Any] = {"ledger_rows": len(idx), "events": sum(s)}
        for c in _INTS:
            t[c] = sum(sign[i] * values[c][i] for i in idx)
        t["total_tokens"] = sum(t[c] for c in TOKEN_COLUMNS)
        for c in _FLOATS:
            t[c] = _fsum_signed(s, [values[c][i] for i in idx])
        return t

    month_t = totals([not a for a in adj])
    adj_t = totals(adj)
    all_t = totals([True] * n)
    retired = retired_kg(all_t["co2_kg_high"])
    figures = {
        "org_id": period.org_id,
        "month": period.month,
        "period_start": period.period_start.isoformat(),
        "period_end": period.period_end.isoformat(),
        "cutoff": period.cutoff.isoformat() if period.cutoff else None,
        "adjustment_from": period.adjustment_from.isoformat() if period.adjustment_from else None,
        "month_totals": month_t,
        "adjustment_totals": adj_t,
        "totals": all_t,
        "co2_kg": all_t["co2_kg"],
        "co2_kg_low": all_t["co2_kg_low"],
        "co2_kg_high": all_t["co2_kg_high"],
        "co2_retired_kg": retired,
        "credits_tonnes": tonnes_needed(retired),
        "factors_versions": sorted(set(cols["factors_version"])),
        **_v2(all_t),
        "estimation": _estimation(cols, n),
    }

    groups: dict[tuple, list[int]] = defaultdict(list)
    for i in range(n):
        k = (
            cols["bucket_start"][i].date().isoformat(),
            cols["project_id"][i],
            cols["provider"][i],
            cols["model"][i],
            cols["model_tier"][i],
            cols["factors_version"][i],
            bool(adj[i]),
            tuple(cols[f][i] for f in _FACTORS),
            cols["energy_source"][i],
        )
        groups[k].append(i)
    rows = []
    for k in sorted(groups, key=lambda k: (k[6], k[0], k[1], k[2], k[3], k[4], k[5], _sortable(k[7]), k[8])):
        idx = groups[k]
        s = [sign[i] for i in idx]
        row: dict[str, Any] = {
            "day": k[0],
            "project_id": k[1],
            "provider": k[2],
            "model": k[3],
            "model_tier": k[4],
            "factors_version": k[5],
            "adjustment": k[6],
            "energy_source": k[8],
            "factors": dict(zip(_FACTORS, k[7], strict=True)),
            "events": sum(s),
            "tokens": {c: sum(sign[i] * values[c][i] for i in idx) for c in _INTS},
            "results": {c: _fsum_signed(s, [values[c][i] for i in idx]) for c in _FLOATS},
        }
        row["results"]["energy_kwh"] = joules_to_kwh(row["results"]["energy_j"])
        rows.append(row)
    breakdown = {
        "org_id": period.org_id,
        "month": period.month,
        "cutoff": figures["cutoff"],
        "formula": "IT J = uncached×j_per_prefill + cached×j_per_cached + cache_creation×j_per_cache_creation"
        " + output×j_per_decode; energy_j = IT J × pue; co2_kg = energy_j / 3.6e6 × grid_intensity_kg_per_kwh"
        " (location-based). Methodology v2, per event with the factors recorded on it (docs/methodology.md):"
        " co2_kg_market = energy_j / 3.6e6 × grid_market_intensity_kg_per_kwh; co2_kg_embodied = IT J ×"
        " embodied_kg_per_it_j; water_l = IT kWh × (wue_onsite_l_per_kwh + pue × water_offsite_l_per_kwh);"
        " cost_usd = (uncached × price_usd_per_1m_input + cached × price_usd_per_1m_cached + cache_creation ×"
        " price_usd_per_1m_cache_write + output × price_usd_per_1m_output) / 1e6; energy_source = measured"
        " rows use the metered energy instead of the token estimate. A v2 sum covers only the events that"
        " carry the figure (coverage: events_market, events_embodied, events_water, events_cost)",
        "rows": rows,
    }
    return figures, breakdown


def _sortable(values: tuple) -> tuple:
    """A factor tuple that sorts although some factors may be None (rows enriched before v2)."""
    return tuple((v is not None, v if v is not None else 0) for v in values)


def _v2(t: dict[str, Any]) -> dict[str, Any]:
    """The period's v2 figures from its totals: None where no event carries the figure (see the module doc),
    the coverage counts, and the measured and estimated parts (estimated = total − measured)."""
    shown = present(t)
    parts = {"energy_j": "energy_j_measured", "co2_kg": "co2_kg_measured"}
    parts.update(co2_kg_low="co2_kg_measured_low", co2_kg_high="co2_kg_measured_high")
    return {
        **{f: shown[f] for f in _V2_FIGURES},
        "coverage": {c: t[c] for c in ("events_market", "events_embodied", "events_water", "events_cost")},
        "measured": {"events": t["events_measured"], **{k: t[m] for k, m in parts.items()}},
        "estimated": {
            "events": t["events"] - t["events_measured"],
            **{k: t[k] - t[m] for k, m in parts.items()},
        },
    }


def _estimation(cols: dict[str, list], n: int) -> dict[str, Any]:
    """Live events of the close that are estimates (is_estimated), and each distinct reason with its live
    event count (signed: a cancelled revision counts 0)."""
    sign, flagged, why = cols["sign"], cols["is_estimated"], cols["estimation_reasons"]
    reasons: dict[str, int] = defaultdict(int)
    for i in range(n):
        for r in why[i] or ():
            reasons[r] += sign[i]
    return {
        "estimated_events": sum(sign[i] for i in range(n) if flagged[i]),
        "reasons": {r: c for r, c in sorted(reasons.items()) if c},
    }


def cross_check(figures: dict[str, Any], sql: dict[str, dict[str, Any]]) -> None:
    """The Python figures must equal ClickHouse's own sums (floats within rounding)."""
    for part, name in (("month", "month_totals"), ("adjustment", "adjustment_totals")):
        mine, theirs = figures[name], sql[part]
        for c, v in theirs.items():
            if c not in mine:
                continue
            if isinstance(mine[c], float) or isinstance(v, float):
                if not math.isclose(mine[c], float(v), rel_tol=SQL_REL_TOL, abs_tol=1e-12):
                    raise RuntimeError(f"{name}.{c}: {mine[c]!r} != warehouse {v!r}")
            elif int(mine[c]) != int(v):
                raise RuntimeError(f"{name}.{c}: {mine[c]!r} != warehouse {v!r}")
