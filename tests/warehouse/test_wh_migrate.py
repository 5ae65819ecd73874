from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from warehouse.migrate import MIGRATIONS_DIR, Migration, MigrationError, load_migrations, migrate


def _tables(client, database: str) -> set[str]:
    rows = client.query(
        "SELECT name FROM system.tables WHERE database = {d:String}", parameters={"d": database}
    )
    return {r[0] for r in rows.result_rows}


def test_fixture_database_is_migrated(warehouse):
    client, database = warehouse
    assert {
        "schema_migrations",
        "usage_events",
        "usage_hourly",
        "usage_daily",
        "usage_hourly_mv",
        "usage_daily_mv",
    } <= _tables(client, database)
    versions = client.query(
        "SELECT version, name, checksum FROM schema_migrations ORDER BY version"
    ).result_rows
    assert [(v, n) for v, n, _ in versions] == [(m.version, m.name) for m in load_migrations()]
    assert [c for _, _, c in versions] == [m.checksum for m in load_migrations()]


def test_migrate_is_idempotent(warehouse):
    client, database = warehouse
    assert migrate(client, database) == []
    assert migrate(client, database) == []
    assert client.query("SELECT count() FROM schema_migrations").result_rows[0][0] == len(load_migrations())


def test_new_migration_applies_in_order_and_once(warehouse, tmp_path: Path):
    client, database = warehouse
    for f in MIGRATIONS_DIR.glob("*.sql"):
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "9001_extra.sql").write_text(
        "-- two statements; the second depends on the first\n"
        "CREATE TABLE IF NOT EXISTS {db}.extra_a (x UInt8) ENGINE = MergeTree ORDER BY x;\n"
        "CREATE TABLE IF NOT EXISTS {db}.extra_b AS {db}.extra_a;\n"
    )
    (tmp_path / "9000_first.sql").write_text(
        "CREATE TABLE IF NOT EXISTS {db}.extra_0 (s String) ENGINE = MergeTree ORDER BY s;\n"
    )
    assert migrate(client, database, tmp_path) == ["9000_first", "9001_extra"]
    assert {"extra_0", "extra_a", "extra_b"} <= _tables(client, database)
    assert migrate(client, database, tmp_path) == []


def test_changed_checksum_of_applied_migration_is_an_error(warehouse, tmp_path: Path):
    client, database = warehouse
    for f in MIGRATIONS_DIR.glob("*.sql"):
        shutil.copy(f, tmp_path / f.name)
    first = sorted(tmp_path.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited after it was applied\n")
    with pytest.raises(MigrationError, match="must not change"):
        migrate(client, database, tmp_path)


def test_bad_file_name_is_rejected(tmp_path: Path):
    (tmp_path / "1_bad.sql").write_text("SELECT 1;\n")
    with pytest.raises(MigrationError, match="NNNN_name"):
        load_migrations(tmp_path)


def test_statement_splitting_and_placeholder():
    m = Migration(
        1,
        "x",
        Path("x.sql"),
        "-- a comment ending with a semicolon;\nCREATE TABLE {db}.a (x UInt8)\nENGINE = Memory;\n"
        "SELECT ';' -- not an end\n  ;  \n",
    )
    stmts = m.statements("my db")
    assert stmts == ["CREATE TABLE `my db`.a (x UInt8)\nENGINE = Memory", "SELECT ';' -- not an end"]
