"""Reading a target's counters: the exporters' Prometheus text (parsed by prometheus_client's parser) or a
Prometheus server's `/api/v1/query_range`. Both give `Sample`s with the same series keys:

    energy|<GPU UUID>                      DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION, mJ → J
    prompt|<model_name>|<series hash>      vllm:prompt_tokens_total
    generation|<model_name>|<series hash>  vllm:generation_tokens_total

The series hash covers the endpoint (or Prometheus' labels) and every other label, so two servers (or two
engines of one server) of the same model are two counters, each with its own resets.

Metric names and labels as documented by NVIDIA's dcgm-exporter (default counters file
`etc/default-counters.csv`: DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION "Total energy consumption since boot (in
mJ)", DCGM_FI_DEV_POWER_USAGE "Power draw (in W)"; labels gpu, UUID, device, modelName, Hostname, and pod /
namespace / container with the Kubernetes mapping) and by vLLM (docs "Production Metrics":
vllm:prompt_tokens_total "Number of prefill tokens processed", vllm:generation_tokens_total "Number of
generation tokens processed", label model_name).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import httpx
from prometheus_client.parser import text_string_to_metric_families

from controlplane.gpu_targets import GpuTarget, Sample
from core.methodology.measured import MJ_PER_J

ENERGY = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
# prometheus_client's parser names the sample of a counter whose name lacks `_total` (DCGM's do) `<name>_total`
ENERGY_SAMPLES = frozenset({ENERGY, f"{ENERGY}_total"})
POWER = "DCGM_FI_DEV_POWER_USAGE"
PROMPT = "vllm:prompt_tokens_total"
GENERATION = "vllm:generation_tokens_total"
TOKEN_METRICS = {PROMPT: "prompt", GENERATION: "generation"}
MAX_BODY = 16 * 1024 * 1024


class ScrapeError(Exception):
    """An endpoint could not be read or did not hold what it should; `str()` is safe to store and show."""


def _gpu_selected(target: GpuTarget, labels: Mapping[str, str]) -> bool:
    if target.hostname is not None and labels.get("Hostname") != target.hostname:
        return False
    return not target.gpus or labels.get("UUID") in target.gpus or labels.get("gpu") in target.gpus


def _gpu_key(labels: Mapping[str, str]) -> str:
    uuid = labels.get("UUID")
    return uuid if uuid else f"{labels.get('Hostname', '')}/{labels.get('gpu', '')}"


def _token_key(kind: str, model: str, origin: str, labels: Mapping[str, str]) -> str:
    rest = "\x1f".join(f"{k}={v}" for k, v in sorted(labels.items()))
    digest = hashlib.sha256(f"{origin}\x1e{rest}".encode()).hexdigest()[:16]
    return f"{kind}|{model}|{digest}"


def energy_sample(target: GpuTarget, labels: Mapping[str, str], at: datetime, value: float) -> Sample | None:
    if not _gpu_selected(target, labels):
        return None
    return Sample(f"energy|{_gpu_key(labels)}", at, value / MJ_PER_J)


def token_sample(
    name: str, origin: str, labels: Mapping[str, str], at: datetime, value: float
) -> Sample | None:
    model = labels.get("model_name")
    if not model:
        return None
    return Sample(_token_key(TOKEN_METRICS[name], model, origin, labels), at, value)


class Raw(NamedTuple):
    """A sample of a metric the scraper reads, as the exposition text gave it."""

    name: str
    labels: dict[str, str]
    value: float


WANTED = ENERGY_SAMPLES | TOKEN_METRICS.keys()


def parse_text(text: str, what: str) -> list[Raw]:
    """The samples of the metrics we read (energy, tokens) in exposition text, parsed by prometheus_client."""
    try:
        return [
            Raw(s.name, s.labels, s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name in WANTED
        ]
    except ValueError as exc:
        raise ScrapeError(f"{what}: unreadable exposition text ({str(exc)[:100]})") from None


def dcgm_samples(target: GpuTarget, raws: list[Raw], at: datetime) -> list[Sample]:
    """The selected GPUs' energy counters of a DCGM exporter."""
    out = [
        s
        for r in raws
        if r.name in ENERGY_SAMPLES and (s := energy_sample(target, r.labels, at, r.value)) is not None
    ]
    if not out:
        raise ScrapeError(f"DCGM exporter: no {ENERGY} series for the target's GPUs")
    return out


def server_samples(origin: str, raws: list[Raw], at: datetime) -> list[Sample]:
    """The token counters of a vLLM server."""
    return [
        s
        for r in raws
        if r.name in TOKEN_METRICS and (s := token_sample(r.name, origin, r.labels, at, r.value)) is not None
    ]


class Round:
    """One scrape round: every URL is fetched and parsed at most once, however many targets read it (one
    DCGM exporter per node serves every target on that node's GPUs)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self._cache: dict[str, asyncio.Task[list[Raw]]] = {}

    def read(self, url: str, what: str) -> asyncio.Task[list[Raw]]:
        if url not in self._cache:
            self._cache[url] = asyncio.ensure_future(self._read(url, what))
        return self._cache[url]

    async def _read(self, url: str, what: str) -> list[Raw]:
        try:
            r = await self.http.get(url, headers={"Accept": "text/plain;version=0.0.4"})
        except httpx.HTTPError as exc:
            raise ScrapeError(f"{what} unreachable: {type(exc).__name__}") from None
        if r.status_code != 200:
            raise ScrapeError(f"{what} answered {r.status_code}")
        if len(r.content) > MAX_BODY:
            raise ScrapeError(f"{what}: response over {MAX_BODY} bytes")
        return parse_text(r.text, what)


async def scrape_endpoints(target: GpuTarget, round_: Round, at: datetime) -> list[Sample]:
    """One scrape of the target's DCGM exporter and model servers (concurrently), all stamped `at`; all or
    nothing."""
    assert target.dcgm_url is not None
    reads = [round_.read(target.dcgm_url, "DCGM exporter")]
    reads += [round_.read(url, "model server") for url in target.server_urls]
    results = await asyncio.gather(*reads, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            if isinstance(r, ScrapeError):
                raise r
            raise ScrapeError(f"endpoint read failed: {type(r).__name__}") from None
    raws = [r for r in results if not isinstance(r, BaseException)]
    samples = dcgm_samples(target, raws[0], at)
    for url, server in zip(target.server_urls, raws[1:], strict=True):
        samples += server_samples(url, server, at)
    return samples


def _selector(target: GpuTarget, metric: str) -> str:
    if metric == ENERGY and target.hostname is not None:
        host = target.hostname.replace("\\", "\\\\").replace('"', '\\"')
        return f'{metric}{{Hostname="{host}"}}'
    return metric if ":" not in metric else f'{{__name__="{metric}"}}'


async def query_prometheus(
    target: GpuTarget, http: httpx.AsyncClient, start: datetime, end: datetime, step: timedelta
) -> list[Sample]:
    """The same series from a Prometheus server's range API, every sample in (start, end], in time order."""
    assert target.prometheus_url is not None
    base = target.prometheus_url.rstrip("/")
    step_s = max(step.total_seconds(), (end - start).total_seconds() / 10_000)  # Prometheus: ≤ 11,000 points
    out: list[Sample] = []
    for metric in (ENERGY, PROMPT, GENERATION):
        params = {
            "query": _selector(target, metric),
            "start": f"{start.timestamp():.3f}",
            "end": f"{end.timestamp():.3f}",
            "step": f"{step_s:g}",
        }
        try:
            r = await http.get(f"{base}/api/v1/query_range", params=params)
            body = r.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ScrapeError(f"Prometheus query failed: {type(exc).__name__}") from None
        if r.status_code != 200 or body.get("status") != "success":
            raise ScrapeError(f"Prometheus answered {r.status_code}: {str(body.get('error', ''))[:200]}")
        out += _matrix(target, metric, body.get("data", {}))
    return out


def _matrix(target: GpuTarget, metric: str, data: Mapping) -> Iterable[Sample]:
    if data.get("resultType") != "matrix":
        raise ScrapeError("Prometheus: expected a matrix result")
    for series in data.get("result", []):
        labels = {k: str(v) for k, v in series.get("metric", {}).items() if k != "__name__"}
        for ts, value in series.get("values", []):
            at = datetime.fromtimestamp(float(ts), UTC)
            v = float(value)
            s = (
                energy_sample(target, labels, at, v)
                if metric == ENERGY
                else token_sample(metric, "prom", labels, at, v)
            )
            if s is not None:
                yield s
