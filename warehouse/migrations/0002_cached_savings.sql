-- The cached-token savings become ledger columns, computed per event by the methodology
-- (core.methodology.cached_savings, carried by EnrichedUsage.energy_cached_savings_j / co2_cached_savings_kg);
-- the rollups sum them like any other measure instead of recomputing the formula from the factors.
--
-- Fallback for old rows: ledger parts written before this migration have no such columns. Their values come
-- from the column DEFAULTs below — the formula of migration 0001's views, evaluated in the same order as the
-- Python one — which ClickHouse computes when it reads those parts. New rows always carry the values (the
-- writer fills them in for payloads of producers that predate the fields), so the defaults serve old rows only.
--
-- The views are re-created to sum the columns: the figures of the rollups do not change. Inserts made between
-- the DROP and the CREATE would miss the rollups; migrations run before the writers start, and the sink's
-- start-up reconcile closes any such gap.

ALTER TABLE {db}.usage_events
    ADD COLUMN IF NOT EXISTS energy_cached_savings_j Float64
        DEFAULT input_tokens_cached * (j_per_prefill_token - j_per_cached_token) * pue
        AFTER co2_kg_high,
    ADD COLUMN IF NOT EXISTS co2_cached_savings_kg Float64
        DEFAULT input_tokens_cached * (j_per_prefill_token - j_per_cached_token) * pue
            * grid_intensity_kg_per_kwh / 3600000
        AFTER energy_cached_savings_j;

DROP VIEW IF EXISTS {db}.usage_hourly_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_hourly_mv TO {db}.usage_hourly AS
SELECT
    org_id,
    toStartOfHour(bucket_start) AS hour,
    project_id, provider, model, model_tier, factors_version, source,
    sum(toInt64(sign)) AS events,
    sum(sign * request_count) AS request_count,
    sum(sign * input_tokens_uncached) AS input_tokens_uncached,
    sum(sign * input_tokens_cached) AS input_tokens_cached,
    sum(sign * input_tokens_cache_creation) AS input_tokens_cache_creation,
    sum(sign * output_tokens) AS output_tokens,
    sum(sign * energy_j) AS energy_j,
    sum(sign * energy_j_low) AS energy_j_low,
    sum(sign * energy_j_high) AS energy_j_high,
    sum(sign * co2_kg) AS co2_kg,
    sum(sign * co2_kg_low) AS co2_kg_low,
    sum(sign * co2_kg_high) AS co2_kg_high,
    sum(sign * energy_cached_savings_j) AS energy_cached_savings_j,
    sum(sign * co2_cached_savings_kg) AS co2_cached_savings_kg
FROM {db}.usage_events
GROUP BY org_id, hour, project_id, provider, model, model_tier, factors_version, source;

DROP VIEW IF EXISTS {db}.usage_daily_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_daily_mv TO {db}.usage_daily AS
SELECT
    org_id,
    toDate(bucket_start) AS day,
    project_id, provider, model, model_tier, factors_version, source,
    sum(toInt64(sign)) AS events,
    sum(sign * request_count) AS request_count,
    sum(sign * input_tokens_uncached) AS input_tokens_uncached,
    sum(sign * input_tokens_cached) AS input_tokens_cached,
    sum(sign * input_tokens_cache_creation) AS input_tokens_cache_creation,
    sum(sign * output_tokens) AS output_tokens,
    sum(sign * energy_j) AS energy_j,
    sum(sign * energy_j_low) AS energy_j_low,
    sum(sign * energy_j_high) AS energy_j_high,
    sum(sign * co2_kg) AS co2_kg,
    sum(sign * co2_kg_low) AS co2_kg_low,
    sum(sign * co2_kg_high) AS co2_kg_high,
    sum(sign * energy_cached_savings_j) AS energy_cached_savings_j,
    sum(sign * co2_cached_savings_kg) AS co2_cached_savings_kg
FROM {db}.usage_events
GROUP BY org_id, day, project_id, provider, model, model_tier, factors_version, source;
