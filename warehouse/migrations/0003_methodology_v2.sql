-- Methodology v2 (issue 13): the EnrichedUsage fields of the v2 contract become ledger columns, and the rollups
-- get their sums — market-based and embodied CO2e, water, cost, each with a coverage count — and the measured
-- part of energy and CO2e (warehouse/measures.py is the spec; tests/warehouse/test_wh_measures.py checks it
-- against these tables).
--
-- Old rows (enriched before v2, or by a producer that predates the fields) carry no v2 figure. The ledger's
-- v2 figures and factors are Nullable: such rows read NULL, never a 0 that would look like a measured zero.
-- The rollups sum NULL as 0 and count, beside each v2 figure, the live events that carry it
-- (events_market, events_embodied, events_water, events_cost): a reader shows "no figure" when that count is
-- 0 and says how many of the events a partial sum covers. energy_source defaults to 'estimated', which old
-- rows are; the measured part (events_measured, energy_j_measured, co2_kg_measured(+low/high)) sums the rows
-- with energy_source = 'measured', the estimated part is the total minus it.
--
-- Rollup rows written before this migration read 0 in the new columns, which is exact: the ledger rows they
-- sum carry no v2 figure and no measured energy. The views are re-created with the new sums (every column
-- qualified `e.`: an output alias such as energy_j must not replace the input column inside sumIf). As in
-- 0002, inserts between the DROP and the CREATE would miss the rollups; migrations run before the writers
-- start, and the sink's start-up reconcile closes any such gap.

ALTER TABLE {db}.usage_events
    ADD COLUMN IF NOT EXISTS measured_energy_j Nullable(Float64) AFTER request_count,
    ADD COLUMN IF NOT EXISTS measured_by LowCardinality(Nullable(String)) AFTER measured_energy_j,
    ADD COLUMN IF NOT EXISTS measured_boundary LowCardinality(Nullable(String)) AFTER measured_by,
    ADD COLUMN IF NOT EXISTS measured_uncertainty_pct Nullable(Float64) AFTER measured_boundary,
    ADD COLUMN IF NOT EXISTS energy_source LowCardinality(String) DEFAULT 'estimated' AFTER co2_cached_savings_kg,
    ADD COLUMN IF NOT EXISTS co2_kg_market Nullable(Float64) AFTER energy_source,
    ADD COLUMN IF NOT EXISTS co2_kg_market_low Nullable(Float64) AFTER co2_kg_market,
    ADD COLUMN IF NOT EXISTS co2_kg_market_high Nullable(Float64) AFTER co2_kg_market_low,
    ADD COLUMN IF NOT EXISTS co2_kg_embodied Nullable(Float64) AFTER co2_kg_market_high,
    ADD COLUMN IF NOT EXISTS co2_kg_embodied_low Nullable(Float64) AFTER co2_kg_embodied,
    ADD COLUMN IF NOT EXISTS co2_kg_embodied_high Nullable(Float64) AFTER co2_kg_embodied_low,
    ADD COLUMN IF NOT EXISTS water_l Nullable(Float64) AFTER co2_kg_embodied_high,
    ADD COLUMN IF NOT EXISTS water_l_low Nullable(Float64) AFTER water_l,
    ADD COLUMN IF NOT EXISTS water_l_high Nullable(Float64) AFTER water_l_low,
    ADD COLUMN IF NOT EXISTS cost_usd Nullable(Float64) AFTER water_l_high,
    ADD COLUMN IF NOT EXISTS grid_market_intensity_kg_per_kwh Nullable(Float64) AFTER cost_usd,
    ADD COLUMN IF NOT EXISTS embodied_kg_per_it_j Nullable(Float64) AFTER grid_market_intensity_kg_per_kwh,
    ADD COLUMN IF NOT EXISTS wue_onsite_l_per_kwh Nullable(Float64) AFTER embodied_kg_per_it_j,
    ADD COLUMN IF NOT EXISTS water_offsite_l_per_kwh Nullable(Float64) AFTER wue_onsite_l_per_kwh,
    ADD COLUMN IF NOT EXISTS price_usd_per_1m_input Nullable(Float64) AFTER water_offsite_l_per_kwh,
    ADD COLUMN IF NOT EXISTS price_usd_per_1m_cached Nullable(Float64) AFTER price_usd_per_1m_input,
    ADD COLUMN IF NOT EXISTS price_usd_per_1m_cache_write Nullable(Float64) AFTER price_usd_per_1m_cached,
    ADD COLUMN IF NOT EXISTS price_usd_per_1m_output Nullable(Float64) AFTER price_usd_per_1m_cache_write,
    ADD COLUMN IF NOT EXISTS price_source LowCardinality(Nullable(String)) AFTER price_usd_per_1m_output;

ALTER TABLE {db}.usage_hourly
    ADD COLUMN IF NOT EXISTS co2_kg_market Float64 AFTER co2_cached_savings_kg,
    ADD COLUMN IF NOT EXISTS co2_kg_market_low Float64 AFTER co2_kg_market,
    ADD COLUMN IF NOT EXISTS co2_kg_market_high Float64 AFTER co2_kg_market_low,
    ADD COLUMN IF NOT EXISTS events_market Int64 AFTER co2_kg_market_high,
    ADD COLUMN IF NOT EXISTS co2_kg_embodied Float64 AFTER events_market,
    ADD COLUMN IF NOT EXISTS co2_kg_embodied_low Float64 AFTER co2_kg_embodied,
    ADD COLUMN IF NOT EXISTS co2_kg_embodied_high Float64 AFTER co2_kg_embodied_low,
    ADD COLUMN IF NOT EXISTS events_embodied Int64 AFTER co2_kg_embodied_high,
    ADD COLUMN IF NOT EXISTS water_l Float64 AFTER events_embodied,
    ADD COLUMN IF NOT EXISTS water_l_low Float64 AFTER water_l,
    ADD COLUMN IF NOT EXISTS water_l_high Float64 AFTER water_l_low,
    ADD COLUMN IF NOT EXISTS events_water Int64 AFTER water_l_high,
    ADD COLUMN IF NOT EXISTS cost_usd Float64 AFTER events_water,
    ADD COLUMN IF NOT EXISTS events_cost Int64 AFTER cost_usd,
    ADD COLUMN IF NOT EXISTS events_measured Int64 AFTER events_cost,
    ADD COLUMN IF NOT EXISTS energy_j_measured Float64 AFTER events_measured,
    ADD COLUMN IF NOT EXISTS co2_kg_measured Float64 AFTER energy_j_measured,
    ADD COLUMN IF NOT EXISTS co2_kg_measured_low Float64 AFTER co2_kg_measured,
    ADD COLUMN IF NOT EXISTS co2_kg_measured_high Float64 AFTER co2_kg_measured_low;

ALTER TABLE {db}.usage_daily
    ADD COLUMN IF NOT EXISTS co2_kg_market Float64 AFTER co2_cached_savings_kg,
    ADD COLUMN IF NOT EXISTS co2_kg_market_low Float64 AFTER co2_kg_market,
    ADD COLUMN IF NOT EXISTS co2_kg_market_high Float64 AFTER co2_kg_market_low,
    ADD COLUMN IF NOT EXISTS events_market Int64 AFTER co2_kg_market_high,
    ADD COLUMN IF NOT EXISTS co2_kg_embodied Float64 AFTER events_market,
    ADD COLUMN IF NOT EXISTS co2_kg_embodied_low Float64 AFTER co2_kg_embodied,
    ADD COLUMN IF NOT EXISTS co2_kg_embodied_high Float64 AFTER co2_kg_embodied_low,
    ADD COLUMN IF NOT EXISTS events_embodied Int64 AFTER co2_kg_embodied_high,
    ADD COLUMN IF NOT EXISTS water_l Float64 AFTER events_embodied,
    ADD COLUMN IF NOT EXISTS water_l_low Float64 AFTER water_l,
    ADD COLUMN IF NOT EXISTS water_l_high Float64 AFTER water_l_low,
    ADD COLUMN IF NOT EXISTS events_water Int64 AFTER water_l_high,
    ADD COLUMN IF NOT EXISTS cost_usd Float64 AFTER events_water,
    ADD COLUMN IF NOT EXISTS events_cost Int64 AFTER cost_usd,
    ADD COLUMN IF NOT EXISTS events_measured Int64 AFTER events_cost,
    ADD COLUMN IF NOT EXISTS energy_j_measured Float64 AFTER events_measured,
    ADD COLUMN IF NOT EXISTS co2_kg_measured Float64 AFTER energy_j_measured,
    ADD COLUMN IF NOT EXISTS co2_kg_measured_low Float64 AFTER co2_kg_measured,
    ADD COLUMN IF NOT EXISTS co2_kg_measured_high Float64 AFTER co2_kg_measured_low;

DROP VIEW IF EXISTS {db}.usage_hourly_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_hourly_mv TO {db}.usage_hourly AS
SELECT
    e.org_id AS org_id,
    toStartOfHour(e.bucket_start) AS hour,
    e.project_id AS project_id, e.provider AS provider, e.model AS model, e.model_tier AS model_tier,
    e.factors_version AS factors_version, e.source AS source,
    sum(toInt64(e.sign)) AS events,
    sum(e.sign * e.request_count) AS request_count,
    sum(e.sign * e.input_tokens_uncached) AS input_tokens_uncached,
    sum(e.sign * e.input_tokens_cached) AS input_tokens_cached,
    sum(e.sign * e.input_tokens_cache_creation) AS input_tokens_cache_creation,
    sum(e.sign * e.output_tokens) AS output_tokens,
    sum(e.sign * e.energy_j) AS energy_j,
    sum(e.sign * e.energy_j_low) AS energy_j_low,
    sum(e.sign * e.energy_j_high) AS energy_j_high,
    sum(e.sign * e.co2_kg) AS co2_kg,
    sum(e.sign * e.co2_kg_low) AS co2_kg_low,
    sum(e.sign * e.co2_kg_high) AS co2_kg_high,
    sum(e.sign * e.energy_cached_savings_j) AS energy_cached_savings_j,
    sum(e.sign * e.co2_cached_savings_kg) AS co2_cached_savings_kg,
    sum(e.sign * ifNull(e.co2_kg_market, 0)) AS co2_kg_market,
    sum(e.sign * ifNull(e.co2_kg_market_low, 0)) AS co2_kg_market_low,
    sum(e.sign * ifNull(e.co2_kg_market_high, 0)) AS co2_kg_market_high,
    sumIf(toInt64(e.sign), e.co2_kg_market IS NOT NULL) AS events_market,
    sum(e.sign * ifNull(e.co2_kg_embodied, 0)) AS co2_kg_embodied,
    sum(e.sign * ifNull(e.co2_kg_embodied_low, 0)) AS co2_kg_embodied_low,
    sum(e.sign * ifNull(e.co2_kg_embodied_high, 0)) AS co2_kg_embodied_high,
    sumIf(toInt64(e.sign), e.co2_kg_embodied IS NOT NULL) AS events_embodied,
    sum(e.sign * ifNull(e.water_l, 0)) AS water_l,
    sum(e.sign * ifNull(e.water_l_low, 0)) AS water_l_low,
    sum(e.sign * ifNull(e.water_l_high, 0)) AS water_l_high,
    sumIf(toInt64(e.sign), e.water_l IS NOT NULL) AS events_water,
    sum(e.sign * ifNull(e.cost_usd, 0)) AS cost_usd,
    sumIf(toInt64(e.sign), e.cost_usd IS NOT NULL) AS events_cost,
    sumIf(toInt64(e.sign), e.energy_source = 'measured') AS events_measured,
    sumIf(e.sign * e.energy_j, e.energy_source = 'measured') AS energy_j_measured,
    sumIf(e.sign * e.co2_kg, e.energy_source = 'measured') AS co2_kg_measured,
    sumIf(e.sign * e.co2_kg_low, e.energy_source = 'measured') AS co2_kg_measured_low,
    sumIf(e.sign * e.co2_kg_high, e.energy_source = 'measured') AS co2_kg_measured_high
FROM {db}.usage_events AS e
GROUP BY org_id, hour, project_id, provider, model, model_tier, factors_version, source;

DROP VIEW IF EXISTS {db}.usage_daily_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_daily_mv TO {db}.usage_daily AS
SELECT
    e.org_id AS org_id,
    toDate(e.bucket_start) AS day,
    e.project_id AS project_id, e.provider AS provider, e.model AS model, e.model_tier AS model_tier,
    e.factors_version AS factors_version, e.source AS source,
    sum(toInt64(e.sign)) AS events,
    sum(e.sign * e.request_count) AS request_count,
    sum(e.sign * e.input_tokens_uncached) AS input_tokens_uncached,
    sum(e.sign * e.input_tokens_cached) AS input_tokens_cached,
    sum(e.sign * e.input_tokens_cache_creation) AS input_tokens_cache_creation,
    sum(e.sign * e.output_tokens) AS output_tokens,
    sum(e.sign * e.energy_j) AS energy_j,
    sum(e.sign * e.energy_j_low) AS energy_j_low,
    sum(e.sign * e.energy_j_high) AS energy_j_high,
    sum(e.sign * e.co2_kg) AS co2_kg,
    sum(e.sign * e.co2_kg_low) AS co2_kg_low,
    sum(e.sign * e.co2_kg_high) AS co2_kg_high,
    sum(e.sign * e.energy_cached_savings_j) AS energy_cached_savings_j,
    sum(e.sign * e.co2_cached_savings_kg) AS co2_cached_savings_kg,
    sum(e.sign * ifNull(e.co2_kg_market, 0)) AS co2_kg_market,
    sum(e.sign * ifNull(e.co2_kg_market_low, 0)) AS co2_kg_market_low,
    sum(e.sign * ifNull(e.co2_kg_market_high, 0)) AS co2_kg_market_high,
    sumIf(toInt64(e.sign), e.co2_kg_market IS NOT NULL) AS events_market,
    sum(e.sign * ifNull(e.co2_kg_embodied, 0)) AS co2_kg_embodied,
    sum(e.sign * ifNull(e.co2_kg_embodied_low, 0)) AS co2_kg_embodied_low,
    sum(e.sign * ifNull(e.co2_kg_embodied_high, 0)) AS co2_kg_embodied_high,
    sumIf(toInt64(e.sign), e.co2_kg_embodied IS NOT NULL) AS events_embodied,
    sum(e.sign * ifNull(e.water_l, 0)) AS water_l,
    sum(e.sign * ifNull(e.water_l_low, 0)) AS water_l_low,
    sum(e.sign * ifNull(e.water_l_high, 0)) AS water_l_high,
    sumIf(toInt64(e.sign), e.water_l IS NOT NULL) AS events_water,
    sum(e.sign * ifNull(e.cost_usd, 0)) AS cost_usd,
    sumIf(toInt64(e.sign), e.cost_usd IS NOT NULL) AS events_cost,
    sumIf(toInt64(e.sign), e.energy_source = 'measured') AS events_measured,
    sumIf(e.sign * e.energy_j, e.energy_source = 'measured') AS energy_j_measured,
    sumIf(e.sign * e.co2_kg, e.energy_source = 'measured') AS co2_kg_measured,
    sumIf(e.sign * e.co2_kg_low, e.energy_source = 'measured') AS co2_kg_measured_low,
    sumIf(e.sign * e.co2_kg_high, e.energy_source = 'measured') AS co2_kg_measured_high
FROM {db}.usage_events AS e
GROUP BY org_id, day, project_id, provider, model, model_tier, factors_version, source;
