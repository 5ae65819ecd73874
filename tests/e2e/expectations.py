"""The expected warehouse figures for a set of final events, computed without the pipeline:
straight from the events and the methodology's pure functions."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

from core.contracts import UsageEvent
from core.methodology import compute_footprint, extra_of, load_factor_set

TOKEN_FIELDS = (
    "input_tokens_uncached",
    "input_tokens_cached",
    "input_tokens_cache_creation",
    "output_tokens",
)
FLOAT_FIELDS = ("energy_j", "energy_j_low", "energy_j_high", "co2_kg", "co2_kg_low", "co2_kg_high")

KEYS: dict[str, Callable[[UsageEvent], str]] = {
    "none": lambda e: "",
    "org": lambda e: e.org_id,
    "project": lambda e: e.project_id,
    "model": lambda e: e.model,
    "day": lambda e: e.bucket_start.date().isoformat(),
}


def expected(
    events: Iterable[UsageEvent], by: str = "none", version: str | None = None
) -> dict[str, dict[str, float]]:
    fs = load_factor_set(version)  # None: the built-in default
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for e in events:
        fp = compute_footprint(
            fs,
            provider=e.provider,
            model=e.model,
            region=e.region,
            input_tokens_uncached=e.input_tokens_uncached,
            input_tokens_cached=e.input_tokens_cached,
            input_tokens_cache_creation=e.input_tokens_cache_creation,
            output_tokens=e.output_tokens,
            extra=extra_of(e),  # modality parts, non-token units, a producer's note (issue 21)
        )
        row = out[KEYS[by](e)]
        row["events"] += 1
        row["request_count"] += e.request_count
        for f in TOKEN_FIELDS:
            row[f] += getattr(e, f)
        for f in FLOAT_FIELDS:
            row[f] += getattr(fp, f)
    return {k: dict(v) for k, v in out.items()}
