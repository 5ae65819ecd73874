"""One scripted day of a GPU node, shared by the scraper tests and the pipeline test: two of the exporter's
three GPUs serve one vLLM server with two models; scrapes every 30 min, with a GPU counter reset, a server
restart (token counters from 0), a failed scrape and a gap across an hour boundary. `EXPECTED` is worked
out by hand from the rules in core/methodology/measured.py (the comments show the arithmetic)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.telemetry.stubs import Gpu, Model, TelemetryStub

H = timedelta(hours=1)
M = timedelta(minutes=1)
LLAMA = "meta-llama/Llama-3.1-8B-Instruct"  # tier small: 0.05 J/prompt token, 0.3 J/generated token (v2.0)
QWEN = "Qwen/Qwen2.5-72B-Instruct"  # tier large: 0.2 / 1.2
A, B, C = (f"GPU-{n}1c2e3f4-5a6b-7c8d-9e0f-a1b2c3d4e5f6" for n in "abc")


def base_hour() -> datetime:
    now = datetime.now(UTC)
    return now.replace(minute=0, second=0, microsecond=0) - 10 * H


def make_stub() -> TelemetryStub:
    return TelemetryStub(
        gpus=[Gpu(0, A, pod="vllm-0"), Gpu(1, B, pod="vllm-0"), Gpu(2, C, pod="other-0")],
        servers={"s1": {LLAMA: Model(), QWEN: Model()}},
    )


def step(
    stub: TelemetryStub, *, a=0.0, b=0.0, c=0.0, llama=(0, 0), qwen=(0, 0), reset_a=False, restart=False
):
    """Advance the counters: energies in J (the exporter shows mJ), tokens (prompt, generation)."""
    ga, gb, gc = stub.gpus
    if reset_a:
        ga.energy_mj = 0.0
    ga.energy_mj += a * 1000
    gb.energy_mj += b * 1000
    gc.energy_mj += c * 1000
    models = stub.servers["s1"]
    if restart:
        models[LLAMA], models[QWEN] = Model(), Model()
    for name, (p, g) in ((LLAMA, llama), (QWEN, qwen)):
        models[name].prompt += p
        models[name].generation += g


def script(stub: TelemetryStub, t0: datetime):
    """Yield (scrape time, fail?) after setting the counters for that scrape."""
    ga, gb, gc = stub.gpus
    ga.energy_mj, gb.energy_mj, gc.energy_mj = 1_000_000, 2_000_000, 5_000_000  # since boot: baselines only
    step(stub, llama=(50_000, 9_000), qwen=(7_000, 3_000))
    yield t0, False
    step(stub, a=900, b=1800, c=999, llama=(10_000, 2_000), qwen=(2_500, 500))
    yield t0 + 30 * M, False
    step(stub, a=900, b=1800, c=999, llama=(10_000, 2_000), qwen=(2_500, 500))
    yield t0 + 60 * M, False
    # GPU A's counter restarts (driver reload): 300 J since; the server restarts: counters from 0
    step(stub, a=300, b=1800, c=999, reset_a=True, restart=True, llama=(3_000, 600), qwen=(1_000, 200))
    yield t0 + 90 * M, False
    step(stub, a=450, b=900, llama=(1_500, 300), qwen=(500, 100))
    yield t0 + 105 * M, True  # the exporter answers 503: nothing recorded, the next scrape covers 105 → 120
    step(stub, a=450, b=900, llama=(1_500, 300), qwen=(500, 100))
    yield t0 + 120 * M, False
    step(stub, a=600, b=600, llama=(2_000, 400), qwen=(0, 0))
    yield t0 + 150 * M, False
    # no scrape for an hour (150 → 210 min): the increase is spread 30 min into each hour
    step(stub, a=1200, b=1200, llama=(4_000, 800), qwen=(0, 0))
    yield t0 + 210 * M, False
    step(stub, a=600, b=600, llama=(2_000, 400), qwen=(0, 0))
    yield t0 + 240 * M, False


def expected(t0: datetime) -> dict[tuple[datetime, str], tuple[float, int, int]]:
    """(hour, model) → (GPU J, prompt tokens, generation tokens)."""
    h0, h1, h2, h3 = (t0 + i * H for i in range(4))
    # h0: GPUs 2 × (900 + 1800) = 5400 J; llama 20000/4000 → 20000×0.05 + 4000×0.3 = 2200; qwen 5000/1000 →
    # 5000×0.2 + 1000×1.2 = 2200: equal weights, 2700 J each
    # h1: A 300 (reset) + 900, B 1800 + 1800 = 4800 J; llama 6000/1200 → 660, qwen 2000/400 → 880
    # h2: 30 min at (600+600) + half of the gap's (1200+1200) = 2400 J; only llama served: all of it
    #     (qwen reported 0 tokens: weight 0, 0 J, no event); llama 2000 + 2000 prompt, 400 + 400 generation
    # h3: the gap's other half 1200 + (600+600) = 2400 J; llama 2000 + 2000, 400 + 400
    return {
        (h0, LLAMA): (2700.0, 20_000, 4_000),
        (h0, QWEN): (2700.0, 5_000, 1_000),
        (h1, LLAMA): (4800 * 660 / 1540, 6_000, 1_200),
        (h1, QWEN): (4800 * 880 / 1540, 2_000, 400),
        (h2, LLAMA): (2400.0, 4_000, 800),
        (h3, LLAMA): (2400.0, 4_000, 800),
    }
