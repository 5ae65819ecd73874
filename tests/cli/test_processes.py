"""Issue 20 with real processes: the long-running commands (`broker`, `worker`, `gateway`, `poll`, `up`)
leave no child behind on SIGTERM (checked in /proc), children die with a killed parent, a crash of any part
ends `up` / `worker` with status 1 and the reason, the start-up check names every problem before anything
starts, files under the home are private, and X-Forwarded-For is trusted from configured proxies only."""

from __future__ import annotations

import base64
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli.broker import port_open
from tests.stack import REPO, Stack, WorkerProcess, free_port

pytestmark = pytest.mark.timeout(300)


# ------------------------------------------------------------------------------------------ /proc helpers


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of a live process, None when gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def descendants(pid: int) -> dict[int, int]:
    """Every live descendant of `pid`: pid → start time (so a reused pid is not mistaken for it)."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None and st[0] != "Z":
                children.setdefault(st[1], []).append((int(entry.name), st[2]))
    out: dict[int, int] = {}
    todo = [pid]
    while todo:
        for child, start in children.get(todo.pop(), []):
            out[child] = start
            todo.append(child)
    return out


def survivors(procs: dict[int, int]) -> list[str]:
    """The processes of `procs` still alive (zombies are dead: only their exit status is left)."""
    out = []
    for pid, start in procs.items():
        st = _stat(pid)
        if st is not None and st[0] != "Z" and st[2] == start:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            out.append(f"{pid}: {cmd[:120]}")
    return out


def wait_gone(procs: dict[int, int], timeout_s: float = 15) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while (left := survivors(procs)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


# ------------------------------------------------------------------------------------------ processes


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli", *args],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def wait_until(pred, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 90, what: str = "ready"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited with {proc.returncode} before {what}:\n{log.read_text()[-3000:]}"
        try:
            value = pred()
        except (OSError, httpx.HTTPError, ValueError):
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"not {what} in {timeout_s}s:\n{log.read_text()[-3000:]}")


def sigterm_leaves_nothing(proc: subprocess.Popen[bytes], log: Path, expect_children: int = 0) -> int:
    """SIGTERM `proc`; it must exit, and every process it had started must be gone. Returns its status."""
    family = descendants(proc.pid)
    assert len(family) >= expect_children, (family, log.read_text()[-2000:])
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"no exit within 60 s of SIGTERM:\n{log.read_text()[-3000:]}") from None
    assert wait_gone(family) == [], log.read_text()[-3000:]
    return code


@pytest.fixture
def reap() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test started: killed (with their descendants) if the test left them running."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            family = descendants(p.pid)
            p.kill()
            p.wait(10)
            for pid in family:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def master_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def not_private(home: Path) -> list[str]:
    """Everything under `home` (itself included) that is not 0700 (directories) or 0600 (files)."""
    out = []
    for p in [home, *home.rglob("*")]:
        if p.is_symlink():
            continue
        want = 0o700 if p.is_dir() else 0o600
        if mode(p) != want:
            out.append(f"{p.relative_to(home)}: {oct(mode(p))}")
    return out


# ------------------------------------------------------------------------------------------ broker


def test_broker_sigterm_stops_tansu(tmp_path, reap):
    port = free_port()
    log = tmp_path / "broker.out"
    proc = spawn(["broker", "--port", str(port)], {**os.environ, "JOULESTREAM_HOME": str(tmp_path)}, log)
    reap.append(proc)
    wait_until(lambda: port_open("127.0.0.1", port), proc, log, what="listening")
    assert sigterm_leaves_nothing(proc, log, expect_children=1) == 0
    assert not port_open("127.0.0.1", port)


def test_broker_killed_outright_takes_tansu_along(tmp_path, reap):
    """SIGKILL cannot be forwarded: the child is bound to the parent's life (PR_SET_PDEATHSIG)."""
    port = free_port()
    log = tmp_path / "broker.out"
    proc = spawn(["broker", "--port", str(port)], {**os.environ, "JOULESTREAM_HOME": str(tmp_path)}, log)
    reap.append(proc)
    wait_until(lambda: port_open("127.0.0.1", port), proc, log, what="listening")
    family = descendants(proc.pid)
    assert family
    proc.kill()
    proc.wait(10)
    assert wait_gone(family) == []


# ------------------------------------------------------------------------------------------ gateway

# uvicorn shuts down gracefully on SIGTERM, then re-raises the signal: the exit is "terminated by SIGTERM"
GRACEFUL = (0, -signal.SIGTERM)

ROUTES = """\
upstreams:
  - name: nowhere
    provider: openai
    base_url: http://127.0.0.1:{port}/v1
    region: us
    silicon: h100-sxm5
    models: [gpt-4o-mini]
    price_in_per_1m: 0.15
    price_out_per_1m: 0.60
    tiers: [L0, L1, L2, L3]
"""


def _gateway(
    stack: Stack, tmp_path: Path, name: str, **env: str
) -> tuple[subprocess.Popen[bytes], str, Path]:
    routes = tmp_path / f"{name}-routes.yaml"
    routes.write_text(ROUTES.format(port=free_port()))
    port = free_port()
    log = tmp_path / f"{name}.out"
    e = {
        **stack.env,
        "JOULESTREAM_HOME": str(tmp_path / name),
        "JOULESTREAM_PUBLIC_RATE_LIMIT": "3/minute",
        **env,
    }
    proc = spawn(["gateway", "--port", str(port), "--routes", str(routes)], e, log)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{url}/health", timeout=2).status_code in (200, 503), proc, log)
    return proc, url, log


def _public_key(url: str, forwarded: str | None = None) -> int:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return httpx.get(f"{url}/v1/receipts/public-key", headers=headers, timeout=5).status_code


def test_gateway_forwarded_header_spoof_and_sigterm(stack, tmp_path, reap):
    # no trusted proxy (the default): a new X-Forwarded-For per request is the same client all the same
    proc, url, log = _gateway(stack, tmp_path, "direct")
    reap.append(proc)
    assert [_public_key(url, f"198.51.100.{i}") for i in range(3)] == [200, 200, 200]
    assert _public_key(url) == 429
    assert [_public_key(url, f"203.0.113.{i}") for i in range(5)] == [429] * 5
    assert httpx.get(f"{url}/health").json().keys() == {"status"}  # details need a key
    assert sigterm_leaves_nothing(proc, log) in GRACEFUL
    # loopback configured as a trusted proxy: the forwarded address is the client
    proc, url, log = _gateway(stack, tmp_path, "proxied", JOULESTREAM_FORWARDED_ALLOW_IPS="127.0.0.1")
    reap.append(proc)
    assert [_public_key(url, "192.0.2.1") for _ in range(4)] == [200, 200, 200, 429]
    assert _public_key(url, "192.0.2.2") == 200
    assert sigterm_leaves_nothing(proc, log) in GRACEFUL
    home = tmp_path / "proxied"  # control.db, the spool, the receipt signing keys: all private
    assert {"control.db", "gateway", "keys"} <= {p.name for p in home.iterdir()}
    assert not_private(home) == []


# ------------------------------------------------------------------------------------------ worker


def test_worker_forwarded_header_spoof_file_modes_and_sigterm(stack, tmp_path, reap):
    env = Stack({**stack.env, "JOULESTREAM_PUBLIC_RATE_LIMIT": "3/minute"})
    w = WorkerProcess(env, tmp_path / "worker.log").start()
    assert w.proc is not None and w.runtime is not None
    reap.append(w.proc)
    base = w.runtime.url
    verify = f"{base}/public/receipts/verify/CL-202601-00001"
    assert [httpx.get(verify, headers={"X-Forwarded-For": f"10.0.0.{i}"}).status_code for i in range(3)] == [
        404
    ] * 3
    assert [httpx.get(verify, headers={"X-Forwarded-For": f"10.9.0.{i}"}).status_code for i in range(3)] == [
        429
    ] * 3
    assert httpx.get(f"{base}/health").json().keys() == {"status"}
    home = env.settings.home  # control.db (+ WAL), runtime.json, the chdb warehouse: all private
    assert {"control.db", "runtime.json", "warehouse"} <= {p.name for p in home.iterdir()}
    assert not_private(home) == []
    assert sigterm_leaves_nothing(w.proc, w.log_path, expect_children=1) == 0


def test_worker_http_server_that_cannot_start_stops_the_worker(stack, tmp_path, reap):
    """A crashed part (here the HTTP server: its port is bound, not listening, so the start-up check
    passes and uvicorn's bind fails) ends the worker with status 1 and the reason on the console."""
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        port = blocker.getsockname()[1]
        log = tmp_path / "worker.out"
        proc = spawn(["worker", "--http-port", str(port)], stack.env, log)
        reap.append(proc)
        code = proc.wait(120)
    out = log.read_text()
    assert code == 1, out[-3000:]
    assert f"joulestream worker stopped: the HTTP server on 127.0.0.1:{port} could not start" in out


# ------------------------------------------------------------------------------------------ poll


def test_poll_sigterm(stack, tmp_path, reap):
    log = tmp_path / "poll.out"
    proc = spawn(["poll"], {**stack.env, "JOULESTREAM_MASTER_KEY": master_key()}, log)
    reap.append(proc)
    wait_until(lambda: "poll scheduler started" in log.read_text(), proc, log)
    assert sigterm_leaves_nothing(proc, log) == 0


# ------------------------------------------------------------------------------------------ up


def test_up_start_up_check_names_every_problem_before_anything_starts(tmp_path, reap):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    http_port = taken.getsockname()[1]
    home = tmp_path / "home"
    env = {
        **os.environ,
        "JOULESTREAM_HOME": str(home),
        "JOULESTREAM_KAFKA": f"127.0.0.1:{free_port()}",  # external Kafka: a master key is required
        "JOULESTREAM_JWT_JWKS_URL": "https://idp.example/jwks.json",  # without issuer and audience
        "JOULESTREAM_FORWARDED_ALLOW_IPS": "10.0.0.0/8,proxy.internal",
        "JOULESTREAM_SIGNING_KEY": "not-base64!",
    }
    env.pop("JOULESTREAM_MASTER_KEY", None)
    log = tmp_path / "up.out"
    proc = spawn(["up", "--http-port", str(http_port), "--upstream-port", str(free_port())], env, log)
    reap.append(proc)
    try:
        code = proc.wait(60)
    finally:
        taken.close()
    out = " ".join(log.read_text().split())
    assert code == 2, out
    assert "cannot start, 5 configuration problem(s)" in out
    for name in (
        "JOULESTREAM_MASTER_KEY is not set",
        "JOULESTREAM_JWT_ISSUER, JOULESTREAM_JWT_AUDIENCE not",
        "'proxy.internal' is not an IP address",
        "JOULESTREAM_SIGNING_KEY must be base64",
        f"--http-port: port {http_port} is already in use",
    ):
        assert name in out, (name, out)
    assert not home.exists()  # nothing was started, nothing created


def test_up_exits_with_the_reason_when_a_part_crashes(stack, tmp_path, reap):
    http_port, upstream_port = free_port(), free_port()
    env = {**stack.env, "JOULESTREAM_MASTER_KEY": master_key()}
    log = tmp_path / "up.out"
    args = [
        "up",
        "--events",
        "50",
        "--rate",
        "1",
        "--http-port",
        str(http_port),
        "--upstream-port",
        str(upstream_port),
    ]
    proc = spawn(args, env, log)
    reap.append(proc)
    home = Path(env["JOULESTREAM_HOME"])
    wait_until(lambda: httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=2).status_code, proc, log)
    # everything `up` wrote so far is private
    for f in (
        "control.db",
        "runtime.json",
        "gateway-routes.yaml",
        "logs/worker.log",
        "gateway/spool",
        "keys",
    ):
        assert (home / f).exists(), f
    assert not_private(home) == []
    family = descendants(proc.pid)
    upstream = next(
        pid for pid in family if b"cli.demo_upstream" in Path(f"/proc/{pid}/cmdline").read_bytes()
    )
    os.kill(upstream, signal.SIGKILL)
    code = proc.wait(90)
    out = " ".join(log.read_text().split())
    assert code == 1, out[-3000:]
    assert f"joulestream up stopped: the demo upstream (pid {upstream}) killed by signal 9" in out
    assert wait_gone(family) == []
