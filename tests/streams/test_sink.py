"""The sink handler against a real (chdb) warehouse: good rows stored, misfits to the DLQ, re-delivery
changes nothing."""

from __future__ import annotations

import asyncio

import orjson

from core.contracts import DeadLetter
from core.kafka import OutRecord
from core.methodology import load_factor_set
from core.settings import load_settings
from pipelines.simulate import generate
from streams.processing import Enricher, InRecord
from streams.worker import Pipeline
from warehouse import queries
from warehouse.aio import AsyncWarehouse


def _pipeline(client: object) -> tuple[Pipeline, list[tuple[str, list[OutRecord]]]]:
    p = Pipeline(load_settings({}), with_enrich=False)
    p.warehouse = AsyncWarehouse(client)
    published: list[tuple[str, list[OutRecord]]] = []

    async def publish(topic: str, records: list[OutRecord]) -> None:
        published.append((topic, list(records)))

    p._publish = publish  # type: ignore[method-assign]
    return p, published


def test_sink_stores_good_rows_and_dead_letters_misfits(warehouse: tuple[object, str]) -> None:
    client, _ = warehouse
    fs = load_factor_set()
    traffic = generate(50, duplicate_rate=0, revision_rate=0, invalid_rate=0, seed=9)
    enriched = (
        Enricher(lambda: fs)
        .process([InRecord(m.key, m.value, "raw", 0, i) for i, m in enumerate(traffic.messages)])
        .out
    )
    misfit = orjson.loads(enriched[0].value)
    misfit.update(event_id="misfit", output_tokens=-3)  # a valid dict, but no UInt64 takes -3
    missing = {k: v for k, v in orjson.loads(enriched[1].value).items() if k != "co2_kg"} | {
        "event_id": "missing"
    }
    records = [InRecord(o.key, o.value, "enriched", 0, i) for i, o in enumerate(enriched)]
    records += [
        InRecord(b"misfit", orjson.dumps(misfit), "enriched", 0, 98),
        InRecord(b"missing", orjson.dumps(missing), "enriched", 0, 99),
    ]

    p, published = _pipeline(client)
    try:
        asyncio.run(p.handle_enriched(records))
        assert queries.live_event_count(client) == 50
        dlq = [DeadLetter.model_validate_json(r.value) for topic, rs in published for r in rs]
        assert sorted(d.original_key for d in dlq) == ["misfit", "missing"]
        assert all(d.stage == "sink" for d in dlq)

        asyncio.run(p.handle_enriched(records[:50]))  # re-delivery after a crash: no change
        assert queries.live_event_count(client) == 50
    finally:
        p.warehouse.close()
