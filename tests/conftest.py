"""Root fixtures: the warehouse (ClickHouse) for tests.

chdb hosts one path per process, so the test process gets one embedded warehouse path for the whole session
(exported as JOULESTREAM_CLICKHOUSE) and tests are isolated by ClickHouse *database*: `warehouse` yields an
empty, migrated `test_<hex>` database per test. Migrating costs ~0.5 s (client, ~40 DDL statements), so a
database whose schema a test left as it found it (same tables, same DDL, same migrations) goes back to a pool of
this process and is emptied (TRUNCATE of every table but schema_migrations) before the next test gets it; one
whose schema changed is dropped. Set JOULESTREAM_TEST_CLICKHOUSE to an
http(s):// dsn to run the same tests against a ClickHouse server. Sub-folder conftests add their own fixtures.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator

import pytest

pytest_plugins = ["tests.stack"]  # broker + worker-subprocess fixtures (kafka, stack, worker)


@pytest.fixture(scope="session", autouse=True)
def warehouse_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    dsn = os.environ.get("JOULESTREAM_TEST_CLICKHOUSE") or f"chdb://{tmp_path_factory.mktemp('warehouse')}"
    mp = pytest.MonkeyPatch()
    mp.setenv("JOULESTREAM_CLICKHOUSE", dsn)
    yield dsn
    mp.undo()
    import sys

    if "warehouse.client" in sys.modules:  # only if a test opened the warehouse
        sys.modules["warehouse.client"].close_clients()


_POOL: list[tuple[str, str]] = []  # (database, schema fingerprint) of this process


def _schema(client, database: str) -> str:
    """A fingerprint of the database's schema: its tables' DDL and the migrations recorded."""
    tables = client.query(
        "SELECT name, create_table_query FROM system.tables WHERE database = {db:String} ORDER BY name",
        parameters={"db": database},
    ).result_rows
    versions = client.query(f"SELECT groupArray(version) FROM `{database}`.schema_migrations").result_rows
    return hashlib.sha256(repr((tables, versions)).encode()).hexdigest()


def empty_database(client, database: str) -> None:
    """TRUNCATE every table of `database` but schema_migrations (the views stay)."""
    for (name,) in client.query(
        "SELECT name FROM system.tables WHERE database = {db:String} AND engine NOT IN ('View', "
        "'MaterializedView') AND name != 'schema_migrations'",
        parameters={"db": database},
    ).result_rows:
        client.command(f"TRUNCATE TABLE `{database}`.`{name}`")


@pytest.fixture
def warehouse(warehouse_dsn: str) -> Iterator[tuple[object, str]]:
    """(client, database): a clickhouse-connect client whose default database is an empty, migrated one."""
    from core.settings import load_settings
    from warehouse.client import get_client
    from warehouse.migrate import migrate

    settings = load_settings().replace(clickhouse=warehouse_dsn)
    if _POOL:
        database, schema = _POOL.pop()
        # the cached client, or a new one if a test closed every client (to open another chdb path)
        client = get_client(settings, database=database)
        empty_database(client, database)
    else:
        database = f"test_{uuid.uuid4().hex}"
        client = get_client(settings, database=database)
        migrate(client, database)
        schema = _schema(client, database)
    try:
        yield client, database
    finally:
        _release(client, database, schema)


def _release(client, database: str, schema: str) -> None:
    """Back to the pool when the test left the schema as it was; else dropped."""
    from warehouse.client import close_clients

    try:
        if _schema(client, database) == schema:
            _POOL.append((database, schema))
            return
    except Exception:
        pass
    try:
        client.command(f"DROP DATABASE IF EXISTS `{database}`")
    finally:
        close_clients(database)


def _make_enriched(
    event_id: str, revision: int = 0, *, v2: bool = False, measured: bool = False, **overrides: object
):
    """A valid EnrichedUsage with fake (but self-consistent) energy figures; any field can be overridden.
    `v2=True` adds methodology v2 figures (market-based and embodied CO2e, water, cost) and their factors;
    `measured=True` makes the energy a (facility-boundary) measurement."""
    from datetime import UTC, datetime, timedelta

    from core.contracts import EnrichedUsage

    bucket_start = overrides.pop("bucket_start", datetime(2025, 3, 1, 12, tzinfo=UTC))
    tokens = {
        "input_tokens_uncached": 100 + revision,
        "input_tokens_cached": 20,
        "input_tokens_cache_creation": 5,
        "output_tokens": 50 + 10 * revision,
    }
    tokens.update({k: overrides.pop(k) for k in list(overrides) if k in tokens})  # type: ignore[misc]
    factors = {
        "j_per_prefill_token": 0.5,
        "j_per_decode_token": 2.0,
        "j_per_cached_token": 0.05,
        "j_per_cache_creation_token": 0.6,
        "pue": 1.2,
        "grid_intensity_kg_per_kwh": 0.37,
    }
    factors.update({k: overrides.pop(k) for k in list(overrides) if k in factors})  # type: ignore[misc]
    it_j = (
        tokens["input_tokens_uncached"] * factors["j_per_prefill_token"]
        + tokens["input_tokens_cached"] * factors["j_per_cached_token"]
        + tokens["input_tokens_cache_creation"] * factors["j_per_cache_creation_token"]
        + tokens["output_tokens"] * factors["j_per_decode_token"]
    )
    energy = it_j * factors["pue"]
    co2 = energy / 3.6e6 * factors["grid_intensity_kg_per_kwh"]
    values: dict = {
        "event_id": event_id,
        "revision": revision,
        "source": "poller",
        "org_id": "org_a",
        "project_id": "proj_1",
        "workload_id": "wl_1",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "bucket_start": bucket_start,
        "bucket_end": bucket_start + timedelta(hours=1),
        "event_timestamp": bucket_start + timedelta(minutes=59),
        **tokens,
        "request_count": 3,
        "labels": {"team": "search"},
        "model_tier": "small",
        "factors_version": "v1.0",
        "is_estimated": False,
        **factors,
        "energy_j": energy,
        "energy_j_low": energy * 0.5,
        "energy_j_high": energy * 2.0,
        "co2_kg": co2,
        "co2_kg_low": co2 * 0.5,
        "co2_kg_high": co2 * 2.0,
        "enriched_at": datetime(2025, 3, 1, 13, tzinfo=UTC),
    }
    if v2:
        kwh, it_kwh = energy / 3.6e6, it_j / 3.6e6
        market, embodied_per_j, wue, offsite = 0.12, 1e-7, 0.3, 3.0
        prices = (0.15, 0.075, 0.1875, 0.6)  # USD per 1M uncached / cached / cache-write / output tokens
        water = it_kwh * wue + kwh * offsite
        values.update(
            co2_kg_market=kwh * market,
            co2_kg_market_low=kwh * market * 0.5,
            co2_kg_market_high=kwh * market * 2.0,
            co2_kg_embodied=it_j * embodied_per_j,
            co2_kg_embodied_low=it_j * embodied_per_j * 0.5,
            co2_kg_embodied_high=it_j * embodied_per_j * 2.0,
            water_l=water,
            water_l_low=water * 0.5,
            water_l_high=water * 2.0,
            cost_usd=(
                tokens["input_tokens_uncached"] * prices[0]
                + tokens["input_tokens_cached"] * prices[1]
                + tokens["input_tokens_cache_creation"] * prices[2]
                + tokens["output_tokens"] * prices[3]
            )
            / 1e6,
            grid_market_intensity_kg_per_kwh=market,
            embodied_kg_per_it_j=embodied_per_j,
            wue_onsite_l_per_kwh=wue,
            water_offsite_l_per_kwh=offsite,
            price_usd_per_1m_input=prices[0],
            price_usd_per_1m_cached=prices[1],
            price_usd_per_1m_cache_write=prices[2],
            price_usd_per_1m_output=prices[3],
            price_source="factor set v2.0",
        )
    if measured:
        values.update(
            energy_source="measured",
            is_estimated=False,
            measured_energy_j=energy,
            measured_by="dcgm",
            measured_boundary="facility",
            measured_uncertainty_pct=5.0,
            energy_j_low=energy * 0.95,
            energy_j_high=energy * 1.05,
        )
    values.update(overrides)
    return EnrichedUsage(**values)


@pytest.fixture
def make_enriched():
    """Factory of valid EnrichedUsage events for warehouse tests: make_enriched(event_id, revision, **fields)."""
    return _make_enriched
