"""Helpers of the close tests: pipeline-made usage, an independent receipt verifier, the close environment."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

INVENTORY_CSV = """registry,serial_block,project,vintage,tonnes
Verra,VCS-981-2023-000001-000003,Kasigau Corridor REDD+,2023,3
Gold Standard,GS-4412-2024-000100-000149,Cookstoves Ghana,2024,50
Verra,VCS-1205-2024-000001,Rimba Raya,2024,20
"""


def pipeline_usage(client, org_ids: list[str], month_start: datetime, n: int, seed: int = 1) -> list:
    """Usage events → the stream enricher (streams.processing.Enricher, factor set v1.0) → the ledger writer
    (warehouse.ledger.write_enriched): the real pipeline path minus Kafka. Returns the EnrichedUsage rows."""
    from core.contracts import EnrichedUsage, UsageEvent
    from core.methodology import load_factor_set
    from streams.processing import Enricher
    from streams.processing import InRecord as StreamRecord
    from warehouse.ledger import write_enriched

    rng = random.Random(seed)
    models = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5-haiku-20241022")]
    records = []
    for i in range(n):
        org = org_ids[i % len(org_ids)]
        provider, model = models[rng.randrange(len(models))]
        start = month_start + timedelta(days=rng.randrange(28), hours=rng.randrange(24))
        ev = UsageEvent(
            event_id=str(uuid.UUID(int=rng.getrandbits(128))),
            source="gateway",
            org_id=org,
            project_id=f"proj-{rng.randrange(2)}",
            workload_id="wl-1",
            provider=provider,
            model=model,
            bucket_start=start,
            bucket_end=start + timedelta(seconds=2),
            event_timestamp=start + timedelta(seconds=2),
            input_tokens_uncached=rng.randrange(100, 50_000),
            input_tokens_cached=rng.randrange(0, 5_000),
            output_tokens=rng.randrange(10, 5_000),
        )
        records.append(
            StreamRecord(
                key=ev.event_id.encode(),
                value=ev.model_dump_json().encode(),
                topic="raw",
                partition=0,
                offset=i,
            )
        )
    res = Enricher(lambda: load_factor_set("v1.0")).process(records)
    assert not res.dlq
    enriched = [EnrichedUsage.model_validate_json(r.value) for r in res.out]
    write_enriched(client, enriched)
    return enriched


def verify_independently(payload: dict, payload_hash: str, signature_b64: str, public_key_b64: str) -> bool:
    """A verifier that does not use joulestream's code: canonical JSON by json.dumps (sorted keys, no spaces),
    SHA-256 by hashlib, Ed25519 by PyNaCl."""
    from nacl.exceptions import BadSignatureError
    from nacl.signing import VerifyKey

    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    if hashlib.sha256(canonical).hexdigest() != payload_hash:
        return False
    try:
        VerifyKey(base64.b64decode(public_key_b64)).verify(canonical, base64.b64decode(signature_b64))
    except BadSignatureError:
        return False
    return True


@dataclass
class CloseEnv:
    home: Path
    database: str  # ClickHouse database
    db_url: str
    engine: object
    client: object

    def resources(self) -> dict:
        from orchestration.resources import (
            ArtifactsResource,
            ControlPlaneResource,
            SigningResource,
            WarehouseResource,
        )

        return {
            "warehouse": WarehouseResource(database=self.database, home=str(self.home)),
            "controlplane": ControlPlaneResource(database_url=self.db_url),
            "artifacts": ArtifactsResource(url=str(self.home / "artifacts")),
            "signing": SigningResource(home=str(self.home)),
        }

    def run(self, month: str, **kw):
        from orchestration.definitions import run_close

        return run_close(month, **kw, **self.resources())

    def store(self):
        from core.artifacts import LocalStore

        return LocalStore(self.home / "artifacts")


@pytest.fixture
def close_env(tmp_path, warehouse, db_url, engine) -> CloseEnv:
    client, database = warehouse
    home = tmp_path / "home"
    home.mkdir()
    return CloseEnv(home=home, database=database, db_url=db_url, engine=engine, client=client)


def now_iso() -> str:
    return datetime.now(UTC).isoformat()
