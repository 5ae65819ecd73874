"""ClickHouse client factory: one cached `clickhouse_connect` client per (dsn, database) per process.

`settings.clickhouse` is either

* ``chdb:///abs/path`` — the embedded engine (chdb) through clickhouse-connect's own chdb backend
  (``clickhouse_connect.get_client(dsn="chdb:///path")``). chdb hosts one engine path per process and one
  process per path: a second process that opens a path held elsewhere fails at once. That failure is raised
  here as `WarehouseLocked` so callers (the CLI) can fall back to asking the runtime that holds it over HTTP.
* ``http(s)://user:pass@host:port[/db]`` — a ClickHouse server over HTTP.

Thread-safety: a chdb client serialises calls on its handle with a lock, so sharing one client between threads
is safe (calls just queue). HTTP clients are created with ``autogenerate_session_id=False`` so one client can
be used from several threads without "session is locked" errors. Both are blocking: from asyncio call them
through ``asyncio.to_thread`` / an executor.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from pathlib import Path
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect.driver import Client
from clickhouse_connect.driver.binding import quote_identifier
from clickhouse_connect.driver.exceptions import ClickHouseError

from core.settings import Settings, load_settings

log = logging.getLogger(__name__)

_clients: dict[tuple[str, str], Client] = {}
_lock = threading.RLock()


class WarehouseError(RuntimeError):
    """Base class of warehouse errors raised by this package."""


class WarehouseLocked(WarehouseError):
    """The embedded (chdb) warehouse path is held by another process."""

    def __init__(self, path: str, pid: int | None, command: str | None):
        self.path = path
        self.pid = pid
        self.command = command
        holder = f"process {pid}" if pid else "another process"
        if command:
            holder += f" ({command})"
        super().__init__(
            f"The embedded warehouse at {path} is locked by {holder}. Only one process may open a chdb path: "
            "it is most likely the `joulestream up` / worker runtime — ask it over HTTP, or stop it first."
        )


def chdb_path(dsn: str) -> str | None:
    """The filesystem path of a ``chdb:///abs/path`` dsn, or None for other dsns."""
    if not dsn.startswith("chdb:"):
        return None
    parsed = urlparse(dsn)
    path = parsed.path if not parsed.netloc else ""
    if not path or path in ("/memory", "/:memory:"):
        return None
    return path


def _lock_holder(path: str) -> tuple[bool, int | None, str | None]:
    """Probe ClickHouse's `status` lock file: (locked, pid, command line of the pid)."""
    status = Path(path) / "status"
    try:
        fd = os.open(status, os.O_RDONLY)
    except OSError:
        return False, None, None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            locked = True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            locked = False
        text = os.read(fd, 4096).decode(errors="replace")
    finally:
        os.close(fd)
    pid = None
    for line in text.splitlines():
        if line.startswith("PID:"):
            try:
                pid = int(line.split(":", 1)[1])
            except ValueError:
                pid = None
    command = None
    if pid:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            command = " ".join(p.decode(errors="replace") for p in raw.split(b"\0") if p)[:200] or None
        except OSError:
            command = None
    return locked, pid, command


def _open(dsn: str) -> Client:
    path = chdb_path(dsn)
    if dsn.startswith("chdb:"):
        if path:
            Path(path).mkdir(parents=True, exist_ok=True)
        try:
            return clickhouse_connect.get_client(dsn=dsn)
        except Exception as exc:
            if path:
                locked, pid, command = _lock_holder(path)
                if locked or "Cannot lock file" in str(exc):
                    raise WarehouseLocked(path, pid, command) from exc
            raise
    if dsn.startswith(("http://", "https://")):
        return clickhouse_connect.get_client(dsn=dsn, autogenerate_session_id=False)
    raise WarehouseError(f"unsupported ClickHouse dsn {dsn!r}: expected chdb:///abs/path or http(s)://…")


def get_client(settings: Settings | None = None, database: str | None = None) -> Client:
    """The process-wide client for (settings.clickhouse, database), opened and cached on first use.

    The database (``settings.ch_database`` unless overridden) is created if missing and becomes the client's
    default database, so table names in queries need no qualification.
    """
    settings = settings or load_settings()
    dsn = settings.clickhouse
    db = database or settings.ch_database
    key = (dsn, db)
    with _lock:
        client = _clients.get(key)
        if client is not None:
            return client
        client = _open(dsn)
        try:
            ensure_database(client, db)
            client.database = db
        except Exception:
            client.close()
            raise
        _clients[key] = client
        return client


def ping(client: Client) -> None:
    """Raises when the warehouse does not answer (health checks)."""
    client.command("SELECT 1")


def ensure_database(client: Client, database: str) -> None:
    """CREATE DATABASE IF NOT EXISTS; tolerated to fail when the database exists (no DDL rights)."""
    try:
        client.command(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)}")
    except ClickHouseError:
        if not client.command(
            "SELECT count() FROM system.databases WHERE name = {d:String}", {"d": database}
        ):
            raise


def close_clients(database: str | None = None) -> None:
    """Close cached clients (all, or those of one database). chdb opens another path only after every client
    of the first is closed."""
    with _lock:
        for key in [k for k in _clients if database is None or k[1] == database]:
            client = _clients.pop(key)
            try:
                client.close()
            except Exception:
                log.debug("error closing ClickHouse client %s", key, exc_info=True)
