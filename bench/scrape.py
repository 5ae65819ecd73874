"""GPU telemetry scraper cost per target, against a baseline of the bare work in the same run.

    .venv/bin/python bench/scrape.py [--targets 40] [--rounds 5] [--gpus 8]

What runs (on loopback): one stub server, in a child process so its CPU is not counted, (tests/telemetry/stubs.py) plays a DCGM exporter
with --gpus GPUs — every default-counters.csv field per GPU (~20 series each, the Kubernetes pod labels on), so
the text is the size a real exporter serves — and a vLLM server with 2 models and its histograms. --targets
targets on a SQLite control plane each select one GPU pair of that exporter and the server. Every round the
counters advance and `TelemetryScraper.run_once` scrapes every target (HTTP GET ×2, prometheus_client parse,
counter state and hourly increases in SQL, attribution, events to a no-op producer); rounds cross an hour so
publishing is included.

Baseline: the same HTTP GETs and the same prometheus_client parse per target, without the state, the
attribution or the publication — what any scraper built on the same parser must do when it reads each
target's endpoints. Two configurations: every target with its own exporter and server URLs (the scraper
does all of the baseline's work and more), and one exporter and server shared by every target (one node,
several deployments: the scraper reads a URL once per round, the baseline per target). Printed: wall and CPU
ms per target per round for both, and the ratio. Numbers only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from controlplane import Orgs, get_engine, upgrade  # noqa: E402
from controlplane.gpu_targets import GpuTargetIn, GpuTargets  # noqa: E402
from core.methodology import load_factor_set  # noqa: E402
from core.settings import load_settings  # noqa: E402
from pipelines.telemetry.scheduler import TelemetryScraper  # noqa: E402
from tests.telemetry import stubs  # noqa: E402
from tests.telemetry.stubs import Gpu, Model, TelemetryStub  # noqa: E402

# dcgm-exporter etc/default-counters.csv, besides the two the scraper reads (gauges and counters)
DEFAULT_FIELDS = [
    "DCGM_FI_DEV_MEM_CLOCK", "DCGM_FI_DEV_MEMORY_TEMP", "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
    "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_MEM_COPY_UTIL", "DCGM_FI_DEV_ENC_UTIL", "DCGM_FI_DEV_DEC_UTIL",
    "DCGM_FI_DEV_XID_ERRORS", "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
    "DCGM_FI_DEV_VGPU_LICENSE_STATUS", "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "DCGM_FI_DEV_ROW_REMAP_FAILURE", "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "DCGM_FI_PROF_DRAM_ACTIVE", "DCGM_FI_PROF_PCIE_TX_BYTES",
    "DCGM_FI_PROF_PCIE_RX_BYTES",
]  # fmt: skip
VLLM_HISTOGRAMS = ["vllm:time_to_first_token_seconds", "vllm:e2e_request_latency_seconds",
                   "vllm:request_prompt_tokens", "vllm:request_generation_tokens", "vllm:iteration_tokens_total"]  # fmt: skip
BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]


def realistic_dcgm(gpus: list[Gpu]) -> str:
    extra = []
    for f in DEFAULT_FIELDS:
        extra += [f"# HELP {f} {f}.", f"# TYPE {f} gauge", *(f"{f}{{{g.labels()}}} 1" for g in gpus)]
    return "\n".join(extra) + "\n" + BASE_DCGM(gpus)


def realistic_vllm(models: dict[str, Model], created: float = 1764720000.0) -> str:
    extra = []
    for h in VLLM_HISTOGRAMS:
        extra += [f"# HELP {h} {h}", f"# TYPE {h} histogram"]
        for name in models:
            lab = f'engine="0",model_name="{name}"'
            extra += [f'{h}_bucket{{{lab},le="{b}"}} 3.0' for b in BUCKETS]
            extra += [
                f'{h}_bucket{{{lab},le="+Inf"}} 3.0',
                f"{h}_count{{{lab}}} 3.0",
                f"{h}_sum{{{lab}}} 1.5",
            ]
    return "\n".join(extra) + "\n" + BASE_VLLM(models, created)


BASE_DCGM, BASE_VLLM = stubs.dcgm_text, stubs.vllm_text
stubs.dcgm_text, stubs.vllm_text = realistic_dcgm, realistic_vllm  # type: ignore[assignment]


class NoopProducer:
    async def partitions_for(self, topic):
        return {0}

    def create_batch(self):
        class B:
            n = 0

            def append(self, key, value, timestamp):
                self.n += 1
                return object()

            def record_count(self):
                return self.n

        return B()

    async def send_batch(self, batch, topic, partition):
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


class Factors:
    def current(self):
        return load_factor_set()


def advance(stub: TelemetryStub) -> None:
    for g in stub.gpus:
        g.energy_mj += 350_000 * 60  # 350 W for a minute
    for m in stub.servers["s1"].values():
        m.prompt += 20_000
        m.generation += 4_000


async def bare(urls: list[tuple[str, str]], http: httpx.AsyncClient) -> int:
    n = 0
    for dcgm, server in urls:
        for url in (dcgm, server):
            text = (await http.get(url)).text
            for family in text_string_to_metric_families(text):
                n += len(family.samples)
    return n


def serve_stub(gpus: int, conn: Connection) -> None:
    """The child: serves the stub, advances its counters on each message, answers with its URL first."""
    stub = TelemetryStub(
        gpus=[Gpu(i, f"GPU-{i:08x}-0000-0000-0000-000000000000", pod=f"vllm-{i // 2}") for i in range(gpus)],
        servers={"s1": {"meta-llama/Llama-3.1-8B-Instruct": Model(), "Qwen/Qwen2.5-72B-Instruct": Model()}},
    ).start()
    conn.send(stub.url)
    while conn.recv() == "advance":
        advance(stub)
        conn.send("ok")
    stub.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--gpus", type=int, default=8)
    args = ap.parse_args()
    ours, theirs = multiprocessing.Pipe()
    child = multiprocessing.get_context("fork").Process(
        target=serve_stub, args=(args.gpus, theirs), daemon=True
    )
    child.start()
    url = ours.recv()

    def step() -> None:
        ours.send("advance")
        ours.recv()

    dcgm, server = f"{url}/dcgm/metrics", f"{url}/vllm/s1/metrics"
    sizes = (len(httpx.get(dcgm).content), len(httpx.get(server).content))
    print(
        f"targets {args.targets}, rounds {args.rounds}, exporter {args.gpus} GPUs ({sizes[0]:,} B), "
        f"vLLM /metrics {sizes[1]:,} B"
    )
    t0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)

    async def run(shared: bool) -> None:
        tmp = tempfile.mkdtemp()
        engine = get_engine(f"sqlite:///{tmp}/control.db")
        upgrade(engine)
        org = Orgs(engine).create("bench")
        urls = []
        for i in range(args.targets):
            q = "" if shared else f"?target={i}"  # distinct URLs: nothing shared between targets
            urls.append((dcgm + q, server + q))
            pair = [str((2 * i) % args.gpus), str((2 * i + 1) % args.gpus)]
            spec = {"name": f"t{i}", "dcgm_url": urls[-1][0], "server_urls": [urls[-1][1]], "gpus": pair}
            GpuTargets(engine).create(org.id, GpuTargetIn.model_validate({**spec, "provider": "aws"}))
        settings = load_settings({"JOULESTREAM_HOME": tmp})
        async with httpx.AsyncClient() as http:
            s = TelemetryScraper(settings, engine, NoopProducer(), http=http, factors=Factors())  # type: ignore[arg-type]
            await s.run_once(t0)  # baselines (first samples), connections warm
            await bare(urls[:2], http)
            wall = {"scraper": 0.0, "baseline": 0.0}
            cpu = dict(wall)
            published = 0
            for r in range(args.rounds):
                step()
                at = t0 + timedelta(minutes=20 * (r + 1))
                w0, c0 = time.perf_counter(), time.process_time()
                published += sum(x.published for x in await s.run_once(at))
                wall["scraper"] += time.perf_counter() - w0
                cpu["scraper"] += time.process_time() - c0
                w0, c0 = time.perf_counter(), time.process_time()
                await bare(urls, http)
                wall["baseline"] += time.perf_counter() - w0
                cpu["baseline"] += time.process_time() - c0
        n = args.rounds * args.targets
        print(f"{'one exporter and server shared by every target' if shared else 'one exporter and server per target'}"
              f" (events published {published}):")  # fmt: skip
        for k in ("baseline", "scraper"):
            print(
                f"  {k:<9} wall {1000 * wall[k] / n:7.2f} ms/target   cpu {1000 * cpu[k] / n:7.2f} ms/target"
            )
        print(f"  ratio scraper/baseline: wall {wall['scraper'] / wall['baseline']:.2f}×, "
              f"cpu {cpu['scraper'] / cpu['baseline']:.2f}×")  # fmt: skip

    try:
        asyncio.run(run(shared=False))
        asyncio.run(run(shared=True))
    finally:
        ours.send("stop")
        child.join(5)


if __name__ == "__main__":
    main()
