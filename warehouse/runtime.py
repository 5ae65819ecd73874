"""The one holder of the embedded warehouse, and the one way every other process reaches it.

chdb lets one process hold a warehouse path. The process that holds it — the runtime, `joulestream up` or
`joulestream worker --http-port` — serves HTTP on loopback and records where, with a random token, in
`$JOULESTREAM_HOME/runtime.json` (mode 0600): the address book. Its `/internal/v1/…` endpoints
(api/internal.py, api/internal_close.py) need that token in the `TOKEN_HEADER` header.

Everyone else — `joulestream totals`, the close's Dagster resources — calls `open_or_ask`, which decides in
one order: a live runtime in the address book is asked; otherwise the warehouse is opened in this process.
Asking first means a command never grabs the chdb path from under a runtime that is starting, and never loads
the engine just to find it locked.
"""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
from clickhouse_connect.driver import Client
from pydantic import AwareDatetime, BaseModel

from core.settings import Settings
from warehouse.client import WarehouseError, WarehouseLocked, get_client

TOKEN_HEADER = "X-Joulestream-Runtime-Token"

Mode = Literal["auto", "direct", "runtime"]


class RuntimeInfo(BaseModel):
    """One entry of the address book: the holder's pid, loopback URL and token."""

    pid: int
    url: str
    token: str
    started_at: AwareDatetime

    def headers(self) -> dict[str, str]:
        return {TOKEN_HEADER: self.token}


class WarehouseUnreachable(WarehouseError):
    """The warehouse can neither be opened here nor asked of a live runtime."""


def runtime_path(settings: Settings) -> Path:
    return settings.home / "runtime.json"


def publish_runtime(settings: Settings, url: str) -> RuntimeInfo:
    """Record this process as the holder, reachable at `url`, with a fresh token (written atomically, 0600)."""
    info = RuntimeInfo(
        pid=os.getpid(), url=url, token=secrets.token_urlsafe(24), started_at=datetime.now(UTC)
    )
    path = runtime_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(info.model_dump_json())
    tmp.replace(path)
    return info


def clear_runtime(settings: Settings, info: RuntimeInfo) -> None:
    """Remove the address book entry if it is still this holder's."""
    path = runtime_path(settings)
    try:
        if RuntimeInfo.model_validate_json(path.read_text()).pid == info.pid:
            path.unlink()
    except (FileNotFoundError, ValueError):
        pass


def find_runtime(settings: Settings) -> RuntimeInfo | None:
    """The recorded holder when its process is alive, else None."""
    try:
        info = RuntimeInfo.model_validate_json(runtime_path(settings).read_text())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return None
    return info


def token_matches(given: str, info_or_token: RuntimeInfo | str) -> bool:
    """Constant-time comparison of a presented token with the runtime's."""
    token = info_or_token.token if isinstance(info_or_token, RuntimeInfo) else info_or_token
    return secrets.compare_digest(given.encode(), token.encode())


def ask(info: RuntimeInfo, path: str, timeout: float = 30.0, **params: Any) -> httpx.Response:
    """GET `path` (e.g. `/internal/v1/totals`) from the runtime, with its token; None-valued params are
    left out. Raises httpx.HTTPStatusError on an error status."""
    r = httpx.get(
        f"{info.url.rstrip('/')}{path}",
        params={k: v for k, v in params.items() if v is not None},
        headers=info.headers(),
        timeout=timeout,
    )
    r.raise_for_status()
    return r


def open_or_ask(settings: Settings, database: str | None = None, mode: Mode = "auto") -> Client | RuntimeInfo:
    """How this process reaches the warehouse: a client it holds, or the runtime to ask.

    mode "auto": the live runtime recorded under `settings.home` when there is one, else a client opened here;
    "direct": always a client opened here; "runtime": always the runtime. Raises WarehouseUnreachable when the
    chosen way is closed (no live runtime, or the chdb path held by a process that left no address)."""
    if mode != "direct":
        info = find_runtime(settings)
        if info is not None:
            return info
        if mode == "runtime":
            raise WarehouseUnreachable(f"no live runtime.json under {settings.home}")
    try:
        return get_client(settings, database=database)
    except WarehouseLocked as exc:
        raise WarehouseUnreachable(
            f"{exc} — and there is no live runtime.json under {settings.home} to ask; "
            "is `joulestream up` starting?"
        ) from exc
