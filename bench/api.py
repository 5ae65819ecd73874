"""Dashboard API latency and export throughput over a large warehouse, beside a clickhouse-connect baseline.

    .venv/bin/python bench/api.py [--events 10000000] [--workdir /tmp/joulestream-bench-api] [--samples 100]

1. Loads `--events` synthetic events (bench/load_warehouse.py, in a subprocess) into a chdb warehouse under
   `--workdir`, unless it already holds that many (delete the folder to reload).
2. Control plane (SQLite): the main org `bench-org-0` with its 1000 projects (names for the export) and a
   read key.
3. The API in its own process (uvicorn, loopback; `create_app` with the warehouse client factory, i.e. the
   production wiring): a CSV export of the main org's last 90 days (~1M rows) streamed by an HTTP client —
   rows/s and the server's peak RSS (VmHWM from /proc; the chdb engine lives in that process) — then the
   median and p99 latency of GET /telemetry/summary (default: last 30 days, whole org) and
   GET /telemetry/events page 1 and page 500 (page_size 50); then the reporting reads (issue 14): the
   KPI cache GET /metrics/dashboard-summary (after one POST …/refresh, timed), GET /metrics/timeseries
   `last=1y&granularity=day` (whole org, and grouped by model), and one annual report export
   (`years=<last year>&years=<this year>&granularity=monthly`, CSV).
4. The baseline, in a fresh process: the same figures straight from clickhouse-connect — the same warehouse
   queries (warehouse/telemetry.py) called on a client, no HTTP/FastAPI, and the export as one CSV
   `raw_stream` of the whole window.

Targets (issue 3): summary p99 < 150 ms, export >= 300,000 rows/s with peak RSS < 300 MB. Issue 14:
dashboard-summary p99 < 20 ms, timeseries 1y/day p99 < 150 ms (both at 10M events). The events span `--days`
(365) days ending today. Nothing is
asserted: numbers only. The machine's load average is printed with them (other work skews timings).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# this file is bench/api.py: keep its folder off sys.path, or `import api` would import it, not the package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

ORG = "bench-org-0"
DB = "bench"


def _env(workdir: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "JOULESTREAM_HOME": str(workdir / "home"),
        "JOULESTREAM_DATABASE": f"sqlite:///{workdir / 'control.db'}",
        "JOULESTREAM_CLICKHOUSE": f"chdb://{workdir / 'warehouse'}",
        "JOULESTREAM_CH_DATABASE": DB,
        "PYTHONPATH": str(ROOT),
    }
    for k in ("JOULESTREAM_JWT_JWKS_URL", "JOULESTREAM_KAFKA"):
        env.pop(k, None)
    return env


def _proc_mem(pid: int) -> dict[str, int]:
    """VmHWM / VmRSS / RssAnon / RssFile of a process, MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[key] = int(line.split()[1]) // 1024
    return out


class _MemSampler:
    """Peak VmRSS / RssAnon / RssFile of a process, sampled every 10 ms from a thread while in the block."""

    def __init__(self, pid: int) -> None:
        import threading

        self.pid = pid
        self.peak = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                now = _proc_mem(self.pid)
            except FileNotFoundError:  # the process is gone
                return
            for key in self.peak:
                self.peak[key] = max(self.peak[key], now[key])
            self._stop.wait(0.01)

    def __enter__(self) -> _MemSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def worker_floor() -> None:
    """The embedded engine's own footprint: a bare process that imports chdb, opens one client on an empty
    warehouse and runs one query — what any process holding the embedded warehouse pays before doing work."""
    import tempfile

    import chdb
    from clickhouse_connect import get_client

    with tempfile.TemporaryDirectory() as tmp:
        client = get_client(dsn=f"chdb://{tmp}/wh")
        client.query("SELECT 1")
        library = max(Path(chdb.__file__).parent.rglob("*.so*"), key=lambda f: f.stat().st_size)
        print(json.dumps({**_proc_mem(os.getpid()), "library_mb": library.stat().st_size // 10**6}))
        client.close()


def _pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


def _stats(samples: list[float]) -> dict[str, float]:
    return {
        "median_ms": statistics.median(samples) * 1000,
        "p99_ms": _pct(samples, 99) * 1000,
        "n": len(samples),
    }


# --------------------------------------------------------------------------------------------- workers


def worker_count(workdir: Path) -> None:
    from clickhouse_connect import get_client

    client = get_client(dsn=f"chdb://{workdir / 'warehouse'}")
    try:
        n = client.command(f"SELECT count() FROM {DB}.usage_events")
    except Exception:  # noqa: BLE001 - no database yet
        n = 0
    print(json.dumps({"events": int(n)}))


def worker_serve(port: int) -> None:
    import uvicorn

    from api.app import create_app
    from core.settings import load_settings
    from warehouse.client import get_client

    settings = load_settings().replace(kpi_refresh_s=0)  # no scheduled KPI refresh under the timings
    app = create_app(settings, warehouse_client_factory=lambda: get_client(settings))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def worker_baseline(workdir: Path, samples: int, export_start: str, export_end: str) -> None:
    """Straight from clickhouse-connect, in this (fresh) process."""
    from core.settings import load_settings
    from warehouse import telemetry as t
    from warehouse.client import get_client
    from warehouse.export import export_query

    client = get_client(load_settings())
    pid = os.getpid()
    today = datetime.now(UTC).date()
    out: dict = {"mem_start": _proc_mem(pid)}

    # export first (a fresh process, like the server's export): one raw CSV stream of the whole window
    client.query("SELECT 1")
    names = {f"{ORG}-p{p:04d}": f"Project {p:04d}" for p in range(1000)}
    scope = t.Scope(ORG, date.fromisoformat(export_start), date.fromisoformat(export_end))
    sql, params = export_query(scope, names)
    before = _proc_mem(pid)
    t0 = time.perf_counter()
    raw = client.raw_stream(sql, parameters=params, fmt="CSV")
    rows = nbytes = 0
    while chunk := raw.read(1 << 20):
        rows += chunk.count(b"\n")
        nbytes += len(chunk)
    raw.close()
    el = time.perf_counter() - t0
    out["export"] = {"rows": rows, "bytes": nbytes, "seconds": el, "rows_per_s": rows / el}
    out["export_mem_before"], out["export_mem_after"] = before, _proc_mem(pid)

    def timed(fn, *args) -> list[float]:
        fn(client, *args)  # warm-up
        res = []
        for _ in range(samples):
            t1 = time.perf_counter()
            fn(client, *args)
            res.append(time.perf_counter() - t1)
        return res

    summary_scope = t.Scope(ORG, today - timedelta(days=30), today)
    out["summary"] = _stats(timed(t.daily_by_model, summary_scope))
    out["events_p1"] = _stats(timed(t.events_page, t.Scope(ORG), 0, 50))
    out["events_p500"] = _stats(timed(t.events_page, t.Scope(ORG), 499 * 50, 50))

    # reporting: the same warehouse reads, no HTTP; the KPI baseline is the control-plane lookup itself
    from controlplane import get_engine
    from controlplane.kpi_cache import KpiCache
    from core.windows import last_window, year_windows
    from warehouse import reporting

    cache = KpiCache(get_engine(load_settings().database))
    out["kpi"] = _stats(timed(lambda _c: cache.all(ORG)))
    now = datetime.now(UTC)
    q = reporting.Query(ORG, last_window("1y", now), "day")
    out["series_1y"] = _stats(timed(reporting.sums, q))
    qm = reporting.Query(ORG, q.window, "day", ("model",))
    out["series_1y_model"] = _stats(timed(reporting.sums, qm))
    t0 = time.perf_counter()
    rows = sum(
        len(reporting.report_sums(client, ORG, w, "month", None, False)) for w in year_windows(_years())
    )
    out["report"] = {"seconds": time.perf_counter() - t0, "rows": rows}
    print(json.dumps(out))


# --------------------------------------------------------------------------------------------- driver


def _run_json(args: list[str], env: dict[str, str]) -> dict:
    res = subprocess.run(
        [sys.executable, __file__, *args], env=env, capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        raise RuntimeError(f"{args[0]} failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _control_plane(env: dict[str, str]) -> str:
    """The main org (id = the warehouse's org id), its projects, and a read key."""
    from sqlalchemy import delete, insert

    from controlplane import ApiKeys, get_engine, upgrade
    from controlplane.schema import api_keys, organizations, projects

    engine = get_engine(env["JOULESTREAM_DATABASE"])
    upgrade(engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(delete(api_keys).where(api_keys.c.org_id == ORG))
        conn.execute(delete(projects).where(projects.c.org_id == ORG))
        conn.execute(delete(organizations).where(organizations.c.id == ORG))
        conn.execute(
            insert(organizations).values(
                id=ORG, slug="bench", name="Bench", plan_tier="free", stripe_customer_id=None, created_at=now
            )
        )
        conn.execute(
            insert(projects),
            [
                {
                    "id": f"{ORG}-p{p:04d}",
                    "org_id": ORG,
                    "name": f"Project {p:04d}",
                    "is_default": p == 0,
                    "created_at": now,
                    "deleted_at": None,
                }
                for p in range(1000)
            ],
        )
    key = ApiKeys(engine).create(ORG, ["read"], name="bench")[1]
    engine.dispose()
    return key


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _export(http: object, start: str, end: str) -> dict:
    """One CSV export streamed by the client: rows/s and time to first byte."""
    t0 = time.perf_counter()
    rows = nbytes = 0
    first_byte = None
    with http.stream(  # type: ignore[attr-defined]
        "GET", "/api/v1/export/telemetry", params={"format": "csv", "start_date": start, "end_date": end}
    ) as r:
        r.raise_for_status()
        for chunk in r.iter_raw():
            if first_byte is None:
                first_byte = time.perf_counter() - t0
            rows += chunk.count(b"\n")
            nbytes += len(chunk)
    el = time.perf_counter() - t0
    rows -= 1  # header
    return {"rows": rows, "bytes": nbytes, "seconds": el, "rows_per_s": rows / el, "first_byte_s": first_byte}


def _years() -> list[int]:
    today = datetime.now(UTC).date()
    return [today.year - 1, today.year]


def _report_export(http: object) -> dict:
    """One annual report (the last two calendar years, monthly, CSV), timed end to end."""
    params = [("years", y) for y in _years()] + [("granularity", "monthly"), ("format", "csv")]
    t0 = time.perf_counter()
    nbytes = rows = 0
    with http.stream("GET", "/api/v1/report/export", params=params) as r:  # type: ignore[attr-defined]
        r.raise_for_status()
        for chunk in r.iter_bytes():
            nbytes += len(chunk)
            rows += chunk.count(b"\n")
    return {"seconds": time.perf_counter() - t0, "rows": rows - 1, "bytes": nbytes}


def bench_api(env: dict[str, str], key: str, samples: int, export_start: str, export_end: str) -> dict:
    import httpx

    port = _free_port()
    log = open(Path(env["JOULESTREAM_HOME"]) / "api-bench-server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, __file__, "--worker", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    out: dict = {}
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code in (200, 503):
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("API server did not start; see api-bench-server.log")
            time.sleep(0.2)
        h = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base, headers=h, timeout=300) as http:
            out["mem_idle"] = _proc_mem(proc.pid)
            http.get("/api/v1/telemetry/models", params={"start_date": date.today().isoformat()})  # warm-up
            # a short window first, then the full one: the peak must not grow with the row count
            short_start = (date.fromisoformat(export_end) - timedelta(days=10)).isoformat()
            for name, start in (("export_short", short_start), ("export", export_start)):
                before = _proc_mem(proc.pid)
                with _MemSampler(proc.pid) as mem:
                    out[name] = _export(http, start, export_end)
                out[name]["mem_before"], out[name]["mem_peak"] = before, mem.peak

            def timed(path: str, params: dict) -> list[float]:
                http.get(path, params=params).raise_for_status()  # warm-up
                res = []
                for _ in range(samples):
                    t1 = time.perf_counter()
                    resp = http.get(path, params=params)
                    res.append(time.perf_counter() - t1)
                    resp.raise_for_status()
                return res

            out["summary"] = _stats(timed("/api/v1/telemetry/summary", {}))
            ev = "/api/v1/telemetry/events"
            out["events_p1"] = _stats(timed(ev, {"page": 1, "page_size": 50}))
            out["events_p500"] = _stats(timed(ev, {"page": 500, "page_size": 50}))
            out["events_total"] = http.get(ev, params={"page_size": 1}).json()["pagination"]["total_items"]
            # reporting (issue 14): the KPI cache (the first read computes it), a year of daily points, and an
            # annual report of the years the data covers
            t0 = time.perf_counter()
            http.post("/api/v1/metrics/dashboard-summary/refresh").raise_for_status()
            out["kpi_refresh_s"] = time.perf_counter() - t0
            out["kpi"] = _stats(timed("/api/v1/metrics/dashboard-summary", {}))
            series = {"last": "1y", "granularity": "day"}
            out["series_1y"] = _stats(timed("/api/v1/metrics/timeseries", series))
            out["series_1y_model"] = _stats(
                timed("/api/v1/metrics/timeseries", {**series, "group_by": "model"})
            )
            out["report"] = _report_export(http)
            out["mem_end"] = _proc_mem(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/joulestream-bench-api"))
    ap.add_argument("--samples", type=int, default=100, help="requests per latency figure")
    ap.add_argument("--export-days", type=int, default=90, help="export window (days, max 90)")
    ap.add_argument("--days", type=int, default=365, help="days the loaded events span (ending today)")
    ap.add_argument("--worker", choices=["count", "serve", "baseline", "floor"], help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--export-start", help=argparse.SUPPRESS)
    ap.add_argument("--export-end", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker == "count":
        return worker_count(args.workdir)
    if args.worker == "floor":
        return worker_floor()
    if args.worker == "serve":
        return worker_serve(args.port)
    if args.worker == "baseline":
        return worker_baseline(args.workdir, args.samples, args.export_start, args.export_end)

    workdir: Path = args.workdir
    (workdir / "home").mkdir(parents=True, exist_ok=True)
    env = _env(workdir)
    have = _run_json(["--worker", "count", "--workdir", str(workdir)], env)["events"]
    if have < args.events:
        if have:
            raise SystemExit(f"{workdir} holds {have:,} events (< {args.events:,}): delete it to reload")
        print(f"loading {args.events:,} events into {workdir / 'warehouse'} (bench/load_warehouse.py) …")
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "bench" / "load_warehouse.py"),
                "--dsn",
                f"chdb://{workdir / 'warehouse'}",
                "--database",
                DB,
                "--events",
                str(args.events),
                "--days",
                str(args.days),
            ],
            env=env,
            check=True,
        )
        have = args.events
    key = _control_plane(env)
    today = datetime.now(UTC).date()
    export_end = today.isoformat()
    export_start = (today - timedelta(days=min(90, args.export_days))).isoformat()

    print(f"warehouse: {have:,} events; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    api = bench_api(env, key, args.samples, export_start, export_end)
    base = _run_json(
        [
            "--worker",
            "baseline",
            "--workdir",
            str(workdir),
            "--samples",
            str(args.samples),
            "--export-start",
            export_start,
            "--export-end",
            export_end,
        ],
        env,
    )
    floor = _run_json(["--worker", "floor"], env)
    _report(api, base, floor, args.samples, os.getloadavg()[0])


def _report(api: dict, base: dict, floor: dict, samples: int, load: float) -> None:
    def lat(name: str) -> str:
        a, b = api[name], base[name]
        return (
            f"  {name:<12} median {a['median_ms']:7.1f} ms   p99 {a['p99_ms']:7.1f} ms"
            f"   | baseline median {b['median_ms']:7.1f} ms   p99 {b['p99_ms']:7.1f} ms"
        )

    ea, eb = api["export"], base["export"]
    print()
    print(f"latency ({samples} sequential requests each; events total {api['events_total']:,})")
    print(lat("summary") + "   [target p99 < 150 ms]")
    print(lat("events_p1"))
    print(lat("events_p500"))
    print(lat("kpi") + "   [target p99 < 20 ms; baseline: the control-plane lookup]")
    print(lat("series_1y") + "   [last=1y&granularity=day; target p99 < 150 ms]")
    print(lat("series_1y_model") + "   [the same, group_by=model]")
    ra, rb = api["report"], base["report"]
    print(
        f"  report export years={'&years='.join(map(str, _years()))} monthly CSV: {ra['seconds'] * 1000:.0f} ms "
        f"({ra['rows']} rows) | baseline {rb['seconds'] * 1000:.0f} ms   ratio {ra['seconds'] / rb['seconds']:.2f}"
        f"   (KPI refresh of every window, on request: {api['kpi_refresh_s'] * 1000:.0f} ms)"
    )
    print()
    print(f"CSV export, {ea['rows']:,} rows ({ea['bytes'] / 2**20:.0f} MiB)")
    print(
        f"  API      {ea['rows_per_s']:>10,.0f} rows/s ({ea['seconds']:.2f} s, first byte "
        f"{ea['first_byte_s'] * 1000:.0f} ms)   [target >= 300,000 rows/s]"
    )
    print(
        f"  baseline {eb['rows_per_s']:>10,.0f} rows/s ({eb['seconds']:.2f} s, one raw_stream, {eb['rows']:,} rows)"
        f"   ratio API/baseline {ea['rows_per_s'] / eb['rows_per_s']:.2f}"
    )
    print()
    print(
        "API server memory (MiB; RSS = anonymous + file-backed pages, sampled every 10 ms)   [target < 300 MB]"
    )
    print(
        f"  engine floor (bare process: chdb + one client + SELECT 1): RSS {floor['VmRSS']} "
        f"= anonymous {floor['RssAnon']} + file-backed {floor['RssFile']} (chdb's {floor['library_mb']} MB library)"
    )
    print(f"  server idle: RSS {api['mem_idle']['VmRSS']}, anonymous {api['mem_idle']['RssAnon']}")
    for name in ("export_short", "export"):
        e = api[name]
        pk, bf = e["mem_peak"], e["mem_before"]
        print(
            f"  during the export of {e['rows']:>9,} rows: peak RSS {pk['VmRSS']} (before {bf['VmRSS']}), "
            f"peak anonymous {pk['RssAnon']} (before {bf['RssAnon']}), peak file-backed {pk['RssFile']}"
        )
    bb, ba = base["export_mem_before"], base["export_mem_after"]
    print(
        f"  baseline process: peak RSS {ba['VmHWM']} after, {bb['VmHWM']} before; "
        f"anonymous {bb['RssAnon']} -> {ba['RssAnon']}"
    )
    print(f"  (load average at the end: {load:.1f})")


if __name__ == "__main__":
    main()
