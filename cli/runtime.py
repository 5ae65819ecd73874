"""The embedded runtime's address book: `$JOULESTREAM_HOME/runtime.json`.

chdb lets one process hold the embedded warehouse. The process that holds it (`joulestream up` or
`joulestream worker --http-port`) serves HTTP on loopback and records where, with a random token, in
this file (mode 0600). Other commands (`joulestream totals`, later Dagster runs) that find the
warehouse locked ask that process instead.
"""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

import httpx
from pydantic import AwareDatetime, BaseModel

from core.settings import Settings

TOKEN_HEADER = "X-Joulestream-Runtime-Token"


class RuntimeInfo(BaseModel):
    pid: int
    url: str
    token: str
    started_at: AwareDatetime


def runtime_path(settings: Settings) -> Path:
    return settings.home / "runtime.json"


def publish_runtime(settings: Settings, url: str) -> RuntimeInfo:
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
    path = runtime_path(settings)
    try:
        if RuntimeInfo.model_validate_json(path.read_text()).pid == info.pid:
            path.unlink()
    except (FileNotFoundError, ValueError):
        pass


def find_runtime(settings: Settings) -> RuntimeInfo | None:
    try:
        info = RuntimeInfo.model_validate_json(runtime_path(settings).read_text())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return None
    return info


def runtime_get(info: RuntimeInfo, path: str, **params: object) -> dict:
    r = httpx.get(f"{info.url}{path}", params=params, headers={TOKEN_HEADER: info.token}, timeout=30)
    r.raise_for_status()
    return r.json()
