"""cli/poll.py as a subprocess: it refuses to start without a master key outside the embedded demo, and
`poll(once=True)` polls a connection registered in the control plane, with the provider base URL and the
master key from the environment, publishing to the broker."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from controlplane import Orgs, dispose_engine, get_engine, upgrade
from controlplane.connections import Connections, new_connection_id
from core.secrets import LocalSecretStore
from providers.base import floor_to
from tests.pollers.stubs import ADMIN_KEYS
from tests.stack import REPO

RUN = (
    "import sys; from cli.poll import poll; from core.settings import load_settings; "
    "sys.exit(poll(load_settings(), once=True))"
)


def _env(tmp_path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOULESTREAM_")}
    env.update(
        JOULESTREAM_HOME=str(tmp_path / "home"), JOULESTREAM_DATABASE=f"sqlite:///{tmp_path / 'cp.db'}"
    )
    env.update(extra)
    return env


def test_refuses_to_start_without_master_key(tmp_path):
    p = subprocess.run(
        [sys.executable, "-c", RUN], cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 2
    assert "JOULESTREAM_MASTER_KEY is not set" in p.stderr


@pytest.mark.slow
def test_poll_once_publishes(tmp_path, kafka, stubs):
    master = os.urandom(32)
    url = f"sqlite:///{tmp_path / 'cp.db'}"
    engine = get_engine(url)
    upgrade(engine)
    org = Orgs(engine).create("acme")
    cid = new_connection_id()
    ref = LocalSecretStore(master).put(cid, ADMIN_KEYS["openai"])
    Connections(engine).create(org.id, "openai", ref, connection_id=cid)
    dispose_engine(url)
    start = floor_to(datetime.now(UTC), timedelta(hours=1)) - timedelta(hours=2)
    stubs["openai"].put(
        "completions", start, "gpt-4o", "p", input_tokens=10, output_tokens=5, num_model_requests=1
    )
    env = _env(
        tmp_path,
        JOULESTREAM_MASTER_KEY=base64.b64encode(master).decode(),
        JOULESTREAM_KAFKA=kafka,
        JOULESTREAM_TOPIC_PREFIX=f"cli{os.getpid()}.",
        JOULESTREAM_OPENAI_BASE_URL=stubs["openai"].url,
    )
    p = subprocess.run(
        [sys.executable, "-c", RUN], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr
    assert f"openai     {cid}  ok        published=1" in p.stdout
    assert ADMIN_KEYS["openai"] not in p.stdout + p.stderr
    assert Connections(get_engine(url)).get(org.id, cid).last_polled_at is not None
    dispose_engine(url)


@pytest.mark.slow
def test_poll_serves_its_metrics_and_stops_on_sigterm(tmp_path, kafka, stubs):
    """`joulestream poll --metrics-port`: its own /prometheus/metrics (operator token) counts the poll; SIGTERM
    stops both the scheduler and the metrics server (exit 0)."""
    import signal
    import time

    import httpx

    from tests.prom import parse, value
    from tests.stack import free_port

    master = os.urandom(32)
    url = f"sqlite:///{tmp_path / 'cp.db'}"
    engine = get_engine(url)
    upgrade(engine)
    org = Orgs(engine).create("acme")
    cid = new_connection_id()
    Connections(engine).create(
        org.id, "openai", LocalSecretStore(master).put(cid, ADMIN_KEYS["openai"]), connection_id=cid
    )
    dispose_engine(url)
    start = floor_to(datetime.now(UTC), timedelta(hours=1)) - timedelta(hours=2)
    stubs["openai"].put(
        "completions", start, "gpt-4o", "p", input_tokens=10, output_tokens=5, num_model_requests=1
    )
    port = free_port()
    env = _env(
        tmp_path,
        JOULESTREAM_MASTER_KEY=base64.b64encode(master).decode(),
        JOULESTREAM_KAFKA=kafka,
        JOULESTREAM_TOPIC_PREFIX=f"clim{os.getpid()}.",
        JOULESTREAM_OPENAI_BASE_URL=stubs["openai"].url,
        JOULESTREAM_METRICS_TOKEN="poll-operator-token",
    )
    run = (
        "import sys; from cli.poll import poll; from core.settings import load_settings; "
        f"sys.exit(poll(load_settings(), metrics_port={port}))"
    )
    proc = subprocess.Popen([sys.executable, "-c", run], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        samples: dict = {}
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                r = httpx.get(
                    f"http://127.0.0.1:{port}/prometheus/metrics",
                    headers={"Authorization": "Bearer poll-operator-token"},
                    timeout=5,
                )
                samples = parse(r.text) if r.status_code == 200 else {}
                if value(samples, "joulestream_poller_polls_total", provider="openai", outcome="ok") == 1:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        assert value(samples, "joulestream_poller_polls_total", provider="openai", outcome="ok") == 1, (
            proc.stderr
        )
        assert value(samples, "joulestream_poller_events_published_total", provider="openai") == 1
        r = httpx.get(f"http://127.0.0.1:{port}/prometheus/metrics", timeout=5)
        assert r.status_code == 401 and r.json()["detail"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
