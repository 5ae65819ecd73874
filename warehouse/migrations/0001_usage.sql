-- joulestream usage ledger and its rollups.
--
-- Exactness comes from the design, not from merges:
--   * usage_events is a signed ledger (plain MergeTree). One row per (event_id, revision) *state change*:
--     sign = +1 makes that revision live, sign = -1 cancels a previously live revision (a copy of the live
--     row). Invariant, kept by warehouse/ledger.py: per event_id, sum(sign) is 0 or 1, and at most one
--     revision has net sign +1.
--   * usage_hourly / usage_daily are SummingMergeTree rollups fed by materialized views that sum
--     sign × value. Readers always aggregate with sum() … GROUP BY (never FINAL, never rely on merges).
--   * the one gap MVs cannot close (a crash between the ledger part and the MV parts — no cross-table
--     transaction) is closed by warehouse.ledger.reconcile_rollups.
--
-- Contract rule: event identity includes the bucket. All revisions of an event_id keep the same org_id and
-- bucket_start (poller ids are derived from provider, connection, bucket, model, …). The writer looks up the
-- live revision by (org_id, bucket_start, event_id), the ledger's primary-key prefix.
--
-- Each statement ends with ';' at the end of a line. {db} is replaced by the target database. Statements are
-- idempotent (IF NOT EXISTS) so a migration interrupted half-way can be re-run.

CREATE TABLE IF NOT EXISTS {db}.usage_events
(
    schema_version UInt16,
    event_id String,
    revision UInt64,
    source LowCardinality(String),
    org_id String,
    project_id String,
    workload_id String,
    connection_id Nullable(String),
    provider LowCardinality(String),
    model LowCardinality(String),
    region LowCardinality(Nullable(String)),
    routing_tier LowCardinality(Nullable(String)),
    bucket_start DateTime64(3, 'UTC'),
    bucket_end DateTime64(3, 'UTC'),
    event_timestamp DateTime64(3, 'UTC'),
    input_tokens_uncached UInt64,
    input_tokens_cached UInt64,
    input_tokens_cache_creation UInt64,
    output_tokens UInt64,
    request_count UInt64,
    labels Map(String, String),
    model_tier LowCardinality(String),
    factors_version LowCardinality(String),
    is_estimated Bool,
    estimation_reasons Array(String),
    j_per_prefill_token Float64,
    j_per_decode_token Float64,
    j_per_cached_token Float64,
    j_per_cache_creation_token Float64,
    pue Float64,
    grid_intensity_kg_per_kwh Float64,
    energy_j Float64,
    energy_j_low Float64,
    energy_j_high Float64,
    co2_kg Float64,
    co2_kg_low Float64,
    co2_kg_high Float64,
    enriched_at DateTime64(3, 'UTC'),
    sign Int8,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX ingested_at_minmax ingested_at TYPE minmax GRANULARITY 1
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(bucket_start)
ORDER BY (org_id, bucket_start, event_id, revision);

CREATE TABLE IF NOT EXISTS {db}.usage_hourly
(
    org_id String,
    hour DateTime('UTC'),
    project_id String,
    provider LowCardinality(String),
    model LowCardinality(String),
    model_tier LowCardinality(String),
    factors_version LowCardinality(String),
    source LowCardinality(String),
    events Int64,
    request_count Int64,
    input_tokens_uncached Int64,
    input_tokens_cached Int64,
    input_tokens_cache_creation Int64,
    output_tokens Int64,
    energy_j Float64,
    energy_j_low Float64,
    energy_j_high Float64,
    co2_kg Float64,
    co2_kg_low Float64,
    co2_kg_high Float64,
    energy_cached_savings_j Float64,
    co2_cached_savings_kg Float64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (org_id, hour, project_id, provider, model, model_tier, factors_version, source);

CREATE TABLE IF NOT EXISTS {db}.usage_daily
(
    org_id String,
    day Date,
    project_id String,
    provider LowCardinality(String),
    model LowCardinality(String),
    model_tier LowCardinality(String),
    factors_version LowCardinality(String),
    source LowCardinality(String),
    events Int64,
    request_count Int64,
    input_tokens_uncached Int64,
    input_tokens_cached Int64,
    input_tokens_cache_creation Int64,
    output_tokens Int64,
    energy_j Float64,
    energy_j_low Float64,
    energy_j_high Float64,
    co2_kg Float64,
    co2_kg_low Float64,
    co2_kg_high Float64,
    energy_cached_savings_j Float64,
    co2_cached_savings_kg Float64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (org_id, day, project_id, provider, model, model_tier, factors_version, source);

-- Column names are qualified (e.x) where an output alias shadows the input column of the same name.
-- Cached-token savings: what the cached input tokens would have cost at the prefill price, minus what they
-- cost at the cached price, at the event's own PUE and grid intensity (facility J, kg CO2e).
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
    sum(e.sign * e.input_tokens_cached * (e.j_per_prefill_token - e.j_per_cached_token) * e.pue) AS energy_cached_savings_j,
    sum(e.sign * e.input_tokens_cached * (e.j_per_prefill_token - e.j_per_cached_token) * e.pue
        * e.grid_intensity_kg_per_kwh / 3600000) AS co2_cached_savings_kg
FROM {db}.usage_events AS e
GROUP BY org_id, hour, project_id, provider, model, model_tier, factors_version, source;

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
    sum(e.sign * e.input_tokens_cached * (e.j_per_prefill_token - e.j_per_cached_token) * e.pue) AS energy_cached_savings_j,
    sum(e.sign * e.input_tokens_cached * (e.j_per_prefill_token - e.j_per_cached_token) * e.pue
        * e.grid_intensity_kg_per_kwh / 3600000) AS co2_cached_savings_kg
FROM {db}.usage_events AS e
GROUP BY org_id, day, project_id, provider, model, model_tier, factors_version, source;
