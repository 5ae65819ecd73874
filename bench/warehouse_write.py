"""Throughput of warehouse.ledger.write_enriched on embedded chdb (prints, never asserts).

    .venv/bin/python bench/warehouse_write.py [--rows 50000] [--batches 3]

Cases: fresh events (the steady state), the same batch again (all duplicates: redelivery after a crash),
a revision of every event (cancel + insert per event: a provider correction), and JSON-decoded mappings
(what the sink has after orjson.loads, without building pydantic models).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta

from core.contracts import EnrichedUsage
from core.settings import load_settings
from warehouse.client import close_clients, get_client
from warehouse.ledger import write_enriched
from warehouse.migrate import migrate


def make_events(n: int, offset: int, revision: int = 0) -> list[EnrichedUsage]:
    base = datetime(2025, 3, 1, tzinfo=UTC)
    out = []
    for i in range(offset, offset + n):
        start = base + timedelta(milliseconds=731 * i)
        out.append(
            EnrichedUsage(
                event_id=f"0192f8a1-{i:012d}",
                revision=revision,
                source="gateway",
                org_id=f"org_{i % 7}",
                project_id=f"proj_{i % 23}",
                workload_id="chat",
                provider="openai",
                model=("gpt-4o", "gpt-4o-mini", "o3")[i % 3],
                routing_tier="L1",
                bucket_start=start,
                bucket_end=start + timedelta(milliseconds=800),
                event_timestamp=start + timedelta(milliseconds=800),
                input_tokens_uncached=500 + i % 1000 + revision,
                input_tokens_cached=i % 300,
                output_tokens=200 + i % 700,
                labels={"env": "bench"},
                model_tier="medium",
                factors_version="v1.0",
                is_estimated=False,
                j_per_prefill_token=0.3,
                j_per_decode_token=1.2,
                j_per_cached_token=0.03,
                j_per_cache_creation_token=0.35,
                pue=1.2,
                grid_intensity_kg_per_kwh=0.37,
                energy_j=1000.0,
                energy_j_low=500.0,
                energy_j_high=2000.0,
                co2_kg=1e-4,
                co2_kg_low=5e-5,
                co2_kg_high=2e-4,
                enriched_at=start + timedelta(seconds=1),
            )
        )
    return out


def timed(label: str, client, rows) -> None:
    """Wall time, and process CPU time (chdb runs in-process, so this includes the engine's threads; on a
    busy shared machine it is the steadier of the two)."""
    t, c = time.perf_counter(), time.process_time()
    res = write_enriched(client, rows)
    dt, dc = time.perf_counter() - t, time.process_time() - c
    print(
        f"{label:<32} {len(rows):>7} rows  {dt * 1000:7.0f} ms wall {len(rows) / dt:>9,.0f} rows/s"
        f"  {dc * 1000:7.0f} ms cpu  {res}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--batches", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings().replace(clickhouse=f"chdb://{tmp}/wh")
        client = get_client(settings, database="bench")
        migrate(client, "bench")
        n = args.rows
        for b in range(args.batches):
            events = make_events(n, b * n)
            timed(f"fresh events (batch {b + 1})", client, events)
        timed("same batch again (duplicates)", client, events)
        timed("revision of every event", client, make_events(n, (args.batches - 1) * n, revision=1))
        rows = [e.model_dump(mode="json") for e in make_events(n, args.batches * n)]
        timed("fresh JSON mappings (ISO times)", client, rows)
        total = client.query("SELECT sum(events), count() FROM usage_daily").result_rows[0]
        print(f"live events per rollup: {total[0]:,} (rollup rows before merges: {total[1]:,})")
        close_clients()


if __name__ == "__main__":
    main()
