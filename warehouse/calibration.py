"""Measured-energy reads: the calibration (per model: measured J per token against the factor set's estimate
for the same tokens) and the measured events per hour and model.

Both read the signed ledger's live rows (per (event_id, revision) net sign 1) with `energy_source =
'measured'`. Per row: measured GPU J = `measured_energy_j`; measured IT J = `energy_j / pue` (enrichment
brought the measurement to the facility boundary: × host factor × PUE); estimated IT J = Σ tokens_phase ×
the J/token the row recorded (the factor set's estimate the measurement replaced). The ratio and the per-token
figures are `core.methodology.measured.calibration_row`'s.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from clickhouse_connect.driver import Client

from core.methodology.measured import CalibrationRow, calibration_row
from core.windows import Window
from warehouse.reporting import Query, ledger_where

_ESTIMATED_IT_J = (
    "input_tokens_uncached * j_per_prefill_token + input_tokens_cached * j_per_cached_token"
    " + input_tokens_cache_creation * j_per_cache_creation_token + output_tokens * j_per_decode_token"
)
_TOKENS = "input_tokens_uncached + input_tokens_cached + input_tokens_cache_creation + output_tokens"

# one row per live (event_id, revision): a -1 row is a copy of the +1 row it cancels, so any() is its value
_LIVE = f"""
SELECT event_id, revision, sum(sign) AS live,
       any(model) AS m, any(bucket_start) AS h, any(is_estimated) AS est,
       any(measured_energy_j) AS gpu, any(energy_j) AS facility, any(energy_j / pue) AS it,
       any({_ESTIMATED_IT_J}) AS est_it, any({_TOKENS}) AS tok,
       any(input_tokens_uncached) AS prompt, any(output_tokens) AS gen
FROM usage_events AS e
WHERE {{where}} AND energy_source = 'measured'
GROUP BY event_id, revision
HAVING live > 0
"""


def _live(org_id: str, start: datetime, end: datetime, project_id: str | None) -> tuple[str, dict[str, Any]]:
    """The live-rows subquery over the org's window (and project): the ledger filter of `warehouse.reporting`."""
    where, params = ledger_where(Query(org_id, Window(start, end, "calibration"), project_id=project_id))
    return _LIVE.replace("{where}", where), params


def calibration(
    client: Client, org_id: str, start: datetime, end: datetime, project_id: str | None = None
) -> list[CalibrationRow]:
    """Per model (ordered by name): tokens, hours, measured GPU and IT joules, the estimate, the ratio."""
    live, params = _live(org_id, start, end, project_id)
    sql = (
        "SELECT m AS model, sum(tok) AS tokens, uniqExact(h) AS hours, sum(gpu) AS gpu_j, sum(it) AS it_j, "
        f"sum(est_it) AS est_it_j FROM ({live}) GROUP BY model ORDER BY model"
    )
    return [
        calibration_row(r["model"], int(r["tokens"]), int(r["hours"]), r["gpu_j"], r["it_j"], r["est_it_j"])
        for r in client.query(sql, parameters=params).named_results()
    ]


def measured_hours(
    client: Client, org_id: str, start: datetime, end: datetime, project_id: str | None = None
) -> list[dict[str, Any]]:
    """The live measured events summed per (hour, model): GPU J, facility J, tokens, events, estimated ones."""
    live, params = _live(org_id, start, end, project_id)
    sql = (
        "SELECT h AS hour, m AS model, sum(gpu) AS gpu_j, sum(facility) AS energy_j, sum(prompt) AS prompt_tokens,"
        " sum(gen) AS generation_tokens, count() AS events, countIf(est) AS estimated"
        f" FROM ({live}) GROUP BY hour, model ORDER BY hour, model"
    )
    return list(client.query(sql, parameters=params).named_results())
