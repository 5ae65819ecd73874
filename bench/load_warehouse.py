"""Bulk-load synthetic usage events straight into a chdb (or ClickHouse) warehouse, for benchmarks.

    .venv/bin/python bench/load_warehouse.py --dsn chdb:///tmp/bench-wh --events 10000000

Events are generated column by column (numpy + pyarrow) and inserted into the ledger `usage_events` one day
at a time, as `sign = +1` rows only: every generated event is distinct, so no cancel row is ever needed and
the write_enriched live-lookup can be skipped (fine for a bench, not for real traffic). The materialized views
fill `usage_hourly` / `usage_daily` as usual. Energy and CO2e are computed with the real methodology
(`core.methodology.compute_footprint` is linear in the token counts: one footprint per model and phase gives
exact per-token coefficients).

Data shape (defaults): `--orgs 4` orgs `bench-org-0 …`, the first one holding `--main-share` (70 %) of the
events over `--projects` (1000) projects; the others 100 projects each. 12 models (the simulator's list),
`--days` (90) days ending today (UTC). Per day × model × project of the main org there are a few events, so
a 90-day export of the main org is about a million daily-rollup rows.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.contracts import MODALITY_FIELDS, UNIT_FIELDS  # noqa: E402
from core.methodology import compute_footprint, load_factor_set  # noqa: E402
from pipelines.simulate import MODELS  # noqa: E402
from warehouse.measures import LEDGER_SCHEMA  # noqa: E402

MS_PER_DAY = 86_400_000
MS_PER_HOUR = 3_600_000


@dataclass(frozen=True)
class Shape:
    events: int = 10_000_000
    days: int = 90
    orgs: int = 4
    projects: int = 1000  # of the main org
    other_projects: int = 100  # of each other org
    main_share: float = 0.7
    seed: int = 1
    end: date | None = None  # last day (default: today, UTC)

    def org_id(self, i: int) -> str:
        return f"bench-org-{i}"

    def project_id(self, org: int, p: int) -> str:
        return f"bench-org-{org}-p{p:04d}"

    def n_projects(self, org: int) -> int:
        return self.projects if org == 0 else self.other_projects


@dataclass(frozen=True)
class _ModelCoef:
    provider: str
    model: str
    region: str | None
    tier: str
    typical_in: int
    typical_out: int
    cache: bool
    factors: tuple[float, ...]  # j_per_prefill, decode, cached, cache_creation, pue, grid
    # per phase (uncached, cached, creation, output): energy, energy_low, energy_high, co2, co2_low, co2_high
    per_token: np.ndarray  # shape (4, 6)
    is_estimated: bool


def _coefficients() -> list[_ModelCoef]:
    fs = load_factor_set()
    out = []
    for provider, model, region, _w, tin, tout, cache in MODELS:
        rows = []
        for phase in range(4):
            counts = [0, 0, 0, 0]
            counts[phase] = 1
            fp = compute_footprint(
                fs,
                provider=provider,
                model=model,
                region=region,
                input_tokens_uncached=counts[0],
                input_tokens_cached=counts[1],
                input_tokens_cache_creation=counts[2],
                output_tokens=counts[3],
            )
            rows.append(
                [fp.energy_j, fp.energy_j_low, fp.energy_j_high, fp.co2_kg, fp.co2_kg_low, fp.co2_kg_high]
                + [fp.energy_cached_savings_j, fp.co2_cached_savings_kg]
            )
        out.append(
            _ModelCoef(
                provider,
                model,
                region,
                fp.model_tier,
                tin,
                tout,
                cache,
                (
                    fp.j_per_prefill_token,
                    fp.j_per_decode_token,
                    fp.j_per_cached_token,
                    fp.j_per_cache_creation_token,
                    fp.pue,
                    fp.grid_intensity_kg_per_kwh,
                ),
                np.array(rows),
                fp.is_estimated,
            )
        )
    return out


def _dict_col(indices: np.ndarray, values: list[str | None]) -> pa.Array:
    return pa.DictionaryArray.from_arrays(
        pa.array(indices, type=pa.int32()), pa.array(values, pa.string())
    ).cast(pa.string())


def _day_table(shape: Shape, coefs: list[_ModelCoef], day: date, n: int, first_id: int, rng) -> pa.Table:
    n_models = len(coefs)
    weights = np.array([m[3] for m in MODELS])
    model = rng.choice(n_models, size=n, p=weights / weights.sum())
    org_p = np.array(
        [shape.main_share] + [(1 - shape.main_share) / max(1, shape.orgs - 1)] * (shape.orgs - 1)
    )
    org = rng.choice(shape.orgs, size=n, p=org_p / org_p.sum())
    n_proj = np.where(org == 0, shape.projects, shape.other_projects)
    proj = (rng.random(n) * n_proj).astype(np.int64)
    # project dictionary: org-major
    offsets = np.cumsum([0] + [shape.n_projects(o) for o in range(shape.orgs)])
    proj_idx = offsets[org] + proj
    proj_names = [shape.project_id(o, p) for o in range(shape.orgs) for p in range(shape.n_projects(o))]

    day_ms = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
    hour = rng.integers(0, 24, size=n)
    bucket_start = day_ms + hour * MS_PER_HOUR
    event_ts = bucket_start + rng.integers(0, MS_PER_HOUR, size=n)

    typ_in = np.array([c.typical_in for c in coefs])[model]
    typ_out = np.array([c.typical_out for c in coefs])[model]
    total_in = np.maximum(1, (rng.lognormal(0, 0.8, n) * typ_in)).astype(np.int64)
    output = (rng.lognormal(0, 0.8, n) * typ_out).astype(np.int64)
    can_cache = np.array([c.cache for c in coefs])[model] & (rng.random(n) < 0.5)
    cached = np.where(can_cache, (total_in * rng.uniform(0.1, 0.6, n)).astype(np.int64), 0)
    is_anthropic = np.array([c.provider == "anthropic" for c in coefs])[model]
    creation = np.where(
        (cached > 0) & is_anthropic, (total_in * rng.uniform(0.02, 0.1, n)).astype(np.int64), 0
    )
    uncached = total_in - cached - creation
    tokens = np.stack([uncached, cached, creation, output], axis=1).astype(np.float64)  # (n, 4)
    per_token = np.stack([c.per_token for c in coefs])  # (models, 4, 6)
    figures = np.einsum("np,npf->nf", tokens, per_token[model])  # (n, 8)
    factors = np.array([c.factors for c in coefs])[model]  # (n, 6)

    ids = pa.array(np.arange(first_id, first_id + n)).cast(pa.string())
    import pyarrow.compute as pc

    event_id = pc.binary_join_element_wise(pa.scalar("bench-ev-"), ids, "")
    workload = pc.binary_join_element_wise(_dict_col(proj_idx, proj_names), pa.scalar("gw"), "-")
    empty_offsets = pa.array(np.zeros(n + 1, dtype=np.int32))
    cols: dict[str, pa.Array] = {
        "schema_version": pa.array(np.ones(n, dtype=np.uint16)),
        "event_id": event_id,
        "revision": pa.array(np.zeros(n, dtype=np.uint64)),
        "source": _dict_col(np.zeros(n, dtype=np.int32), ["simulated"]),
        "org_id": _dict_col(org, [shape.org_id(o) for o in range(shape.orgs)]),
        "project_id": _dict_col(proj_idx, proj_names),
        "workload_id": workload,
        "connection_id": pa.nulls(n, pa.string()),
        "provider": _dict_col(model, [c.provider for c in coefs]),
        "model": _dict_col(model, [c.model for c in coefs]),
        "region": _dict_col(model, [c.region for c in coefs]),
        "routing_tier": pa.nulls(n, pa.string()),
        "bucket_start": pa.array(bucket_start, type=pa.timestamp("ms", tz="UTC")),
        "bucket_end": pa.array(bucket_start + MS_PER_HOUR, type=pa.timestamp("ms", tz="UTC")),
        "event_timestamp": pa.array(event_ts, type=pa.timestamp("ms", tz="UTC")),
        "input_tokens_uncached": pa.array(uncached.astype(np.uint64)),
        "input_tokens_cached": pa.array(cached.astype(np.uint64)),
        "input_tokens_cache_creation": pa.array(creation.astype(np.uint64)),
        "output_tokens": pa.array(output.astype(np.uint64)),
        "request_count": pa.array(np.ones(n, dtype=np.uint64)),
        **{f: pa.array(np.zeros(n, dtype=np.uint64)) for f in MODALITY_FIELDS},  # issue 21: none here
        **{
            f: pa.array(np.zeros(n, dtype=np.float64 if f == "audio_seconds" else np.uint64))
            for f in UNIT_FIELDS
        },
        "labels": pa.MapArray.from_arrays(
            empty_offsets, pa.array([], pa.string()), pa.array([], pa.string())
        ),
        "model_tier": _dict_col(model, [c.tier for c in coefs]),
        "factors_version": _dict_col(np.zeros(n, dtype=np.int32), ["v1.0"]),
        "is_estimated": pa.array(np.array([c.is_estimated for c in coefs])[model]),
        "estimation_reasons": pa.ListArray.from_arrays(empty_offsets, pa.array([], pa.string())),
        "j_per_prefill_token": pa.array(factors[:, 0]),
        "j_per_decode_token": pa.array(factors[:, 1]),
        "j_per_cached_token": pa.array(factors[:, 2]),
        "j_per_cache_creation_token": pa.array(factors[:, 3]),
        "pue": pa.array(factors[:, 4]),
        "grid_intensity_kg_per_kwh": pa.array(factors[:, 5]),
        "energy_j": pa.array(figures[:, 0]),
        "energy_j_low": pa.array(figures[:, 1]),
        "energy_j_high": pa.array(figures[:, 2]),
        "co2_kg": pa.array(figures[:, 3]),
        "co2_kg_low": pa.array(figures[:, 4]),
        "co2_kg_high": pa.array(figures[:, 5]),
        "energy_cached_savings_j": pa.array(figures[:, 6]),
        "co2_cached_savings_kg": pa.array(figures[:, 7]),
        **_v2_columns(n, tokens, figures, factors),
        "enriched_at": pa.array(event_ts + 1000, type=pa.timestamp("ms", tz="UTC")),
        "sign": pa.array(np.ones(n, dtype=np.int8)),
    }
    # sorted by the ledger key, so each insert is one tidy part per partition
    table = pa.table([cols[f.name] for f in LEDGER_SCHEMA], schema=LEDGER_SCHEMA)
    return table.sort_by([("org_id", "ascending"), ("bucket_start", "ascending"), ("event_id", "ascending")])


# Methodology v2 figures of the generated events, from fixed illustrative factors (market-based grid kg/kWh,
# embodied kg per IT joule, on-site WUE and off-site water L/kWh, USD per 1M uncached / cached / cache-write /
# output tokens): the shape of the data matters to the benchmarks, not the values.
_V2_FACTORS = {
    "grid_market_intensity_kg_per_kwh": 0.25,
    "embodied_kg_per_it_j": 2e-8,
    "wue_onsite_l_per_kwh": 0.3,
    "water_offsite_l_per_kwh": 3.1,
}
_V2_PRICES = (2.5, 1.25, 3.125, 10.0)


def _v2_columns(n: int, tokens: np.ndarray, figures: np.ndarray, factors: np.ndarray) -> dict[str, pa.Array]:
    """The v2 ledger columns (estimated energy, no measurement) for `n` generated events."""
    f = _V2_FACTORS
    kwh = figures[:, 0] / 3.6e6
    it_j = figures[:, 0] / factors[:, 4]
    point = {
        "co2_kg_market": kwh * f["grid_market_intensity_kg_per_kwh"],
        "co2_kg_embodied": it_j * f["embodied_kg_per_it_j"],
        "water_l": it_j / 3.6e6 * f["wue_onsite_l_per_kwh"] + kwh * f["water_offsite_l_per_kwh"],
    }
    low = figures[:, 1] / figures[:, 0].clip(min=1e-300)  # the energy band's relative bounds
    high = figures[:, 2] / figures[:, 0].clip(min=1e-300)
    out: dict[str, pa.Array] = {
        "measured_energy_j": pa.nulls(n, pa.float64()),
        "measured_by": pa.nulls(n, pa.string()),
        "measured_boundary": pa.nulls(n, pa.string()),
        "measured_uncertainty_pct": pa.nulls(n, pa.float64()),
        "energy_source": _dict_col(np.zeros(n, dtype=np.int32), ["estimated"]),
        "cost_usd": pa.array(tokens @ np.array(_V2_PRICES) / 1e6),
        "price_source": _dict_col(np.zeros(n, dtype=np.int32), ["factor set"]),
    }
    for name, values in point.items():
        out[name] = pa.array(values)
        out[f"{name}_low"] = pa.array(values * low)
        out[f"{name}_high"] = pa.array(values * high)
    for name, value in f.items():
        out[name] = pa.array(np.full(n, value))
    for name, value in zip(("input", "cached", "cache_write", "output"), _V2_PRICES, strict=True):
        out[f"price_usd_per_1m_{name}"] = pa.array(np.full(n, value))
    return out


def load(client, shape: Shape, *, log=print) -> dict:
    """Insert `shape.events` events (ledger +1 rows) day by day; returns counts and timings."""
    coefs = _coefficients()
    rng = np.random.default_rng(shape.seed)
    end = shape.end or datetime.now(UTC).date()
    days = [end - timedelta(days=i) for i in range(shape.days - 1, -1, -1)]
    per_day = np.full(len(days), shape.events // len(days))
    per_day[: shape.events - per_day.sum()] += 1
    t0 = time.perf_counter()
    gen_s = 0.0
    next_id = 0
    for i, (day, n) in enumerate(zip(days, per_day, strict=True)):
        g = time.perf_counter()
        table = _day_table(shape, coefs, day, int(n), next_id, rng)
        gen_s += time.perf_counter() - g
        client.insert_arrow("usage_events", table, settings={"parallel_view_processing": 1})
        next_id += int(n)
        if log and (i % 10 == 0 or i == len(days) - 1):
            el = time.perf_counter() - t0
            log(f"  {day}: {next_id:,} events loaded ({next_id / el:,.0f} ev/s, generation {gen_s:.1f}s)")
    elapsed = time.perf_counter() - t0
    return {
        "events": next_id,
        "seconds": elapsed,
        "events_per_s": next_id / elapsed,
        "first_day": days[0],
        "last_day": end,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", required=True, help="chdb:///abs/path or http(s)://… ClickHouse")
    ap.add_argument("--database", default="bench")
    ap.add_argument("--events", type=int, default=Shape.events)
    ap.add_argument("--days", type=int, default=Shape.days)
    ap.add_argument("--orgs", type=int, default=Shape.orgs)
    ap.add_argument("--projects", type=int, default=Shape.projects)
    ap.add_argument("--seed", type=int, default=Shape.seed)
    ap.add_argument("--optimize", action="store_true", help="OPTIMIZE … FINAL the rollups afterwards")
    args = ap.parse_args()

    from core.settings import load_settings
    from warehouse.client import get_client
    from warehouse.migrate import migrate

    client = get_client(load_settings().replace(clickhouse=args.dsn), database=args.database)
    migrate(client, args.database)
    shape = Shape(events=args.events, days=args.days, orgs=args.orgs, projects=args.projects, seed=args.seed)
    print(f"loading {shape.events:,} events into {args.dsn} database {args.database} …")
    res = load(client, shape)
    print(f"loaded {res['events']:,} events in {res['seconds']:.1f}s ({res['events_per_s']:,.0f} ev/s)")
    if args.optimize:
        for table in ("usage_daily", "usage_hourly"):
            t = time.perf_counter()
            client.command(f"OPTIMIZE TABLE {table} FINAL")
            print(f"OPTIMIZE {table} FINAL: {time.perf_counter() - t:.1f}s")
    for table in ("usage_events", "usage_hourly", "usage_daily"):
        print(f"  {table}: {client.command(f'SELECT count() FROM {table}'):,} rows")
    # disk per event (docs/deployment.md's sizing): compressed bytes of the active parts of every table
    rows = client.query(
        "SELECT table, sum(bytes_on_disk), sum(data_uncompressed_bytes) FROM system.parts "
        "WHERE database = {d:String} AND active GROUP BY table ORDER BY table",
        parameters={"d": args.database},
    ).result_rows
    total = sum(int(r[1]) for r in rows)
    for table, disk, raw in rows:
        print(f"  {table}: {int(disk) / 2**20:,.1f} MiB on disk ({int(raw) / 2**20:,.1f} MiB uncompressed)")
    print(
        f"disk: {total / 2**20:,.1f} MiB in all, {total / res['events']:.1f} bytes/event, "
        f"{total * 10_000_000 / res['events'] / 2**30:.2f} GiB per 10M events"
    )


if __name__ == "__main__":
    main()
