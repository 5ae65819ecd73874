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

from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

from core.contracts import EnrichedUsage

Reader = Literal["totals", "cache", "dashboard", "models", "events", "export"]
Kind = Literal["count", "tokens", "energy", "co2", "savings"]


@dataclass(frozen=True)
class Measure:
    name: str  # the rollup column
    kind: Kind
    field: str | None  # the EnrichedUsage field (and ledger column) it sums; None: the signs (`events`)
    readers: frozenset[str]

    @property
    def is_int(self) -> bool:
        return self.kind in ("count", "tokens")

    @property
    def rollup_type(self) -> str:
        """ClickHouse type of the rollup column (signed: difference rows of the reconciler may be negative)."""
        return "Int64" if self.is_int else "Float64"

    @property
    def ledger_type(self) -> str | None:
        """ClickHouse type of the ledger column (None: no ledger column)."""
        if self.field is None:
            return None
        return "UInt64" if self.is_int else "Float64"

    @property
    def arrow_type(self) -> pa.DataType:
        """Arrow type of the ledger column."""
        return pa.uint64() if self.is_int else pa.float64()

    def ledger_sum(self, alias: str = "e") -> str:
        """The aggregate over the signed ledger (what the rollups' materialized views compute)."""
        if self.field is None:
            return f"sum(toInt64({alias}.sign))"
        return f"sum({alias}.sign * {alias}.{self.field})"


def _m(name: str, kind: Kind, *readers: Reader, field: str | None = "") -> Measure:
    return Measure(name, kind, name if field == "" else field, frozenset(readers))


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
)
BY_NAME: dict[str, Measure] = {m.name: m for m in MEASURES}
ROLLUP_MEASURES: tuple[str, ...] = tuple(m.name for m in MEASURES)
INT_MEASURES: tuple[str, ...] = tuple(m.name for m in MEASURES if m.is_int)
FLOAT_MEASURES: tuple[str, ...] = tuple(m.name for m in MEASURES if not m.is_int)
TOKEN_COLUMNS: tuple[str, ...] = tuple(m.name for m in MEASURES if m.kind == "tokens")
# sign × value aggregates over `usage_events AS e`, one per rollup column (the materialized views' sums)
LEDGER_SUMS: dict[str, str] = {m.name: m.ledger_sum() for m in MEASURES}


def columns(reader: Reader, *, exclude: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The measures `reader` shows, in spec order."""
    return tuple(m.name for m in MEASURES if reader in m.readers and m.name not in exclude)


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
