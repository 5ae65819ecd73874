from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from core.settings import load_settings
from warehouse.client import WarehouseError, chdb_path, close_clients, get_client


def test_client_is_cached_per_dsn_and_database(warehouse_dsn: str):
    settings = load_settings().replace(clickhouse=warehouse_dsn)
    db = f"test_{uuid.uuid4().hex}"
    try:
        a = get_client(settings, database=db)
        assert get_client(settings, database=db) is a
        assert a.database == db
        assert a.command("SELECT currentDatabase()") == db
        # the default database comes from settings.ch_database
        b = get_client(settings.replace(ch_database=db))
        assert b is a
    finally:
        a.command(f"DROP DATABASE IF EXISTS {db}")
        close_clients(db)


def test_session_exports_the_test_warehouse(warehouse_dsn: str):
    assert load_settings().clickhouse == warehouse_dsn


def test_chdb_path_parsing():
    assert chdb_path("chdb:///var/lib/x") == "/var/lib/x"
    assert chdb_path("chdb://memory") is None
    assert chdb_path("http://localhost:8123") is None


def test_unsupported_dsn():
    with pytest.raises(WarehouseError, match="unsupported"):
        get_client(load_settings().replace(clickhouse="postgres://x"), database="d")


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from core.settings import load_settings
    from warehouse.client import get_client
    get_client(load_settings().replace(clickhouse=sys.argv[1]), database="held")
    print("ready", flush=True)
    sys.stdin.read()
    """
)
_CONTENDER = textwrap.dedent(
    """
    import os, sys
    from core.settings import load_settings
    from warehouse.client import WarehouseLocked, get_client
    try:
        get_client(load_settings().replace(clickhouse=sys.argv[1]), database="held")
    except WarehouseLocked as exc:
        print("LOCKED", exc.pid, exc)
    else:
        print("OPENED")
    """
)


def test_locked_chdb_path_raises_warehouse_locked(tmp_path: Path):
    """A second process opening a held chdb path gets WarehouseLocked naming the holder."""
    dsn = f"chdb://{tmp_path / 'wh'}"
    root = Path(__file__).resolve().parents[2]
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, dsn],
        cwd=root,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        out = subprocess.run(
            [sys.executable, "-c", _CONTENDER, dsn], cwd=root, capture_output=True, text=True, timeout=120
        ).stdout
        assert out.startswith(f"LOCKED {holder.pid} "), out
        assert "joulestream up" in out
    finally:
        holder.communicate("", timeout=60)
    # once the holder is gone, the path opens again
    out = subprocess.run(
        [sys.executable, "-c", _CONTENDER, dsn], cwd=root, capture_output=True, text=True, timeout=120
    ).stdout
    assert out.strip() == "OPENED"
