"""Measured GPU energy: counter arithmetic, hourly buckets, attribution to models, and calibration.

Pure functions (no I/O); the scraper (`pipelines/telemetry/`) and the calibration read (`warehouse/
calibration.py`) call them. docs/measured-energy.md explains every rule below with a worked example.

Counters (DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION in mJ, vllm:prompt_tokens_total, vllm:generation_tokens_total)
are read twice or more; between two samples (t0, v0) and (t1, v1) of one series:

    increase = v1 − v0            when v1 ≥ v0
             = v1                 when v1 < v0: the counter restarted from 0 (exporter / GPU / server restart),
                                  Prometheus' `increase()` rule; what was counted between t0 and the restart is
                                  lost (no one recorded it) and the figure is a lower bound for that interval
    the first sample of a series only sets its baseline (its value may hold days of history).

The increase is spread over the hours that (t0, t1] overlaps in proportion to the time in each (`spread`):
a gap (missed scrapes, an exporter down for a while) moves no energy across the gap's ends, it is only placed
linearly inside it. Energy and tokens are spread alike, so a model's J/token is the same whatever the gap.

Attribution (per target — a set of GPUs and the model servers that run on them — and per hour):

    weight(m) = prompt_tokens(m) × J_prefill(m) + generation_tokens(m) × J_decode(m)
    E(m)      = E_gpus × weight(m) / Σ weight

J_prefill / J_decode are the factor set's per-token energies of the model's tier (point values). Prefill
processes the whole prompt in parallel and is compute-bound; decode produces one token per forward pass and
is memory-bandwidth-bound, so a generated token costs several times a prompt token (6× for the `small` tier,
v2.0). Weighting by raw token counts would hand a prompt-heavy model (RAG, classification) far more of the
GPU's energy than it used. The factors only split the measured total: the sum over models is exactly the
GPUs' measured energy. An hour with energy but no tokens (idle GPUs, held by the servers) is split equally
among the models the servers reported in that hour; with no model at all it stays unattributed (reported,
not published).

Calibration compares, per model, the measured IT energy per token (the measured GPU energy brought to the IT
boundary by the factor set's host factor, as enrichment does) with the factor set's estimate for the same
tokens: ratio = measured IT J / estimated IT J.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from core.methodology.factors import FactorSet
from core.methodology.matching import match_model

HOUR = timedelta(hours=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MJ_PER_J = 1000.0  # DCGM's energy counter is in millijoules


def hour_of(t: datetime) -> datetime:
    """The start of the UTC hour that holds `t`."""
    return _EPOCH + ((t.astimezone(UTC) - _EPOCH) // HOUR) * HOUR


def counter_increase(previous: float, current: float) -> tuple[float, bool]:
    """(increase, reset) between two samples of a counter: a drop means it restarted from 0."""
    if current >= previous:
        return current - previous, False
    return current, True


def spread(t0: datetime, t1: datetime, amount: float) -> list[tuple[datetime, float]]:
    """`amount`, counted over (t0, t1], split over the hours it overlaps in proportion to the time in each.
    The parts sum to `amount` exactly (the last hour takes the remainder)."""
    if t1 <= t0:
        return [(hour_of(t1), amount)]
    total = (t1 - t0).total_seconds()
    out: list[tuple[datetime, float]] = []
    start = hour_of(t0)
    given = 0.0
    h = start
    while True:
        end = h + HOUR
        if end >= t1:
            out.append((h, amount - given))
            return out
        part = amount * ((end - max(t0, h)).total_seconds() / total)
        out.append((h, part))
        given += part
        h = end


class Tokens(NamedTuple):
    prompt: float
    generation: float


class PhaseWeights(NamedTuple):
    """Relative energy of one prompt (prefill) and one generated (decode) token of a model."""

    prefill: float
    decode: float


def attribute(
    energy_j: float, tokens: Mapping[str, Tokens], weights: Mapping[str, PhaseWeights]
) -> dict[str, float]:
    """The hour's GPU energy (J) per model (see the module docstring). Models are those in `tokens` (every
    model the servers reported in the hour, with zero tokens if it served none); {} when there is none."""
    if not tokens:
        return {}
    w = {
        m: t.prompt * weights[m].prefill + t.generation * weights[m].decode for m, t in sorted(tokens.items())
    }
    total = sum(w.values())
    if total <= 0:  # idle hour: an equal share each
        share = energy_j / len(w)
        return dict.fromkeys(w, share)
    return {m: energy_j * v / total for m, v in w.items()}


class CalibrationRow(NamedTuple):
    model: str
    tokens: int
    hours: int
    measured_gpu_j: float  # as metered (GPU boundary)
    measured_it_j: float  # brought to the IT boundary (× host factor)
    estimated_it_j: float  # the factor set's token estimate for the same tokens
    measured_j_per_token: float | None  # IT boundary
    estimated_j_per_token: float | None
    ratio: float | None  # measured / estimated


def calibration_row(
    model: str, tokens: int, hours: int, measured_gpu_j: float, measured_it_j: float, estimated_it_j: float
) -> CalibrationRow:
    per = (lambda j: j / tokens) if tokens > 0 else (lambda j: None)
    return CalibrationRow(
        model,
        tokens,
        hours,
        measured_gpu_j,
        measured_it_j,
        estimated_it_j,
        per(measured_it_j),
        per(estimated_it_j),
        measured_it_j / estimated_it_j if estimated_it_j > 0 else None,
    )


def sum_by_hour(parts: Iterable[tuple[datetime, float]]) -> dict[datetime, float]:
    out: dict[datetime, float] = {}
    for h, v in parts:
        out[h] = out.get(h, 0.0) + v
    return out


def phase_weights(fs: FactorSet, model: str) -> PhaseWeights:
    """The per-phase J/token (point) of the model's tier in `fs`: the prefill vs decode weighting."""
    point = fs.tiers[match_model(fs, model).tier].point
    return PhaseWeights(float(point.prefill), float(point.decode))
