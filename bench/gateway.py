"""Gateway overhead: latency the gateway adds over calling the upstream directly, and throughput, with
LiteLLM's proxy in front of the same stub as the peer — all in one run.

    .venv/bin/python bench/gateway.py [--requests 5000] [--concurrency 32] [--skip-litellm]

What runs (each server its own process, all on loopback):
  stub       cli/demo_upstream.py (uvicorn + uvloop + httptools): an OpenAI-compatible upstream
  gateway    `cli.gateway.gateway()` in front of the stub: real auth (API key, cached), classification,
             routing, energy headers, signed receipts (stored in SQLite), usage events to a real embedded
             Kafka broker (Tansu). `gateway+prepaid` is the same with a prepaid org (requests reserve against
             an in-memory allowance taken from the balance in advance; the spend goes to the ledger
             in the background). Every request reads the revocation counter (docs/tenancy.md).
  litellm    LiteLLM proxy (`litellm[proxy]`, installed on first run into bench/.venv-litellm), offline
             (LITELLM_LOCAL_MODEL_COST_MAP=True) with a master key, one model routed to the same stub.

Measured from this process with an aiohttp client (keep-alive), identical for every target:
  latency    --requests sequential non-streaming chat completions (after a warm-up): p50 / p99; the
             "added" figures are target minus direct-to-stub.
  throughput --requests more at --concurrency in flight: requests/s.
Targets (docs/gateway.md): added p50 ≤ 3 ms, added p99 ≤ 10 ms, ≥ 3× LiteLLM's requests/s. Numbers only:
nothing here is asserted, and tests never time anything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cli.broker import EmbeddedBroker  # noqa: E402
from tests.stack import free_port  # noqa: E402

LITELLM_VENV = ROOT / "bench" / ".venv-litellm"
MASTER_KEY = "sk-bench-master-key"
BODY = orjson.dumps(
    {
        "model": "MODEL",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 32,
    }
)


def body_for(model: str) -> bytes:
    return BODY.replace(b"MODEL", model.encode())


# --------------------------------------------------------------------------------------------- processes


def wait_http(url: str, proc: subprocess.Popen, timeout_s: float, headers: dict | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1, headers=headers).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not up in {timeout_s}s")


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def spawn(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def start_stub(work: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    code = textwrap.dedent(f"""
        import uvicorn
        from cli.demo_upstream import StubConfig, StubUpstream
        app = StubUpstream(StubConfig(name="bench", cached_tokens=4))
        uvicorn.run(app, host="127.0.0.1", port={port}, loop="uvloop", http="httptools",
                    log_level="warning", access_log=False)
    """)
    proc = spawn([sys.executable, "-c", code], dict(os.environ), work / "stub.log")
    wait_http(f"http://127.0.0.1:{port}/_stub/stats", proc, 30)
    return proc, port


def setup_control_plane(home: Path) -> tuple[str, str]:
    """An org with a gateway key, and a prepaid org with a key. Returns (key, prepaid_key)."""
    from controlplane import ApiKeys, Orgs, dispose_engine, get_engine, upgrade
    from controlplane.gateway import Balances

    url = f"sqlite:///{home / 'control.db'}"
    engine = get_engine(url)
    upgrade(engine)
    org = Orgs(engine).create("bench")
    prepaid = Orgs(engine).create("bench-prepaid")
    Balances(engine).top_up(prepaid.id, 10**12)
    key = ApiKeys(engine).create(org.id, "ingest")[1]
    key2 = ApiKeys(engine).create(prepaid.id, "ingest")[1]
    dispose_engine(url)
    return key, key2


def start_gateway(work: Path, stub_port: int, kafka: str) -> tuple[subprocess.Popen, int, str, str]:
    home = work / "home"
    home.mkdir()
    key, key2 = setup_control_plane(home)
    routes = work / "routes.yaml"
    routes.write_text(
        textwrap.dedent(f"""
        upstreams:
          - name: stub
            provider: aws
            region: eu-north-1
            silicon: h100-sxm5
            base_url: http://127.0.0.1:{stub_port}/v1
            models: [llama-3.3-70b-instruct]
            price_in_per_1m: 0.2
            price_out_per_1m: 0.6
        """)
    )
    port = free_port()
    env = {
        **os.environ,
        "JOULESTREAM_HOME": str(home),
        "JOULESTREAM_KAFKA": kafka,
        "JOULESTREAM_TOPIC_PREFIX": "bench.",
    }
    env.pop("JOULESTREAM_DATABASE", None)
    code = f"from cli.gateway import gateway; gateway('127.0.0.1', {port}, {str(routes)!r})"
    proc = spawn([sys.executable, "-c", code], env, work / "gateway.log")
    wait_http(f"http://127.0.0.1:{port}/health", proc, 60)
    return proc, port, key, key2


def ensure_litellm() -> Path:
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    print("installing litellm[proxy] into bench/.venv-litellm (first run only) …", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
    (LITELLM_VENV / ".gitignore").write_text("*\n")
    subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True)
    return exe


def start_litellm(work: Path, stub_port: int) -> tuple[subprocess.Popen, int]:
    exe = ensure_litellm()
    (LITELLM_VENV / ".gitignore").write_text("*\n")
    cfg = work / "litellm.yaml"
    cfg.write_text(
        textwrap.dedent(f"""
        model_list:
          - model_name: llama-3.3-70b-instruct
            litellm_params:
              model: openai/llama-3.3-70b-instruct
              api_base: http://127.0.0.1:{stub_port}/v1
              api_key: sk-stub
        litellm_settings:
          telemetry: false
          drop_params: true
        """)
    )
    port = free_port()
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_MASTER_KEY": MASTER_KEY,
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
        "DISABLE_SCHEMA_UPDATE": "True",
    }
    for k in ("JOULESTREAM_DATABASE", "DATABASE_URL"):
        env.pop(k, None)
    proc = spawn(
        [str(exe), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)],
        env,
        work / "litellm.log",
    )
    wait_http(f"http://127.0.0.1:{port}/health/liveliness", proc, 180)
    return proc, port


# --------------------------------------------------------------------------------------------- load


async def latency(
    session: aiohttp.ClientSession, url: str, headers: dict, body: bytes, n: int
) -> list[float]:
    for _ in range(max(200, n // 10)):  # warm-up
        async with session.post(url, data=body, headers=headers) as r:
            await r.read()
            if r.status != 200:
                raise RuntimeError(f"{url}: HTTP {r.status}: {(await r.read())[:300]!r}")
    out = []
    for _ in range(n):
        t = time.perf_counter()
        async with session.post(url, data=body, headers=headers) as r:
            await r.read()
        out.append(time.perf_counter() - t)
        assert r.status == 200, r.status
    return out


async def throughput(
    session: aiohttp.ClientSession, url: str, headers: dict, body: bytes, n: int, conc: int
) -> float:
    left = n
    errors = 0

    async def worker() -> None:
        nonlocal left, errors
        while left > 0:
            left -= 1
            async with session.post(url, data=body, headers=headers) as r:
                await r.read()
                errors += r.status != 200

    t = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(conc)])
    elapsed = time.perf_counter() - t
    if errors:
        print(f"  ! {errors} non-200 answers from {url}")
    return n / elapsed


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100 * len(s)))] * 1000


async def measure(targets: dict[str, tuple[str, dict, bytes]], n: int, conc: int) -> dict[str, dict]:
    results = {}
    connector = aiohttp.TCPConnector(limit=conc * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        for name, (url, headers, body) in targets.items():
            print(f"  {name}: latency ({n} sequential) …", flush=True)
            lat = await latency(session, url, headers, body, n)
            print(f"  {name}: throughput ({n} at concurrency {conc}) …", flush=True)
            rps = await throughput(session, url, headers, body, n, conc)
            results[name] = {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "rps": rps}
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description="gateway overhead benchmark")
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--skip-litellm", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="jsbench-gw-"))
    procs: list[subprocess.Popen] = []
    broker = EmbeddedBroker(free_port(), log_path=work / "tansu.log").start()
    try:
        stub, stub_port = start_stub(work)
        procs.append(stub)
        gw, gw_port, key, prepaid_key = start_gateway(work, stub_port, broker.bootstrap)
        procs.append(gw)
        ctype = {"Content-Type": "application/json"}
        targets = {
            "direct": (
                f"http://127.0.0.1:{stub_port}/v1/chat/completions",
                ctype,
                body_for("llama-3.3-70b-instruct"),
            ),
            "gateway": (
                f"http://127.0.0.1:{gw_port}/v1/chat/completions",
                {**ctype, "Authorization": f"Bearer {key}"},
                body_for("auto"),
            ),
            "gateway+prepaid": (
                f"http://127.0.0.1:{gw_port}/v1/chat/completions",
                {**ctype, "Authorization": f"Bearer {prepaid_key}"},
                body_for("auto"),
            ),
        }
        if not args.skip_litellm:
            print("starting LiteLLM proxy …", flush=True)
            ll, ll_port = start_litellm(work, stub_port)
            procs.append(ll)
            targets["litellm"] = (
                f"http://127.0.0.1:{ll_port}/v1/chat/completions",
                {**ctype, "Authorization": f"Bearer {MASTER_KEY}"},
                body_for("llama-3.3-70b-instruct"),
            )
        print(f"measuring ({os.cpu_count()} CPUs; client, servers and broker share them) …", flush=True)
        res = asyncio.run(measure(targets, args.requests, args.concurrency))
        import httpx

        health = httpx.get(  # the details (Kafka, spool, receipts) need a key
            f"http://127.0.0.1:{gw_port}/health", headers={"Authorization": f"Bearer {key}"}, timeout=5
        ).json()
    finally:
        for p in reversed(procs):
            stop(p)
        broker.stop()

    d = res["direct"]
    print()
    print(
        f"{'target':<16} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10} {'added p99':>10} {'req/s @' + str(args.concurrency):>12}"
    )
    for name, r in res.items():
        added50 = "" if name == "direct" else f"{r['p50_ms'] - d['p50_ms']:.2f}"
        added99 = "" if name == "direct" else f"{r['p99_ms'] - d['p99_ms']:.2f}"
        print(
            f"{name:<16} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {added50:>10} {added99:>10} {r['rps']:>12.0f}"
        )
    g = res["gateway"]
    print()
    print(
        f"gateway added p50 {g['p50_ms'] - d['p50_ms']:.2f} ms (target ≤ 3), added p99 {g['p99_ms'] - d['p99_ms']:.2f} ms (target ≤ 10)"
    )
    if "litellm" in res:
        ll = res["litellm"]
        print(f"gateway req/s ÷ LiteLLM req/s = {g['rps'] / ll['rps']:.1f}× (target ≥ 3×)")
        print(
            f"LiteLLM added p50 {ll['p50_ms'] - d['p50_ms']:.2f} ms, p99 {ll['p99_ms'] - d['p99_ms']:.2f} ms"
        )
        print(
            f"gateway added p50 is {(ll['p50_ms'] - d['p50_ms']) / max(1e-9, g['p50_ms'] - d['p50_ms']):.1f}× smaller than LiteLLM's"
        )
    print(
        f"gateway after the run: served {health.get('served')}, kafka {health['kafka']['kafka']}, "
        f"sent {health['kafka']['sent']}, spool depth {health['spool']['depth']}, receipts pending {health['receipts_pending']}"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"results": res, "requests": args.requests, "concurrency": args.concurrency}, indent=2)
        )


if __name__ == "__main__":
    main()
