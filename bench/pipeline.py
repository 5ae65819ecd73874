"""End-to-end pipeline throughput: events produced → queryable in ClickHouse, one worker.

    .venv/bin/python bench/pipeline.py [--events 200000]

Runs, in one go, on a fresh embedded broker:
  1. joulestream: `joulestream worker` (enrich + sink agents, chdb warehouse) in a subprocess; this
     process produces N events to usage.raw.v1 and polls until all N are live in the warehouse.
  2. baseline: a plain aiokafka consumer in a subprocess that inserts the same events into a
     ClickHouse table with clickhouse-connect — no Faust, no validation, no enrichment, no ledger.
Prints events/s for both and the ratio. Nothing here is asserted: numbers only.

    .venv/bin/python bench/pipeline.py --workers 1,2,4 [--partitions 4] [--events 100000]

Scale-out (docs/deployment.md): for each N, on fresh 4-partition topics, N enrich workers
(`joulestream worker --stage enrich`, one consumer group) and the one sink worker that holds the embedded
warehouse (`--stage sink`); prints events/s end to end and CPU µs per event of each kind of process. On a
machine with fewer cores than processes the events/s curve flattens; CPU per event is what carries over to
bigger machines. (With a ClickHouse server the sink stage scales the same way; not measurable here.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cli.broker import EmbeddedBroker  # noqa: E402
from core.kafka import OutRecord, ensure_topics, producer, send_many  # noqa: E402
from core.settings import load_settings  # noqa: E402
from pipelines.simulate import generate  # noqa: E402
from tests.stack import free_port, last_assignment  # noqa: E402
from warehouse.runtime import TOKEN_HEADER, RuntimeInfo  # noqa: E402


async def produce(settings, messages: list[OutRecord], topic: str) -> float:
    prod = producer(settings)
    await prod.start()
    t0 = time.perf_counter()
    for i in range(0, len(messages), 10_000):
        await send_many(prod, topic, messages[i : i + 10_000])
    await prod.stop()
    return time.perf_counter() - t0


def _cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of a process's threads, summed by thread name (digits dropped: chdb's pools number them)."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip().rstrip("0123456789_-") or "?"
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        out[comm] = out.get(comm, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def _cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    snap = {name: _cpu_s(pid) for name, pid in pids.items()}
    snap["bench (producer, polling)"] = sum(os.times()[:2])
    return snap


def reference_loop_s() -> float:
    """Seconds for a fixed pure-Python loop (10M additions, best of 3): how fast this machine's cores are at
    the time of the run. Events/s figures follow the machine (the README's table shows two sessions of this VM
    ~2× apart); the ratio to the baseline, measured in the same run, moves far less."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        s = 0
        for i in range(10_000_000):
            s += i
        best = min(best, time.perf_counter() - t0)
    return best


def wait_runtime(home: Path, holder: subprocess.Popen, procs: list[subprocess.Popen]) -> RuntimeInfo:
    """The runtime address of `holder` (the process holding the warehouse) once it has published it."""
    while True:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"a worker exited; logs in {home}")
        time.sleep(0.2)
        try:
            info = RuntimeInfo.model_validate_json((home / "runtime.json").read_text())
        except (FileNotFoundError, ValueError):
            continue
        if info.pid == holder.pid:
            return info


def warm_up(settings, live_events) -> None:
    """One event through, so the consumer groups have joined before the clock starts."""
    warm = generate(1, duplicate_rate=0, revision_rate=0, invalid_rate=0, seed=999)
    asyncio.run(produce(settings, warm.messages, settings.raw_topic))
    while True:
        try:
            if live_events() >= 1:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)


def run_pipeline(bootstrap: str, messages: list[OutRecord], home: Path, broker_pid: int) -> dict:
    env = {
        **os.environ,
        "JOULESTREAM_HOME": str(home),
        "JOULESTREAM_KAFKA": bootstrap,
        "JOULESTREAM_TOPIC_PREFIX": "bench.",
    }
    env.pop("JOULESTREAM_CLICKHOUSE", None)
    settings = load_settings(env)
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = open(home / "worker.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "worker", "--http-port", str(port), "--loglevel", "WARNING"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        info = wait_runtime(home, proc, [proc])
        # one client for every poll: a new httpx.Client per call builds an SSL context each time, which
        # cost the measuring process a quarter of a core — taken from the worker it measures
        http = httpx.Client(base_url=info.url, headers={TOKEN_HEADER: info.token}, timeout=30)

        def stats() -> dict:
            return http.get("/internal/v1/stats").json()

        def live_events() -> int:
            return http.get("/internal/v1/totals").json()["totals"]["events"]

        warm_up(settings, live_events)
        n = len(messages)
        pids = {"worker (sink, HTTP)": proc.pid, "broker (Tansu)": broker_pid}
        for child in _children(
            proc.pid
        ):  # the enrich child (multiprocessing spawn), not its resource tracker
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                pids["worker child (enrich)"] = child
        cpu0 = _cpu_snapshot(pids)
        threads0 = _thread_cpu(proc.pid)
        t0 = time.perf_counter()
        produce_s = asyncio.run(produce(settings, messages, settings.raw_topic))
        timeline: list[tuple[float, int, int]] = []
        while True:
            s = stats()
            enriched, stored = s.get("enrich", {}).get("consumed", 0), s.get("sink", {}).get("stored", 0)
            timeline.append((time.perf_counter() - t0, enriched, stored))
            if stored >= n + 1:
                break
            time.sleep(0.05)
        while live_events() < n + 1:
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        cpu1 = _cpu_snapshot(pids)
        cpu = {name: cpu1[name] - cpu0[name] for name in cpu1}
        final = stats()
        batches = {stage: final.get(stage, {}).get("batches", 0) for stage in ("enrich", "sink")}
        threads1 = _thread_cpu(proc.pid)
        threads = {
            k: v - threads0.get(k, 0.0) for k, v in threads1.items() if v - threads0.get(k, 0.0) >= 0.05
        }
        rss = _rss_mb(proc.pid)
        return {
            "elapsed_s": elapsed,
            "produce_s": produce_s,
            "events_per_s": n / elapsed,
            "worker_rss_mb": rss,
            "timeline": timeline,
            "cpu_s": cpu,
            "batches": batches,
            "worker_threads_s": dict(sorted(threads.items(), key=lambda kv: -kv[1])),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return float("nan")


# --- baseline ------------------------------------------------------------------------------------
BASELINE_DDL = """CREATE TABLE IF NOT EXISTS baseline_events (
 event_id String, org_id String, project_id String, provider String, model String,
 bucket_start DateTime64(3, 'UTC'), input_tokens_uncached UInt64, input_tokens_cached UInt64,
 input_tokens_cache_creation UInt64, output_tokens UInt64, request_count UInt64
) ENGINE = MergeTree ORDER BY (org_id, bucket_start, event_id)"""
COLS = [
    "event_id",
    "org_id",
    "project_id",
    "provider",
    "model",
    "bucket_start",
    "input_tokens_uncached",
    "input_tokens_cached",
    "input_tokens_cache_creation",
    "output_tokens",
    "request_count",
]


def baseline_consumer(bootstrap: str, topic: str, n: int, chdb_path: str, ready_file: str) -> None:
    """Plain aiokafka consume + clickhouse-connect columnar insert, committing after each insert."""
    from datetime import datetime

    import clickhouse_connect
    import orjson
    from aiokafka import AIOKafkaConsumer

    client = clickhouse_connect.get_client(dsn=f"chdb://{chdb_path}")
    client.command(BASELINE_DDL)

    async def consume() -> None:
        c = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=f"baseline-{uuid.uuid4().hex}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            max_poll_records=5000,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )
        await c.start()
        Path(ready_file).write_text("ready")
        stored = 0
        while stored < n:
            polled = await c.getmany(timeout_ms=100, max_records=5000)
            rows = [orjson.loads(m.value) for msgs in polled.values() for m in msgs]
            if not rows:
                continue
            cols = [[r.get(k, 0) for r in rows] for k in COLS]
            cols[5] = [datetime.fromisoformat(v) for v in cols[5]]
            client.insert("baseline_events", cols, column_names=COLS, column_oriented=True)
            await c.commit()
            stored += len(rows)
        await c.stop()

    asyncio.run(consume())
    assert client.command("SELECT count() FROM baseline_events") >= n


def run_baseline(bootstrap: str, messages: list[OutRecord], home: Path) -> dict:
    settings = load_settings({"JOULESTREAM_KAFKA": bootstrap, "JOULESTREAM_HOME": str(home)})
    topic = "baseline.raw"
    asyncio.run(
        ensure_topics(
            load_settings({"JOULESTREAM_KAFKA": bootstrap, "JOULESTREAM_TOPIC_PREFIX": "baseline."})
        )
    )
    ready = home / "baseline.ready"
    proc = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--baseline-consumer",
            bootstrap,
            topic,
            str(len(messages)),
            str(home / "baseline-chdb"),
            str(ready),
        ],
        cwd=ROOT,
    )
    while not ready.exists():
        time.sleep(0.05)
    time.sleep(3.5)  # let the consumer group settle (Tansu holds JoinGroup for half the session timeout)
    t0 = time.perf_counter()
    produce_s = asyncio.run(produce(settings, messages, topic))
    proc.wait()
    elapsed = time.perf_counter() - t0
    return {"elapsed_s": elapsed, "produce_s": produce_s, "events_per_s": len(messages) / elapsed}


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli", *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def run_scaled(
    bootstrap: str, messages: list[OutRecord], home: Path, broker_pid: int, workers: int, partitions: int
) -> dict:
    """N enrich workers + the sink worker on `partitions`-partition topics: events/s and CPU per event."""
    env = {
        **os.environ,
        "JOULESTREAM_HOME": str(home),
        "JOULESTREAM_KAFKA": bootstrap,
        "JOULESTREAM_TOPIC_PREFIX": f"scale{workers}.",
        "JOULESTREAM_KAFKA_PARTITIONS": str(partitions),
    }
    env.pop("JOULESTREAM_CLICKHOUSE", None)
    settings = load_settings(env)
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    sink = _spawn(
        ["worker", "--stage", "sink", "--http-port", str(port), "--loglevel", "WARNING"],
        env,
        home / "sink.log",
    )
    enrich = [
        _spawn(["worker", "--stage", "enrich", "--no-migrate"], env, home / f"enrich{i}.log")
        for i in range(workers)
    ]
    procs = [sink, *enrich]
    try:
        info = wait_runtime(home, sink, procs)
        http = httpx.Client(base_url=info.url, headers={TOKEN_HEADER: info.token}, timeout=30)

        def live_events() -> int:
            return http.get("/internal/v1/totals").json()["totals"]["events"]

        def shared() -> bool:
            parts = [last_assignment(home / f"enrich{i}.log", "enrich") for i in range(workers)]
            return all(parts) and sorted(p for ps in parts if ps for p in ps) == list(range(partitions))

        while not shared():  # every worker has its partitions before the clock starts
            time.sleep(0.2)
        warm_up(settings, live_events)
        pids = {"sink": sink.pid, "broker (Tansu)": broker_pid} | {
            f"enrich{i}": p.pid for i, p in enumerate(enrich)
        }
        cpu0 = _cpu_snapshot(pids)
        t0 = time.perf_counter()
        asyncio.run(produce(settings, messages, settings.raw_topic))
        n = len(messages)
        while live_events() < n + 1:
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        cpu1 = _cpu_snapshot(pids)
        cpu = {name: cpu1[name] - cpu0[name] for name in cpu1}
        enrich_rss = [_rss_mb(p.pid) for p in enrich]
        return {
            "workers": workers,
            "events_per_s": n / elapsed,
            "elapsed_s": elapsed,
            "enrich_us": 1e6 * sum(v for k, v in cpu.items() if k.startswith("enrich")) / n,
            "sink_us": 1e6 * cpu["sink"] / n,
            "broker_us": 1e6 * cpu["broker (Tansu)"] / n,
            "total_us": 1e6 * sum(cpu.values()) / n,
            "enrich_rss_mb": max(enrich_rss),
            "sink_rss_mb": _rss_mb(sink.pid),
        }
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def main_scaled(args: argparse.Namespace) -> None:
    counts = [int(x) for x in args.workers.split(",")]
    print(f"generating {args.events:,} events …", flush=True)
    traffic = generate(args.events, duplicate_rate=0, revision_rate=0, invalid_rate=0, seed=1)
    rows = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedBroker(free_port(), log_path=Path(tmp) / "tansu.log") as b,
    ):
        for n in counts:
            print(f"{n} enrich worker(s) + 1 sink on {args.partitions} partitions …", flush=True)
            rows.append(
                run_scaled(b.bootstrap, traffic.messages, Path(tmp) / f"w{n}", b.proc.pid, n, args.partitions)
            )
    print(f"\n{os.cpu_count()} cores; CPU µs per event (all processes of that kind together)")
    print(
        f"{'enrich workers':>15}{'events/s':>10}{'vs 1':>7}{'enrich µs':>11}{'sink µs':>9}{'broker µs':>11}"
        f"{'total µs':>10}{'enrich RSS MB':>15}{'sink RSS MB':>13}"
    )
    base = rows[0]["events_per_s"]
    for r in rows:
        print(
            f"{r['workers']:>15}{r['events_per_s']:>10,.0f}{r['events_per_s'] / base:>7.2f}{r['enrich_us']:>11.1f}"
            f"{r['sink_us']:>9.1f}{r['broker_us']:>11.1f}{r['total_us']:>10.1f}{r['enrich_rss_mb']:>15.0f}"
            f"{r['sink_rss_mb']:>13.0f}"
        )
    print(
        f"machine reference: pure-Python loop of 10M additions {reference_loop_s():.2f} s (lower is faster)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--timeline", action="store_true", help="print enrich/sink progress every second")
    ap.add_argument("--workers", help="scale-out: comma-separated enrich worker counts, e.g. 1,2,4")
    ap.add_argument("--partitions", type=int, default=4, help="partitions of the topics (with --workers)")
    args = ap.parse_args()
    if args.workers:
        main_scaled(args)
        return
    print(f"generating {args.events:,} events …", flush=True)
    traffic = generate(args.events, duplicate_rate=0, revision_rate=0, invalid_rate=0, seed=1)
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedBroker(free_port(), log_path=Path(tmp) / "tansu.log") as b,
    ):
        home = Path(tmp)
        print("joulestream pipeline …", flush=True)
        pipe = run_pipeline(b.bootstrap, traffic.messages, home / "pipeline", b.proc.pid)
        print("baseline (aiokafka + clickhouse-connect, no Faust, no enrichment) …", flush=True)
        base = run_baseline(b.bootstrap, traffic.messages, home)
    print()
    print(f"{'':<28}{'events/s':>12}{'elapsed s':>12}{'produce s':>12}")
    print(
        f"{'joulestream end to end':<28}{pipe['events_per_s']:>12,.0f}{pipe['elapsed_s']:>12.2f}{pipe['produce_s']:>12.2f}"
    )
    print(
        f"{'baseline':<28}{base['events_per_s']:>12,.0f}{base['elapsed_s']:>12.2f}{base['produce_s']:>12.2f}"
    )
    print(f"ratio joulestream / baseline: {pipe['events_per_s'] / base['events_per_s']:.2f}")
    print(f"worker peak RSS: {pipe['worker_rss_mb']:.0f} MB")
    print(
        f"machine reference: pure-Python loop of 10M additions {reference_loop_s():.2f} s (lower is faster)"
    )
    print(
        f"\nCPU seconds while the {args.events:,} events went through (2 cores = {2 * pipe['elapsed_s']:.1f} s):"
    )
    for name, secs in pipe["cpu_s"].items():
        print(f"  {name:<28}{secs:>7.1f} s   {1e6 * secs / args.events:>6.1f} µs/event")
    b = pipe["batches"]
    print(
        f"batches: enrich {b['enrich']:,} (mean {args.events / max(1, b['enrich']):,.0f} events), "
        f"sink {b['sink']:,} (mean {args.events / max(1, b['sink']):,.0f} events)"
    )
    print("  worker threads: " + ", ".join(f"{k} {v:.1f} s" for k, v in pipe["worker_threads_s"].items()))
    if args.timeline:
        print("\n   t s   enrich consumed   sink stored")
        shown = -1.0
        for t, enriched, stored in pipe["timeline"]:
            if t - shown >= 1.0:
                print(f"{t:6.1f}{enriched:>18,}{stored:>14,}")
                shown = t


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--baseline-consumer":
        baseline_consumer(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6])
    else:
        main()
