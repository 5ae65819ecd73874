"""The warehouse's columns: the measures (one spec every reader derives its column list from) and the ledger.

A *measure* is an additive figure: a column of the ledger `usage_events` (one value per event, from the
`EnrichedUsage` field of the same name) and a column of the rollups `usage_hourly` / `usage_daily` (the sum of
sign × value). `events` is the one measure without a ledger column: the sum of the signs, i.e. the number of
live events.

Each measure names the readers that show it (`readers`): the ledger/rollup totals (`totals`, also the monthly
close's sums), the cache split (`cache`), the dashboard summary (`dashboard`), the per-model list (`models`),
the event list (`events`) and the export file (`export`). Their column lists are `columns(reader)`, in
`MEASURES` order.

Adding a measure: a field on `EnrichedUsage` (computed in `core.methodology`), a line in `MEASURES`, and a
migration adding the ledger column (after the contract field before it) and the rollup column, and
re-creating the rollups' materialized views with the new sum. `tests/warehouse/test_wh_measures.py` checks
the spec against the migrated tables.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa

from core.contracts import EnrichedUsage

Reader = Literal["totals", "cache", "dashboard", "models", "events", "export"]
Kind = Literal["count", "tokens", "part", "quantity", "energy", "co2", "savings", "water", "cost"]
# Conditions a derived measure sums under: SQL over the ledger row (`{a}` = its alias) and the same test in
# Python over the row's values (the monthly close sums the ledger rows in Python).
Condition = Literal["measured", "estimated"]
_CONDITIONS: dict[str, tuple[str, Callable[[Mapping[str, Sequence[Any]], int], bool]]] = {
    "measured": ("{a}.energy_source = 'measured'", lambda cols, i: cols["energy_source"][i] == "measured"),
    "estimated": ("{a}.is_estimated", lambda cols, i: bool(cols["is_estimated"][i])),
}


@dataclass(frozen=True)
class Measure:
    name: str  # the rollup column
    kind: Kind
    field: str | None  # the EnrichedUsage field (and ledger column) it sums; None: a derived measure
    readers: frozenset[str]
    # derived measures (field None): the ledger column summed (None: 1 per event, a count of events), only over
    # the rows where `when` holds (None: all rows); `has:<column>` = the column is not NULL
    value: str | None = None
    when: str | None = None
    nullable: bool = False  # the ledger column is Nullable (a v2 figure: NULL when its producer predates it)
    coverage: str | None = None  # the count measure of the events that carry this figure (nullable ones)
    per: str | None = None  # derived measures: sum value / this ledger column (when > 0, else the value)

    @property
    def is_int(self) -> bool:
        return self.kind in ("count", "tokens", "part")

    @property
    def rollup_type(self) -> str:
        """ClickHouse type of the rollup column (signed: difference rows of the reconciler may be negative)."""
        return "Int64" if self.is_int else "Float64"

    @property
    def ledger_type(self) -> str | None:
        """ClickHouse type of the ledger column (None: no ledger column)."""
        if self.field is None:
            return None
        base = "UInt64" if self.is_int else "Float64"
        return f"Nullable({base})" if self.nullable else base

    @property
    def arrow_type(self) -> pa.DataType:
        """Arrow type of the ledger column."""
        return pa.uint64() if self.is_int else pa.float64()

    def _condition_sql(self, alias: str) -> str | None:
        if self.when is None:
            return None
        if self.when.startswith("has:"):
            return f"{alias}.{self.when[4:]} IS NOT NULL"
        return _CONDITIONS[self.when][0].format(a=alias)

    def ledger_sum(self, alias: str = "e") -> str:
        """The aggregate over the signed ledger (what the rollups' materialized views compute). NULL values
        (figures an event does not carry) count as 0 in the sum; the `coverage` measure counts the events
        that carry one."""
        column = self.field or self.value
        if column is None:
            term = f"toInt64({alias}.sign)"
        elif self.per is not None:
            value, per = f"{alias}.{column}", f"{alias}.{self.per}"
            term = f"{alias}.sign * if({per} > 0, {value} / {per}, {value})"
        elif self.nullable or BY_FIELD_NULLABLE.get(column, False):
            term = f"{alias}.sign * ifNull({alias}.{column}, 0)"
        else:
            term = f"{alias}.sign * {alias}.{column}"
        cond = self._condition_sql(alias)
        return f"sum({term})" if cond is None else f"sumIf({term}, {cond})"

    def row_values(self, cols: Mapping[str, Sequence[Any]], n: int) -> list[Any]:
        """This measure's value per ledger row (before the sign), from the rows' columns: the Python twin of
        `ledger_sum` (NULL → 0, rows failing `when` → 0)."""
        column = self.field or self.value
        zero: Any = 0 if self.is_int else 0.0
        values: list[Any] = [1] * n if column is None else [zero if v is None else v for v in cols[column]]
        if self.per is not None:
            values = [v / d if d and d > 0 else v for v, d in zip(values, cols[self.per], strict=True)]
        if self.when is None:
            return values
        if self.when.startswith("has:"):
            present = cols[self.when[4:]]
            return [v if present[i] is not None else zero for i, v in enumerate(values)]
        test = _CONDITIONS[self.when][1]
        return [v if test(cols, i) else zero for i, v in enumerate(values)]


def _m(
    name: str,
    kind: Kind,
    *readers: Reader,
    field: str | None = "",
    value: str | None = None,
    when: str | None = None,
    coverage: str | None = None,
    per: str | None = None,
) -> Measure:
    own = name if field == "" else field
    return Measure(name, kind, own, frozenset(readers), value, when, coverage is not None, coverage, per)


_V2 = ("totals", "dashboard", "models", "export")  # readers of the v2 sums and their coverage counts

MEASURES: tuple[Measure, ...] = (
    _m("events", "count", "totals", "dashboard", "models", field=None),
    _m("request_count", "count", "totals", "events"),
    _m("input_tokens_uncached", "tokens", "totals", "dashboard", "models", "events", "export"),
    _m("input_tokens_cached", "tokens", "totals", "dashboard", "models", "events", "export"),
    _m("input_tokens_cache_creation", "tokens", "totals", "dashboard", "models", "events", "export"),
    _m("output_tokens", "tokens", "totals", "dashboard", "models", "events", "export"),
    _m("energy_j", "energy", "totals", "dashboard", "models", "events", "export"),
    _m("energy_j_low", "energy", "totals"),
    _m("energy_j_high", "energy", "totals"),
    _m("co2_kg", "co2", "totals", "dashboard", "models", "events", "export"),
    _m("co2_kg_low", "co2", "totals", "dashboard", "models", "events", "export"),
    _m("co2_kg_high", "co2", "totals", "dashboard", "models", "events", "export"),
    _m("energy_cached_savings_j", "savings", "cache"),
    _m("co2_cached_savings_kg", "savings", "cache", "dashboard"),
    # Methodology v2 (migration 0003). Each figure an event may lack (NULL in the ledger: enriched before v2)
    # sums as 0 and has a coverage count beside it — the live events that carry it — so a reader can tell
    # "no figure" (coverage 0) from a figure of 0 and show how much of the total a sum covers.
    _m("co2_kg_market", "co2", *_V2, "events", coverage="events_market"),
    _m("co2_kg_market_low", "co2", *_V2, "events", coverage="events_market"),
    _m("co2_kg_market_high", "co2", *_V2, "events", coverage="events_market"),
    _m("events_market", "count", *_V2, field=None, when="has:co2_kg_market"),
    _m("co2_kg_embodied", "co2", *_V2, "events", coverage="events_embodied"),
    _m("co2_kg_embodied_low", "co2", *_V2, "events", coverage="events_embodied"),
    _m("co2_kg_embodied_high", "co2", *_V2, "events", coverage="events_embodied"),
    _m("events_embodied", "count", *_V2, field=None, when="has:co2_kg_embodied"),
    _m("water_l", "water", *_V2, "events", coverage="events_water"),
    _m("water_l_low", "water", *_V2, "events", coverage="events_water"),
    _m("water_l_high", "water", *_V2, "events", coverage="events_water"),
    _m("events_water", "count", *_V2, field=None, when="has:water_l"),
    _m("cost_usd", "cost", *_V2, "events", coverage="events_cost"),
    _m("events_cost", "count", *_V2, field=None, when="has:cost_usd"),
    # The measured part (energy_source = 'measured'); the estimated part is the total minus it. Rows enriched
    # before v2 read energy_source 'estimated' (the column default), which they are.
    _m("events_measured", "count", *_V2, field=None, when="measured"),
    _m("energy_j_measured", "energy", *_V2, field=None, value="energy_j", when="measured"),
    _m("co2_kg_measured", "co2", *_V2, field=None, value="co2_kg", when="measured"),
    _m("co2_kg_measured_low", "co2", *_V2, field=None, value="co2_kg_low", when="measured"),
    _m("co2_kg_measured_high", "co2", *_V2, field=None, value="co2_kg_high", when="measured"),
    # Reporting (migration 0004): live events whose figures fell back to a default (is_estimated), and the IT
    # energy (energy_j / pue per event: what the servers drew before the data centre's overhead) — the
    # energy-weighted PUE of any group is energy_j / energy_it_j.
    # Read by warehouse.reporting only (no reader list: the close, exports and dashboard keep their columns).
    _m("events_estimated", "count", field=None, when="estimated"),
    _m("energy_it_j", "energy", field=None, value="energy_j", per="pue"),
    # Modalities and units (issue 21, migration 0005): the audio/image parts of the token figures ("part": never
    # in total_tokens, they are inside it) and usage counted in images, seconds, characters and web searches.
    _m("input_audio_tokens", "part", "totals"),
    _m("input_image_tokens", "part", "totals"),
    _m("input_cached_audio_tokens", "part", "totals"),
    _m("input_cached_image_tokens", "part", "totals"),
    _m("output_audio_tokens", "part", "totals"),
    _m("output_image_tokens", "part", "totals"),
    _m("images", "count", "totals"),
    _m("audio_seconds", "quantity", "totals"),
    _m("audio_characters", "count", "totals"),
    _m("web_search_calls", "count", "totals"),
)
BY_NAME: dict[str, Measure] = {m.name: m for m in MEASURES}
# The rollups' key columns, their bucket column (`hour` / `day`) after org_id; every other column is a measure.
ROLLUP_KEYS: tuple[str, ...] = (
    "org_id",
    "project_id",
    "workload_id",
    "provider",
    "model",
    "model_tier",
    "region",
    "routing_tier",
    "factors_version",
    "source",
)
# The org-level daily rollup: the same without project and workload — a few hundred rows per org and year, so
# org-wide series and KPIs never sum the per-project rows (warehouse.reporting picks it when it can).
ORG_ROLLUP_KEYS: tuple[str, ...] = tuple(k for k in ROLLUP_KEYS if k not in ("project_id", "workload_id"))


@dataclass(frozen=True)
class Rollup:
    table: str
    bucket: str  # its bucket column
    bucket_sql: str  # the bucket of a ledger row `e`
    keys: tuple[str, ...]  # org_id first; the bucket column follows it in the table


ROLLUPS: tuple[Rollup, ...] = (
    Rollup("usage_hourly", "hour", "toStartOfHour(e.bucket_start)", ROLLUP_KEYS),
    Rollup("usage_daily", "day", "toDate(e.bucket_start)", ROLLUP_KEYS),
    Rollup("usage_daily_org", "day", "toDate(e.bucket_start)", ORG_ROLLUP_KEYS),
)
NULLABLE_KEYS: frozenset[str] = frozenset(
    {"region", "routing_tier"}
)  # Nullable in the ledger, '' in the rollups


def rollup_key_sql(key: str, alias: str = "e") -> str:
    """The ledger expression of rollup key `key` (a Nullable ledger column reads '' when NULL)."""
    return f"ifNull({alias}.{key}, '')" if key in NULLABLE_KEYS else f"{alias}.{key}"


BY_FIELD_NULLABLE: dict[str, bool] = {m.field: m.nullable for m in MEASURES if m.field is not None}
ROLLUP_MEASURES: tuple[str, ...] = tuple(m.name for m in MEASURES)
INT_MEASURES: tuple[str, ...] = tuple(m.name for m in MEASURES if m.is_int)
FLOAT_MEASURES: tuple[str, ...] = tuple(m.name for m in MEASURES if not m.is_int)
TOKEN_COLUMNS: tuple[str, ...] = tuple(m.name for m in MEASURES if m.kind == "tokens")
# sign × value aggregates over `usage_events AS e`, one per rollup column (the materialized views' sums)
LEDGER_SUMS: dict[str, str] = {m.name: m.ledger_sum() for m in MEASURES}
# measured part → the total it is part of
MEASURED_PARTS: dict[str, str] = {m.name: m.value for m in MEASURES if m.when == "measured" and m.value}


def rollup_view_sql(rollup: Rollup) -> str:
    """The CREATE statement of `rollup`'s materialized view over the ledger, from this spec (`{db}` as in the
    migrations). A migration that adds measures re-creates the views with its output (0005 did);
    tests/warehouse/test_wh_measures.py checks that the last view each migration chain creates equals it."""
    select = [
        "    e.org_id AS org_id",
        f"    {rollup.bucket_sql} AS {rollup.bucket}",
        *(f"    {rollup_key_sql(k)} AS {k}" for k in rollup.keys[1:]),
        *(f"    {LEDGER_SUMS[c]} AS {c}" for c in ROLLUP_MEASURES),
    ]
    group = ", ".join(["org_id", rollup.bucket, *rollup.keys[1:]])
    return (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.{rollup.table}_mv TO {{db}}.{rollup.table} AS\nSELECT\n"
        + ",\n".join(select)
        + f"\nFROM {{db}}.usage_events AS e\nGROUP BY {group};"
    )


def columns(reader: Reader, *, exclude: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The measures `reader` shows, in spec order."""
    return tuple(m.name for m in MEASURES if reader in m.readers and m.name not in exclude)


def present(sums: Mapping[str, Any]) -> dict[str, Any]:
    """`sums` (measure → value, e.g. a rollup row) as shown to people: a v2 figure no event in the sum carries
    (its coverage count is 0) is None, never a measured-looking 0. Other keys pass through."""
    out = dict(sums)
    for name, value in sums.items():
        m = BY_NAME.get(name)
        if m is not None and m.coverage is not None and m.coverage in sums and not sums[m.coverage]:
            out[name] = None if value == 0 else value
    return out


# ------------------------------------------------------------------------------------------ the ledger

_STR = pa.string()
_TS = pa.timestamp("ms", tz="UTC")
# Arrow types of the ledger's columns that are not measures (the measures' come from MEASURES).
_DIMENSION_TYPES: dict[str, pa.DataType] = {
    "schema_version": pa.uint16(),
    "event_id": _STR,
    "revision": pa.uint64(),
    "source": _STR,
    "org_id": _STR,
    "project_id": _STR,
    "workload_id": _STR,
    "connection_id": _STR,
    "provider": _STR,
    "model": _STR,
    "region": _STR,
    "routing_tier": _STR,
    "bucket_start": _TS,
    "bucket_end": _TS,
    "event_timestamp": _TS,
    "measured_energy_j": pa.float64(),
    "measured_by": _STR,
    "measured_boundary": _STR,
    "measured_uncertainty_pct": pa.float64(),
    "labels": pa.map_(_STR, _STR),
    "model_tier": _STR,
    "factors_version": _STR,
    "is_estimated": pa.bool_(),
    "estimation_reasons": pa.list_(_STR),
    "j_per_prefill_token": pa.float64(),
    "j_per_decode_token": pa.float64(),
    "j_per_cached_token": pa.float64(),
    "j_per_cache_creation_token": pa.float64(),
    "pue": pa.float64(),
    "grid_intensity_kg_per_kwh": pa.float64(),
    "energy_source": _STR,
    "grid_market_intensity_kg_per_kwh": pa.float64(),
    "embodied_kg_per_it_j": pa.float64(),
    "wue_onsite_l_per_kwh": pa.float64(),
    "water_offsite_l_per_kwh": pa.float64(),
    "price_usd_per_1m_input": pa.float64(),
    "price_usd_per_1m_cached": pa.float64(),
    "price_usd_per_1m_cache_write": pa.float64(),
    "price_usd_per_1m_output": pa.float64(),
    "price_source": _STR,
    "enriched_at": _TS,
}
_LEDGER_MEASURES = {m.field: m.arrow_type for m in MEASURES if m.field is not None}


def _ledger_type(name: str) -> pa.DataType:
    found = _DIMENSION_TYPES.get(name) or _LEDGER_MEASURES.get(name)
    if found is None:
        raise RuntimeError(f"EnrichedUsage field {name!r} is neither a ledger dimension nor a measure")
    return found


# The ledger's columns in table order (the EnrichedUsage fields, then `sign`; `ingested_at`, which the server
# fills, is left out) and their Arrow types.
LEDGER_SCHEMA = pa.schema(
    [*((name, _ledger_type(name)) for name in EnrichedUsage.model_fields), ("sign", pa.int8())]
)
EVENT_FIELDS: tuple[str, ...] = tuple(f.name for f in LEDGER_SCHEMA if f.name != "sign")
EVENT_SCHEMA = pa.schema([f for f in LEDGER_SCHEMA if f.name != "sign"])
