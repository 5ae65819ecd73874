"""Typed read queries over the warehouse: totals (all orgs or one), per group, straight from the ledger.

Every figure is an aggregate with sum() … GROUP BY over the signed ledger or its rollups: exact whether or not
ClickHouse has merged anything. Date ranges are half-open, `start <= day < end` (UTC days); None = unbounded.
Queries use the client's default database (see `warehouse.client.get_client`).
"""

from __future__ import annotations

import math
from datetime import date
from typing import Any, Literal

from clickhouse_connect.driver import Client
from pydantic import BaseModel, create_model

from warehouse import measures


class _TotalsBase(BaseModel):
    def approx_equal(self, other: Totals, rel_tol: float = 1e-9, abs_tol: float = 1e-12) -> bool:
        """The figures (not group keys) match: counts exactly, float sums within `rel_tol` (a float sum
        depends on summation order, so rollup and ledger sums may differ in the last bits)."""
        for name in Totals.model_fields:
            value, theirs = getattr(self, name), getattr(other, name)
            if isinstance(value, float):
                if not math.isclose(value, theirs, rel_tol=rel_tol, abs_tol=abs_tol):
                    return False
            elif value != theirs:
                return False
        return True


_TOTAL_COLS = measures.columns("totals")


def _totals_fields() -> dict[str, Any]:
    """The `totals` measures, with `total_tokens` (the four token kinds) after the last token column."""
    fields: dict[str, Any] = {}
    for name in _TOTAL_COLS:
        fields[name] = (int, 0) if measures.BY_NAME[name].is_int else (float, 0.0)
        if name == measures.TOKEN_COLUMNS[-1]:
            fields["total_tokens"] = (int, 0)
    return fields


# The sums of the `totals` measures (warehouse.measures); the cached savings are `cached_vs_uncached`'s.
Totals = create_model("Totals", __base__=_TotalsBase, __module__=__name__, **_totals_fields())


class TotalsRow(Totals):
    """Totals of one group; the keys not part of the grouping are None."""

    org_id: str | None = None
    project_id: str | None = None
    provider: str | None = None
    model: str | None = None
    day: date | None = None
    region: str | None = None  # '' = no region reported (the provider default)


# Uncached / cached / cache-creation input tokens, then the `cache` measures: what the cached tokens saved
# compared with the prefill price (facility J, kg CO2e).
CacheSplit = create_model(
    "CacheSplit",
    __module__=__name__,
    uncached_tokens=(int, 0),
    cached_tokens=(int, 0),
    cache_creation_tokens=(int, 0),
    **{c: (float, 0.0) for c in measures.columns("cache")},
)


Group = Literal["org", "project", "model", "day", "region"]
_GROUP_KEYS: dict[str, tuple[str, ...]] = {
    "org": ("org_id",),
    "project": ("org_id", "project_id"),
    "model": ("provider", "model"),
    "day": ("day",),
    "region": ("provider", "region"),
}
_ROLLUP_SUMS = ", ".join(f"sum({c}) AS {c}" for c in _TOTAL_COLS)
_LEDGER_SUMS = ", ".join(f"{measures.LEDGER_SUMS[c]} AS {c}" for c in _TOTAL_COLS)


def _where(
    *,
    day_expr: str,
    org_id: str | None,
    project_id: str | None,
    start: date | None,
    end: date | None,
    prefix: str = "",
) -> tuple[str, dict[str, Any]]:
    parts: list[str] = []
    params: dict[str, Any] = {}
    if org_id is not None:
        parts.append(f"{prefix}org_id = {{org_id:String}}")
        params["org_id"] = org_id
    if project_id is not None:
        parts.append(f"{prefix}project_id = {{project_id:String}}")
        params["project_id"] = project_id
    if start is not None:
        parts.append(f"{day_expr} >= {{start:Date}}")
        params["start"] = start
    if end is not None:
        parts.append(f"{day_expr} < {{end:Date}}")
        params["end"] = end
    return (" WHERE " + " AND ".join(parts)) if parts else "", params


def _totals(row: dict[str, Any], cls: type[Totals] = Totals) -> Any:
    values = {k: (v if v is not None else 0) for k, v in row.items()}
    values["total_tokens"] = sum(values[c] for c in measures.TOKEN_COLUMNS)
    return cls(**values)


def totals(
    client: Client,
    *,
    org_id: str | None = None,
    project_id: str | None = None,
    start: date | None = None,
    end: date | None = None,
) -> Totals:
    """Totals from the daily rollup (org_id=None: all orgs — operator use only)."""
    where, params = _where(day_expr="day", org_id=org_id, project_id=project_id, start=start, end=end)
    result = client.query(f"SELECT {_ROLLUP_SUMS} FROM usage_daily{where}", parameters=params)
    return _totals(dict(zip(result.column_names, result.result_rows[0], strict=True)))


def totals_by(
    client: Client,
    group: Group,
    *,
    org_id: str | None = None,
    project_id: str | None = None,
    start: date | None = None,
    end: date | None = None,
) -> list[TotalsRow]:
    """Totals per group (org | project | model | day | region: provider × serving region), ordered by the group keys. Groups whose figures
    cancelled out completely (no live event) are left out."""
    keys = _GROUP_KEYS[group]
    where, params = _where(day_expr="day", org_id=org_id, project_id=project_id, start=start, end=end)
    key_list = ", ".join(keys)
    result = client.query(
        f"SELECT {key_list}, {_ROLLUP_SUMS} FROM usage_daily{where} GROUP BY {key_list} "
        f"HAVING events != 0 ORDER BY {key_list}",
        parameters=params,
    )
    return [_totals(row, TotalsRow) for row in result.named_results()]


def ledger_totals(
    client: Client,
    *,
    org_id: str | None = None,
    project_id: str | None = None,
    start: date | None = None,
    end: date | None = None,
) -> Totals:
    """The same totals computed straight from the signed ledger (sum of sign × value): the reference the
    rollups must equal."""
    where, params = _where(
        day_expr="toDate(e.bucket_start)",
        org_id=org_id,
        project_id=project_id,
        start=start,
        end=end,
        prefix="e.",
    )
    result = client.query(f"SELECT {_LEDGER_SUMS} FROM usage_events AS e{where}", parameters=params)
    return _totals(dict(zip(result.column_names, result.result_rows[0], strict=True)))


def cached_vs_uncached(
    client: Client,
    org_id: str,
    start: date | None,
    end: date | None,
    project_id: str | None = None,
) -> CacheSplit:
    """Uncached / cached / cache-creation input tokens, and what the cached tokens saved (energy, CO2e)
    compared with paying the prefill price, at each event's own factors."""
    where, params = _where(day_expr="day", org_id=org_id, project_id=project_id, start=start, end=end)
    result = client.query(
        "SELECT sum(input_tokens_uncached) AS uncached_tokens, sum(input_tokens_cached) AS cached_tokens, "
        "sum(input_tokens_cache_creation) AS cache_creation_tokens, "
        f"{', '.join(f'sum({c}) AS {c}' for c in measures.columns('cache'))} FROM usage_daily{where}",
        parameters=params,
    )
    return CacheSplit(**next(iter(result.named_results())))


def live_event_count(client: Client, org_id: str | None = None) -> int:
    """Number of live events (net sign summed over the ledger)."""
    where, params = _where(day_expr="", org_id=org_id, project_id=None, start=None, end=None)
    return int(
        client.query(f"SELECT sum(toInt64(sign)) FROM usage_events{where}", parameters=params).result_rows[0][
            0
        ]
    )
