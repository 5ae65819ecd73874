"""Server mode with every joulestream service as its own process (issue 19): the control plane on PostgreSQL,
the Kafka-protocol broker (Tansu) with a 4-partition topic made by `joulestream topics`, three enrich workers
in one consumer group sharing the raw topic's partitions, one sink worker holding the warehouse, the gateway,
the poller and the API. One enrich worker is SIGKILLed mid-stream: the survivors take its partitions over and
the warehouse totals are exact (nothing lost, nothing counted twice).

What this cannot run here (docs/deployment.md): a ClickHouse server. The embedded warehouse (chdb) has one
holder, so the sink stage is one process and the `api` process serves the control plane over a warehouse of
its own; with a ClickHouse server the sink scales like the enrich stage (same consumer-group code) and the API
reads the same warehouse.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli.broker import port_open
from pipelines.simulate import generate
from tests.e2e.expectations import FLOAT_FIELDS, TOKEN_FIELDS, expected
from tests.fixtures_controlplane import pg_schema_url
from tests.stack import REPO, Stack, WorkerProcess, free_port, last_assignment, publish, redis_up

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PARTITIONS = 4
ENRICH_WORKERS = 3
GATEWAY_REQUESTS = 5


class Procs:
    """joulestream commands as subprocesses, each with its own log; whatever is left is killed at the end."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp, self.env = tmp, env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(self.log(name), "ab") as out:
            p = subprocess.Popen(
                [sys.executable, "-m", "cli", *args],
                cwd=REPO,
                env=env or self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.procs[name] = p
        return p

    def log(self, name: str) -> Path:
        return self.tmp / f"{name}.log"

    def tail(self, name: str, n: int = 30) -> str:
        try:
            return "\n".join(self.log(name).read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return "(no log)"

    def alive(self, name: str) -> None:
        code = self.procs[name].poll()
        assert code is None, f"{name} exited with {code}:\n{self.tail(name)}"

    def assignment(self, name: str) -> list[int] | None:
        """The partitions the enrich agent of `name` was last assigned (its log), None before the first."""
        return last_assignment(self.log(name), "enrich")

    def stop_all(self, graceful: tuple[str, ...]) -> dict[str, int | None]:
        """SIGTERM to the `graceful` ones (their clean stop is checked), SIGKILL to the rest (quicker)."""
        for name, p in self.procs.items():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM if name in graceful else signal.SIGKILL)
        codes: dict[str, int | None] = {}
        for name, p in self.procs.items():
            try:
                codes[name] = p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                codes[name] = None
        return codes


def wait(pred, what: str, procs: Procs, names: list[str], timeout_s: float = 90):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for n in names:
            procs.alive(n)
        try:
            value = pred()
        except (OSError, httpx.HTTPError, ValueError):
            value = None
        if value:
            return value
        time.sleep(0.2)
    logs = "\n".join(f"--- {n}\n{procs.tail(n)}" for n in names)
    raise TimeoutError(f"{what}: not reached in {timeout_s}s\n{logs}")


@pytest.fixture
def pg_url(pg_admin) -> Iterator[str]:
    """A fresh PostgreSQL schema for this test's control plane."""
    yield from pg_schema_url(pg_admin)


def test_server_mode_workers_share_partitions_and_a_sigkill_changes_no_total(
    stack: Stack, pg_url: str, tmp_path: Path
) -> None:
    import base64

    from cli.demo import ensure_demo_tenant
    from cli.demo_gateway import DemoUpstream

    env = {
        **stack.env,
        "JOULESTREAM_DATABASE": pg_url,
        "JOULESTREAM_KAFKA_PARTITIONS": str(PARTITIONS),
        "JOULESTREAM_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
        "JOULESTREAM_DEMO_UPSTREAM_KEY": "sk-demo",
    }
    if redis_up():  # the shared rate-limit store of server mode
        env["JOULESTREAM_RATE_LIMIT_STORAGE"] = "redis://127.0.0.1:6379/0"
    stack = Stack(env)
    s = stack.settings
    procs = Procs(tmp_path, env)

    # the deployment's one-shot steps: migrations (control plane + warehouse) and the topics, side by side
    migrate, topics = procs.spawn("migrate", "migrate"), procs.spawn("topics", "topics")
    assert migrate.wait(120) == 0, procs.tail("migrate")
    assert topics.wait(120) == 0, procs.tail("topics")
    assert (
        f"{s.raw_topic}: created ({PARTITIONS} partitions, replication 1)" in procs.log("topics").read_text()
    )

    tenants, key = ensure_demo_tenant(s)  # an org and a key in PostgreSQL, for the gateway and the API
    (s.home / "logs").mkdir(parents=True, exist_ok=True)
    upstream = DemoUpstream(free_port(), s.home)
    routes = upstream.start()
    sink = WorkerProcess(stack, procs.log("sink"), ("--stage", "sink", "--no-migrate"))
    try:
        enrich = [f"enrich{i}" for i in range(ENRICH_WORKERS)]
        for name in enrich:
            procs.spawn(name, "worker", "--stage", "enrich", "--no-migrate")
        gw_port, api_port = free_port(), free_port()
        procs.spawn("gateway", "gateway", "--port", str(gw_port), "--routes", str(routes))
        procs.spawn("poll", "poll")
        # the API process: the control plane on PostgreSQL; its warehouse is its own (chdb has one holder)
        api_env = {**env, "JOULESTREAM_CLICKHOUSE": f"chdb://{tmp_path / 'api-warehouse'}"}
        procs.spawn("api", "api", "--port", str(api_port), env=api_env)
        sink.start(timeout_s=120)

        def shared() -> bool:  # every enrich worker owns partitions; together, all of them, once each
            parts = [procs.assignment(n) for n in enrich]
            return all(parts) and sorted(p for ps in parts for p in ps) == list(range(PARTITIONS))

        wait(shared, "the enrich workers share the partitions", procs, [*enrich, "gateway", "poll"], 120)

        traffic = generate(4_000, duplicate_rate=0.05, revision_rate=0.03, invalid_rate=0.01, seed=19)
        half = len(traffic.messages) // 2
        publish(stack, traffic.messages[:half])
        sink.wait_for_stats(lambda st: st["sink"].get("stored", 0) > 0, timeout_s=120)
        victim = procs.procs[enrich[0]]
        victim.send_signal(signal.SIGKILL)  # mid-stream: its partitions hold unprocessed events from here on
        victim.wait(10)
        publish(stack, traffic.messages[half:])

        # the gateway (its own process, PostgreSQL auth) publishes usage to the same topic
        for _ in range(GATEWAY_REQUESTS):
            r = httpx.post(
                f"http://127.0.0.1:{gw_port}/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]},
                timeout=30,
            )
            assert r.status_code == 200, r.text

        survivors = enrich[1:]

        def taken_over() -> bool:
            parts = [procs.assignment(n) for n in survivors]
            return all(parts) and sorted(p for ps in parts for p in ps) == list(range(PARTITIONS))

        wait(taken_over, "the survivors take the dead worker's partitions", procs, survivors, 120)

        want = expected(traffic.final.values(), "org")
        gw_org = next(iter(tenants))

        def exact() -> dict | None:
            rows = {r["org_id"]: r for r in sink.totals("org")["rows"]}
            if set(rows) != {*want, gw_org} or rows[gw_org]["events"] != GATEWAY_REQUESTS:
                return None
            if any(rows[o]["events"] != w["events"] for o, w in want.items()):
                return None
            return rows

        rows = wait(exact, "exact totals", procs, [*survivors, "gateway"], 180)
        time.sleep(1.5)  # a late duplicate would land within the sink's 1 s linger: give it the chance
        rows = {r["org_id"]: r for r in sink.totals("org")["rows"]}
        for org, w in want.items():
            g = rows[org]
            for f in ("events", "request_count", *TOKEN_FIELDS):
                assert g[f] == w[f], f"org {org} {f}: got {g[f]}, want {w[f]}"
            for f in FLOAT_FIELDS:
                assert math.isclose(g[f], w[f], rel_tol=1e-9, abs_tol=1e-12), f"org {org} {f}"
        assert rows[gw_org]["events"] == rows[gw_org]["request_count"] == GATEWAY_REQUESTS

        # the API process answers on its own, from PostgreSQL
        assert port_open("127.0.0.1", api_port) or wait(
            lambda: port_open("127.0.0.1", api_port), "the API listens", procs, ["api"], 60
        )
        projects = httpx.get(
            f"http://127.0.0.1:{api_port}/api/v1/projects", headers={"Authorization": f"Bearer {key}"}
        )
        assert projects.status_code == 200, projects.text
        assert len(projects.json()["projects"]) == len(next(iter(tenants.values())))
        procs.alive("poll")
    finally:
        codes = procs.stop_all(graceful=("gateway", "poll"))
        if sink.proc is not None and sink.proc.poll() is None:
            sink.kill()
        upstream.stop()
    assert codes["poll"] == 0 and codes["gateway"] in (0, -signal.SIGTERM), codes
