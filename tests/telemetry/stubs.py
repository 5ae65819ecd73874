"""Local stubs of the endpoints the GPU telemetry scraper reads (http.server on 127.0.0.1, random port),
serving the wire formats those projects document:

- NVIDIA dcgm-exporter `GET /metrics` (Prometheus text format 0.0.4). Metric names, types and help texts from
  its default counters file, https://github.com/NVIDIA/dcgm-exporter/blob/main/etc/default-counters.csv:
  `DCGM_FI_DEV_POWER_USAGE, gauge, Power draw (in W).` and `DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION, counter,
  Total energy consumption since boot (in mJ).`; labels as in its README's sample output (gpu, UUID,
  pci_bus_id, device, modelName, Hostname, DCGM_FI_DRIVER_VERSION) plus container / namespace / pod when the
  Kubernetes pod mapping is on (README, "Kubernetes"). The energy counter restarts from 0 with the GPU /
  driver (`reset_gpu`).
- vLLM `GET /metrics` (docs "Production Metrics", https://docs.vllm.ai/en/latest/usage/metrics.html):
  `vllm:prompt_tokens_total` "Number of prefill tokens processed." and `vllm:generation_tokens_total`
  "Number of generation tokens processed.", counters with labels model_name (and engine, vLLM V1), written
  by prometheus_client exactly as vLLM's server does (`# TYPE vllm:prompt_tokens counter`, the `_total`
  sample and its `_created` twin). A restarted server starts from 0 (`restart`).
- Prometheus `GET /api/v1/query_range` (https://prometheus.io/docs/prometheus/latest/querying/api/): the
  `{"status": "success", "data": {"resultType": "matrix", "result": [{"metric": {…}, "values": [[t,
  "v"], …]}]}}` envelope over recorded samples in [start, end].
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

DRIVER = "550.90.07"


@dataclass
class Gpu:
    index: int
    uuid: str
    hostname: str = "gpu-node-1"
    model_name: str = "NVIDIA H100 80GB HBM3"
    energy_mj: float = 0.0
    power_w: float = 0.0
    pod: str | None = None

    def labels(self) -> str:
        parts = [
            f'gpu="{self.index}"',
            f'UUID="{self.uuid}"',
            f'pci_bus_id="00000000:{0x18 + self.index:02X}:00.0"',
            f'device="nvidia{self.index}"',
            f'modelName="{self.model_name}"',
            f'Hostname="{self.hostname}"',
            f'DCGM_FI_DRIVER_VERSION="{DRIVER}"',
        ]
        if self.pod:
            parts += ['container="vllm"', 'namespace="inference"', f'pod="{self.pod}"']
        return ",".join(parts)


@dataclass
class Model:
    prompt: float = 0.0
    generation: float = 0.0


def dcgm_text(gpus: list[Gpu]) -> str:
    lines = [
        "# HELP DCGM_FI_DEV_SM_CLOCK SM clock frequency (in MHz).",
        "# TYPE DCGM_FI_DEV_SM_CLOCK gauge",
        *(f"DCGM_FI_DEV_SM_CLOCK{{{g.labels()}}} 1980" for g in gpus),
        "# HELP DCGM_FI_DEV_POWER_USAGE Power draw (in W).",
        "# TYPE DCGM_FI_DEV_POWER_USAGE gauge",
        *(f"DCGM_FI_DEV_POWER_USAGE{{{g.labels()}}} {g.power_w:.3f}" for g in gpus),
        "# HELP DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION Total energy consumption since boot (in mJ).",
        "# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter",
        *(f"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{{g.labels()}}} {int(g.energy_mj)}" for g in gpus),
    ]
    return "\n".join(lines) + "\n"


def vllm_text(models: dict[str, Model], created: float = 1764720000.0) -> str:
    out = []
    for base, doc, attr in (
        ("vllm:prompt_tokens", "Number of prefill tokens processed.", "prompt"),
        ("vllm:generation_tokens", "Number of generation tokens processed.", "generation"),
    ):
        out += [f"# HELP {base}_total {doc}", f"# TYPE {base}_total counter"]
        for name, m in models.items():
            labels = f'engine="0",model_name="{name}"'
            out.append(f"{base}_total{{{labels}}} {getattr(m, attr):.1f}")
            out.append(f"{base}_created{{{labels}}} {created}")
    return "\n".join(out) + "\n"


@dataclass
class TelemetryStub:
    """One server holding a DCGM exporter (/dcgm/metrics), model servers (/vllm/<name>/metrics) and a
    Prometheus (/prom/api/v1/query_range)."""

    gpus: list[Gpu] = field(default_factory=list)
    servers: dict[str, dict[str, Model]] = field(default_factory=dict)
    prom: dict[str, list[tuple[dict[str, str], list[tuple[float, float]]]]] = field(default_factory=dict)
    fail: set[str] = field(default_factory=set)  # paths that answer 503
    requests: int = 0

    def start(self) -> TelemetryStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                stub.requests += 1
                url = urlsplit(self.path)
                if url.path in stub.fail:
                    return self._send(503, "text/plain", b"unavailable")
                if url.path == "/dcgm/metrics":
                    return self._send(200, "text/plain; version=0.0.4", dcgm_text(stub.gpus).encode())
                if url.path.startswith("/vllm/") and url.path.endswith("/metrics"):
                    name = url.path.split("/")[2]
                    if name in stub.servers:
                        return self._send(
                            200, "text/plain; version=0.0.4", vllm_text(stub.servers[name]).encode()
                        )
                if url.path == "/prom/api/v1/query_range":
                    return self._send(
                        200, "application/json", json.dumps(stub.query(parse_qs(url.query))).encode()
                    )
                self._send(404, "text/plain", b"not found")

            def _send(self, status: int, ctype: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def query(self, q: dict[str, list[str]]) -> dict:
        query, start, end = q["query"][0], float(q["start"][0]), float(q["end"][0])
        float(q["step"][0])  # required by the API
        name = query.split("{")[0] or query.split('"')[1]
        result = []
        for labels, values in self.prom.get(name, []):
            if "Hostname=" in query and labels.get("Hostname") != query.split('Hostname="')[1].split('"')[0]:
                continue
            pts = [[t, repr(float(v))] for t, v in values if start <= t <= end]
            if pts:
                result.append({"metric": {"__name__": name, **labels}, "values": pts})
        return {"status": "success", "data": {"resultType": "matrix", "result": result}}


def started(**kw) -> Iterator[TelemetryStub]:
    stub = TelemetryStub(**kw).start()
    try:
        yield stub
    finally:
        stub.close()
