"""A pytest plugin with the real moving parts: the Tansu broker and stream workers as subprocesses.

Each test gets its own topic prefix, ClickHouse database and data dir, so tests share one broker
without seeing each other's messages.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cli.broker import EmbeddedBroker
from core.settings import Settings, load_settings
from warehouse.runtime import TOKEN_HEADER, RuntimeInfo

REPO = Path(__file__).resolve().parents[1]


def redis_up(host: str = "127.0.0.1", port: int = 6379) -> bool:
    """A Redis answers at host:port (the shared rate-limit store of server mode)."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One embedded broker for the test session; returns its bootstrap address."""
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(free_port(), log_path=log) as b:
        yield b.bootstrap


@dataclass
class Stack:
    """Environment of one isolated pipeline (topics, warehouse database, data dir)."""

    env: dict[str, str]

    @property
    def settings(self) -> Settings:
        return load_settings(self.env)


@pytest.fixture
def stack(kafka: str, tmp_path: Path) -> Stack:
    return new_stack(kafka, tmp_path)


def new_stack(kafka: str, tmp_path: Path, **extra_env: str) -> Stack:
    """An isolated pipeline's environment under `tmp_path` (for fixtures of a wider scope than `stack`)."""
    tag = uuid.uuid4().hex[:10]
    env = {
        **os.environ,
        "JOULESTREAM_HOME": str(tmp_path / "home"),
        "JOULESTREAM_KAFKA": kafka,
        "JOULESTREAM_TOPIC_PREFIX": f"t{tag}.",
        "JOULESTREAM_CH_DATABASE": f"e2e_{tag}",
    }
    env.pop("JOULESTREAM_CLICKHOUSE", None)  # the worker's own chdb path under its data dir
    return Stack({**env, **extra_env})


class WorkerProcess:
    """`joulestream worker --http-port P [args]` as a subprocess that a test can kill."""

    def __init__(self, stack: Stack, log_path: Path, args: tuple[str, ...] = ()) -> None:
        self.stack, self.log_path, self.args = stack, log_path, args
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.runtime: RuntimeInfo | None = None

    def start(self, timeout_s: float = 60) -> WorkerProcess:
        self.runtime = None
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cli", "worker", "--http-port", str(self.port), *self.args],
                cwd=REPO,
                env=self.stack.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        path = self.stack.settings.home / "runtime.json"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                info = RuntimeInfo.model_validate_json(path.read_text())
                if info.pid == self.proc.pid:
                    self.runtime = info
                    self.get("/internal/v1/stats")
                    return self
            except (FileNotFoundError, ValueError, httpx.HTTPError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready in {timeout_s}s:\n{self.log_tail()}")

    def get(self, path: str, **params: object) -> dict:
        assert self.runtime is not None
        r = httpx.get(
            f"{self.runtime.url}{path}", params=params, headers={TOKEN_HEADER: self.runtime.token}, timeout=30
        )
        r.raise_for_status()
        return r.json()

    def stats(self) -> dict:
        return self.get("/internal/v1/stats")

    def totals(self, by: str = "none") -> dict:
        return self.get("/internal/v1/totals", by=by)

    def wait_for(self, predicate, timeout_s: float = 180, what: str = "condition") -> dict:
        deadline = time.monotonic() + timeout_s
        last: dict = {}
        while time.monotonic() < deadline:
            try:
                last = {"stats": self.stats(), "totals": self.totals()}
                if predicate(last):
                    return last
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{what} not reached in {timeout_s}s; last: {last}\n{self.log_tail()}")

    def wait_for_stats(self, predicate, timeout_s: float = 120) -> dict:
        """Poll the live counters only (no warehouse query): quick enough to catch a moment mid-stream."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            stats = self.stats()
            if predicate(stats):
                return stats
            time.sleep(0.05)
        raise TimeoutError(f"stats condition not reached in {timeout_s}s: {self.stats()}\n{self.log_tail()}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout_s: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return "(no log)"


@pytest.fixture
def worker(stack: Stack, tmp_path: Path) -> Iterator[WorkerProcess]:
    w = WorkerProcess(stack, tmp_path / "worker.log")
    yield w
    if w.proc is not None and w.proc.poll() is None:
        w.proc.kill()
        w.proc.wait()


def last_assignment(log: Path, agent: str) -> list[int] | None:
    """The partitions the `agent` of a worker was last assigned, from its JSON log (streams/agents.py logs each
    assignment); None before the first."""
    last = None
    try:
        lines = log.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        if line.startswith("{") and '"partitions assigned"' in line:
            rec = json.loads(line)
            if rec.get("agent") == agent:
                last = rec["partitions"]
    return last


def publish(stack: Stack, messages: list) -> int:
    from pipelines.simulate import publish as _publish

    return asyncio.run(_publish(stack.settings, messages))
