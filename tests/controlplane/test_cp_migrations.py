"""Engines and Alembic migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from controlplane import current_revision, dispose_engine, get_engine, head_revision, upgrade
from controlplane.schema import metadata
from core.settings import load_settings

TABLES = {"organizations", "api_keys", "projects", "workloads", "carbon_factor_versions"}


def test_upgrade_creates_schema_and_is_idempotent(db_url):
    engine = get_engine(db_url)
    assert current_revision(engine) is None
    upgrade(engine)
    upgrade(engine)  # second run is a no-op
    assert current_revision(engine) == head_revision()
    names = set(inspect(engine).get_table_names())
    assert TABLES <= names
    assert "alembic_version" in names


def test_migrations_match_metadata(engine):
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diffs == []


def test_engine_cached_per_url(db_url):
    assert get_engine(db_url) is get_engine(db_url)


def test_postgres_schema_isolation(db_url, engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only")
    with engine.connect() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar_one()
        tables = set(
            conn.execute(
                text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
                {"s": schema},
            ).scalars()
        )
    assert schema.startswith("t_")
    assert TABLES <= tables


def test_sqlite_pragmas(tmp_path):
    url = f"sqlite:///{tmp_path / 'sub' / 'dir' / 'control.db'}"  # parent dirs are created
    engine = get_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar_one().lower() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar_one() == 1
    finally:
        dispose_engine(url)


def test_default_url_is_sqlite_under_home(tmp_path, monkeypatch):
    monkeypatch.delenv("JOULESTREAM_DATABASE", raising=False)
    monkeypatch.setenv("JOULESTREAM_HOME", str(tmp_path / "home"))
    expected = f"sqlite:///{(tmp_path / 'home').resolve() / 'control.db'}"
    assert load_settings().database == expected
    engine = get_engine()
    try:
        assert engine is get_engine(expected)
        upgrade(engine)
        assert (tmp_path / "home" / "control.db").is_file()
    finally:
        dispose_engine(expected)


def test_in_memory_sqlite():
    url = "sqlite://"
    engine = get_engine(url)
    try:
        upgrade(engine)
        assert TABLES <= set(inspect(engine).get_table_names())
    finally:
        dispose_engine(url)
