"""Control-plane SQL schema (SQLAlchemy Core): every table, on one `metadata`. Migrations in
`migrations/versions/` create exactly this schema; `tests/controlplane` compares the migrated database with
this metadata, so change both together.

Tables by migration:

- `0001_initial`: `organizations`, `api_keys`, `projects`, `workloads`, `carbon_factor_versions`.
- `0010_gateway`: `org_balances` — one row per prepaid org, `balance_micros` in millionths of a US dollar
  (integers: no float rounding in money; an org with no row is not prepaid); `gateway_receipts` — one
  Ed25519-signed receipt per gateway request (`core.receipts.SignedRecord`).
- `0020_connections`: `connections` — one row per registered provider key (the key itself is never here:
  `secret_ref` is a `core.secrets` reference, cleared on delete; at most one live connection per org and
  provider; deleting is soft); `connection_buckets` — what the poller last published for each provider
  bucket (see `controlplane.polling`).
- `0030_billing`: `billing_periods`, `credit_blocks`, `credit_allocations`, `receipt_counters`, `receipts`,
  `stripe_events` (see `controlplane.billing`).
- `0040_price_overrides`: `price_overrides` — an org's own token prices (USD per 1M tokens) for the models
  matching a pattern, optionally for one provider; they take precedence over the factor set's price book
  (see `controlplane.prices`).
- `0050_kpi_cache`: `kpi_cache` (see `controlplane.kpi_cache`).
- `0060_recommendations`: `recommendations` — one row per (org, identity = type|scope|subject) the insights
  engine proposed, its state (`active`, `applied`, `ignored`, `stale`) and who changed it when;
  `recommendation_history` — every state change (see `controlplane.recommendations`).
- `0065_recommendation_savings`: `recommendation_savings` — the measured savings ledger: one row per applied
  recommendation and complete UTC day, written once (`controlplane.recommendations.SavingsLedger`).
- `0070_tenancy`: `users`, `memberships` (role admin|member|viewer, one default per user), `external_orgs`
  (identity-provider org id → org), `refresh_tokens` (rotation families), `identity_events` (webhook
  idempotency), `audit_log` (append-only, per org), `balance_transactions` (the prepaid ledger) and
  `auth_epochs` (the revocation counter the API and gateway check per request) — see `controlplane.tenancy`.
- `0075_signin_links`: `signin_links` — one-time, short-lived dashboard sign-in links (the token's hash, the
  org, the scopes of the session they open; see `controlplane.signin_links`).
- `0080_batches`: `batch_files` (uploaded batch inputs and produced outputs; bytes in the artefact store),
  `batches` (one row per batch: status, counts, timestamps, lease of the runner, carbon schedule),
  `batch_lines` (one row per finished line, keyed by custom_id: what makes a re-run idempotent) and
  `intensity_profiles` (hourly grid intensity per region for carbon-aware scheduling); see
  `controlplane.batches` and docs/batch.md.
- `0090_gpu_targets`: `gpu_targets` — DCGM / model-server / Prometheus endpoints an org's GPUs are scraped
  from, with their project and hosting provider; `gpu_series` (each counter's last sample), `gpu_hours` (its
  increase per hour), `gpu_buckets` (what was published per hour and model) — see `controlplane.gpu_targets`.

Timestamps are timezone-aware UTC in Python on every backend (`UTCDateTime`): PostgreSQL stores
`timestamptz`, SQLite stores naive UTC text (fixed-width, so it sorts chronologically).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeDecorator

from controlplane._util import sql_in as _in

PLAN_TIERS = ("free", "starter", "growth", "scale", "enterprise")
SCOPES = ("read", "ingest", "admin", "billing")
WORKLOAD_KINDS = ("connection", "gateway_key")
PROVIDERS = ("openai", "anthropic", "openrouter")
CONNECTION_STATUSES = ("active", "error", "disabled")
LAST_ERROR_MAX = 500
PERIOD_STATUSES = ("open", "closing", "closed", "failed")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in and out, whatever the backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):  # type: ignore[override]
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: control-plane timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect):  # type: ignore[override]
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


organizations = Table(
    "organizations",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("slug", String(64), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("plan_tier", String(20), nullable=False, server_default="free"),
    Column("stripe_customer_id", String(255), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    CheckConstraint(_in("plan_tier", PLAN_TIERS), name="plan_tier"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "org_id", String(36), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("name", String(200), nullable=False),
    Column("prefix", String(32), nullable=False, index=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("scopes", String(200), nullable=False),  # comma-separated, in SCOPES order: "read,admin"
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=True),
    Column("revoked_at", UTCDateTime(), nullable=True),
    Column("last_used_at", UTCDateTime(), nullable=True),
)

projects = Table(
    "projects",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("org_id", String(36), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("is_default", Boolean(), nullable=False, server_default=text("false")),
    Column("created_at", UTCDateTime(), nullable=False),
    # soft delete: telemetry keeps pointing at the project id, so its name stays resolvable
    Column("deleted_at", UTCDateTime(), nullable=True),
    # unique (org_id, name) among live projects; exactly one live default per org
    Index(
        "uq_projects_org_id_name_live",
        "org_id",
        "name",
        unique=True,
        sqlite_where=text("deleted_at IS NULL"),
        postgresql_where=text("deleted_at IS NULL"),
    ),
    Index(
        "uq_projects_org_id_default",
        "org_id",
        unique=True,
        sqlite_where=text("is_default AND deleted_at IS NULL"),
        postgresql_where=text("is_default AND deleted_at IS NULL"),
    ),
)

workloads = Table(
    "workloads",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("org_id", String(36), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column(
        "project_id", String(36), ForeignKey("projects.id", ondelete="RESTRICT"), nullable=False, index=True
    ),
    Column("kind", String(20), nullable=False),
    Column("ref_id", String(200), nullable=False),  # connection id or api key id
    Column("is_active", Boolean(), nullable=False, server_default=text("true")),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("deactivated_at", UTCDateTime(), nullable=True),
    CheckConstraint(_in("kind", WORKLOAD_KINDS), name="kind"),
    Index("ix_workloads_org_id_kind_ref_id", "org_id", "kind", "ref_id"),
    # at most one active workload per source
    Index(
        "uq_workloads_active_source",
        "org_id",
        "kind",
        "ref_id",
        unique=True,
        sqlite_where=text("is_active"),
        postgresql_where=text("is_active"),
    ),
)

carbon_factor_versions = Table(
    "carbon_factor_versions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("version", String(32), nullable=False, unique=True),
    Column("published_at", UTCDateTime(), nullable=False),
    Column("body", Text(), nullable=False),  # the factor set YAML, verbatim
    Column("tier_count", Integer(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)


# --------------------------------------------------------------------------------------------- gateway (0010)

org_balances = Table(
    "org_balances",
    metadata,
    Column("org_id", String(36), ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True),
    Column("balance_micros", BigInteger(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

gateway_receipts = Table(
    "gateway_receipts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("org_id", String(36), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("key_version", String(64), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("signature", String(128), nullable=False),
    Column("payload", Text(), nullable=False),  # canonical JSON of the signed payload
    Index("ix_gateway_receipts_org_id_created_at", "org_id", "created_at"),
)


# --------------------------------------------------------------------------------------------- connections (0020)

connections = Table(
    "connections",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "org_id", String(36), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("provider", String(20), nullable=False),
    Column("status", String(20), nullable=False, server_default="active"),
    Column("secret_ref", Text(), nullable=True),  # core.secrets reference; NULL once deleted
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("deleted_at", UTCDateTime(), nullable=True),
    Column("last_polled_at", UTCDateTime(), nullable=True),  # last successful poll
    Column("last_attempt_at", UTCDateTime(), nullable=True),
    Column("next_poll_at", UTCDateTime(), nullable=True),
    Column("poll_cursor", UTCDateTime(), nullable=True),
    Column("consecutive_failures", Integer(), nullable=False, server_default=text("0")),
    Column("last_error", String(LAST_ERROR_MAX), nullable=True),
    Column("sync_requested_at", UTCDateTime(), nullable=True),
    Column("sync_job_id", String(36), nullable=True),
    Column("last_sync_request_at", UTCDateTime(), nullable=True),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", UTCDateTime(), nullable=True),
    # what the last successful poll noticed and worked around (JSON list: BYOK overlap, odd buckets); 0100_pollers
    Column("poll_notes", Text(), nullable=True),
    CheckConstraint(_in("provider", PROVIDERS), name="provider"),
    CheckConstraint(_in("status", CONNECTION_STATUSES), name="status"),
    Index(
        "uq_connections_org_id_provider_live",
        "org_id",
        "provider",
        unique=True,
        sqlite_where=text("deleted_at IS NULL"),
        postgresql_where=text("deleted_at IS NULL"),
    ),
)

connection_buckets = Table(
    "connection_buckets",
    metadata,
    Column(
        "connection_id",
        String(36),
        ForeignKey("connections.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("event_id", String(200), primary_key=True),
    Column("bucket_start", UTCDateTime(), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("revision", BigInteger(), nullable=False),
    Column("event", Text(), nullable=False),  # the UsageEvent JSON last published for this bucket
    Column("updated_at", UTCDateTime(), nullable=False),
    Index("ix_connection_buckets_connection_id_bucket_start", "connection_id", "bucket_start"),
)


# --------------------------------------------------------------------------------------------- billing (0030)

billing_periods = Table(
    "billing_periods",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("org_id", String(36), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("month", String(7), nullable=False),  # "YYYY-MM"
    Column("period_start", Date(), nullable=False),
    Column("period_end", Date(), nullable=False),  # last day, inclusive
    Column("status", String(10), nullable=False, server_default="open"),
    Column("cutoff", UTCDateTime(), nullable=True),
    Column("adjustment_from", UTCDateTime(), nullable=True),  # previous close's cutoff (late events)
    Column("closing_since", UTCDateTime(), nullable=True),
    Column("figures", Text(), nullable=True),  # JSON, frozen by the first successful totals step
    Column("co2_kg", Float(), nullable=True),
    Column("co2_kg_high", Float(), nullable=True),
    Column("credits_retired_kg", Float(), nullable=True),
    Column("error", String(500), nullable=True),
    Column("attempts", Integer(), nullable=False, server_default="0"),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("closed_at", UTCDateTime(), nullable=True),
    CheckConstraint(_in("status", PERIOD_STATUSES), name="status"),
    UniqueConstraint("org_id", "month"),
    Index("ix_billing_periods_month_status", "month", "status"),
)

credit_blocks = Table(
    "credit_blocks",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("registry", String(50), nullable=False),
    Column("serial_block", String(200), nullable=False, unique=True),
    Column("serial_prefix", String(150), nullable=False),
    Column("first_number", BigInteger(), nullable=False),
    Column("width", Integer(), nullable=False),
    Column("project", String(200), nullable=False),
    Column("vintage", Integer(), nullable=False),
    Column("tonnes", Integer(), nullable=False),
    Column("allocated_tonnes", Integer(), nullable=False, server_default="0"),
    Column("loaded_at", UTCDateTime(), nullable=False),
    CheckConstraint("tonnes > 0", name="tonnes"),
    CheckConstraint("allocated_tonnes >= 0 AND allocated_tonnes <= tonnes", name="allocated"),
)

credit_allocations = Table(
    "credit_allocations",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "period_id",
        String(36),
        ForeignKey("billing_periods.id", ondelete="RESTRICT"),
        nullable=False,
        index=True,
    ),
    Column("block_id", String(36), ForeignKey("credit_blocks.id", ondelete="RESTRICT"), nullable=False),
    Column("first_index", Integer(), nullable=False),
    Column("count", Integer(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    UniqueConstraint("block_id", "first_index"),
    CheckConstraint("count > 0", name="count"),
)

receipt_counters = Table(
    "receipt_counters",
    metadata,
    Column("month", String(7), primary_key=True),
    Column("last_seq", Integer(), nullable=False),
)

receipts = Table(
    "receipts",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("org_id", String(36), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column(
        "period_id",
        String(36),
        ForeignKey("billing_periods.id", ondelete="RESTRICT"),
        nullable=False,
        unique=True,
    ),
    Column("month", String(7), nullable=False),
    Column("seq", Integer(), nullable=False),
    Column("serial_number", String(20), nullable=False, unique=True),
    Column("payload", Text(), nullable=False),  # canonical JSON of the signed payload
    Column("payload_hash", String(64), nullable=False),
    Column("signature", Text(), nullable=False),  # base64 Ed25519 over the canonical JSON
    Column("key_version", String(64), nullable=False),
    Column("public_key", String(64), nullable=False),  # base64, as published
    Column("co2_retired_kg", Float(), nullable=False),
    Column("pdf_key", Text(), nullable=True),
    Column("pdf_sha256", String(64), nullable=True),
    Column("audit_pack_key", Text(), nullable=True),
    Column("audit_pack_sha256", String(64), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    UniqueConstraint("month", "seq"),
    Index("ix_receipts_org_id_month", "org_id", "month"),
)

stripe_events = Table(
    "stripe_events",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("type", String(100), nullable=False),
    Column("org_id", String(36), nullable=True),
    Column("outcome", String(200), nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
)


# --------------------------------------------------------------------------------------------- prices (0040)

price_overrides = Table(
    "price_overrides",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("org_id", String(36), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("model_pattern", String(200), nullable=False),  # fnmatch glob, lower-case
    Column("provider", String(64), nullable=False, server_default=""),  # "" = every provider
    Column("input", Float(), nullable=False),  # USD per 1M uncached input tokens
    Column("cached_input", Float(), nullable=False),
    Column("cache_write", Float(), nullable=False),
    Column("output", Float(), nullable=False),
    Column("note", String(500), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    UniqueConstraint("org_id", "provider", "model_pattern"),
)


# --------------------------------------------------------------------------------------------- KPI cache (0050)

kpi_cache = Table(
    "kpi_cache",
    metadata,
    Column("org_id", String(36), ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True),
    Column("window_slug", String(8), primary_key=True),  # 24h, 7d, 30d, 1y, ytd (core.windows.WINDOW_SLUGS)
    Column("window_start", UTCDateTime(), nullable=False),
    Column("window_end", UTCDateTime(), nullable=False),
    Column("computed_at", UTCDateTime(), nullable=False),
    Column("summary", Text(), nullable=False),  # JSON: the window's figures
    Column("series", Text(), nullable=False),  # JSON: the window's chart points
)


# --------------------------------------------------------------------------------------------- insights (0060)

RECOMMENDATION_STATUSES = ("active", "applied", "ignored", "stale")

recommendations = Table(
    "recommendations",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("org_id", String(36), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("identity", String(600), nullable=False),  # type|scope|subject: a re-run updates this row
    Column("type", String(40), nullable=False),
    Column("scope", String(20), nullable=False),
    Column("subject", String(500), nullable=False),
    Column("project_id", String(36), nullable=True),
    Column("model", String(200), nullable=True),
    Column("status", String(10), nullable=False),
    Column("priority", String(10), nullable=False),
    Column("description", Text(), nullable=False),
    Column("potential_savings_co2e_grams", Float(), nullable=False),  # per year
    Column("potential_savings_cost", Float(), nullable=True),  # USD per year; None without prices
    Column("evidence", Text(), nullable=False),  # JSON
    Column("first_seen_at", UTCDateTime(), nullable=False),
    Column("last_seen_at", UTCDateTime(), nullable=False),  # the last run whose window held the condition
    Column("status_changed_at", UTCDateTime(), nullable=False),
    Column("status_changed_by", String(200), nullable=False),  # "engine", "api_key:<id>", "jwt:<sub>"
    Column("realized_savings_co2e_grams", Float(), nullable=True),  # as reported when applied
    Column("realized_savings_cost", Float(), nullable=True),
    Column("realized_reason", String(500), nullable=True),
    UniqueConstraint("org_id", "identity"),
    CheckConstraint(_in("status", RECOMMENDATION_STATUSES), name="status"),
)

recommendation_history = Table(
    "recommendation_history",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("org_id", String(36), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column(
        "recommendation_id", String(36), ForeignKey("recommendations.id", ondelete="CASCADE"), nullable=False
    ),
    Column("at", UTCDateTime(), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("from_status", String(10), nullable=True),  # None: created
    Column("to_status", String(10), nullable=False),
    Column("note", String(500), nullable=True),
    Index("ix_recommendation_history_org_id_at", "org_id", "at"),
)

recommendation_savings = Table(
    "recommendation_savings",
    metadata,
    Column(
        "recommendation_id",
        String(36),
        ForeignKey("recommendations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("day", Date(), primary_key=True),  # the UTC day measured (the applied day: from the applied hour)
    Column("org_id", String(36), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("type", String(40), nullable=False),
    Column("co2e_grams", Float(), nullable=False),  # signed: negative when the change made things worse
    Column("cost", Float(), nullable=True),  # USD; None without prices
    Column("events", BigInteger(), nullable=False),  # the affected traffic the figure is computed over
    Column("requests", BigInteger(), nullable=False),
    Column("factors_version", String(40), nullable=False),
    Column("recorded_at", UTCDateTime(), nullable=False),
    Index("ix_recommendation_savings_org_id_day", "org_id", "day"),
)


# --------------------------------------------------------------------------------------------- GPU telemetry (0090)

gpu_targets = Table(
    "gpu_targets",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "org_id", String(36), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("project_id", String(36), ForeignKey("projects.id", ondelete="RESTRICT"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("dcgm_url", String(2000), nullable=True),  # a DCGM exporter's /metrics
    Column("server_urls", Text(), nullable=False),  # JSON list: the model servers' /metrics
    Column("prometheus_url", String(2000), nullable=True),  # instead of the two above: a Prometheus server
    Column("gpus", Text(), nullable=False),  # JSON list of GPU UUIDs or indices; [] = every GPU
    Column("hostname", String(255), nullable=True),  # only series with this Hostname label
    Column("provider", String(200), nullable=False),  # where the GPUs run (PUE, grid): aws, azure, google, …
    Column("region", String(200), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("deleted_at", UTCDateTime(), nullable=True),
    Column("last_scrape_at", UTCDateTime(), nullable=True),  # last successful scrape
    Column("last_error", String(LAST_ERROR_MAX), nullable=True),
)

gpu_series = Table(  # the last sample of every counter series a target reads
    "gpu_series",
    metadata,
    Column("target_id", String(36), ForeignKey("gpu_targets.id", ondelete="CASCADE"), primary_key=True),
    Column("series", String(500), primary_key=True),  # energy|<gpu> or prompt|<model> or generation|<model>
    Column("value", Float(), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
)

gpu_hours = Table(  # each series' increase per hour (core.methodology.measured.spread)
    "gpu_hours",
    metadata,
    Column("target_id", String(36), ForeignKey("gpu_targets.id", ondelete="CASCADE"), primary_key=True),
    Column("hour", UTCDateTime(), primary_key=True),
    Column("series", String(500), primary_key=True),
    Column("amount", Float(), nullable=False),
    Column("resets", Integer(), nullable=False, server_default=text("0")),
)

gpu_buckets = Table(  # what the scraper last published per (target, hour, model): revisions
    "gpu_buckets",
    metadata,
    Column("target_id", String(36), ForeignKey("gpu_targets.id", ondelete="CASCADE"), primary_key=True),
    Column("event_id", String(200), primary_key=True),
    Column("hour", UTCDateTime(), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("revision", BigInteger(), nullable=False),
    Column("event", Text(), nullable=False),
    Index("ix_gpu_buckets_target_id_hour", "target_id", "hour"),
)


# --------------------------------------------------------------------------------------------- dashboard (0075)

signin_links = Table(
    "signin_links",
    metadata,
    Column("token_hash", String(64), primary_key=True),  # SHA-256 hex of the link's token; never the token
    Column("org_id", String(36), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("scopes", String(100), nullable=False),  # of the session key the exchange issues
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("used_at", UTCDateTime(), nullable=True),  # set once, by the one exchange that wins
)


# --------------------------------------------------------------------------------------------- batch API (0080)

BATCH_STATUSES = (
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
)
BATCH_FILE_PURPOSES = ("batch", "batch_output")

batch_files = Table(
    "batch_files",
    metadata,
    Column("id", String(40), primary_key=True),  # file-<24 hex>
    Column("org_id", String(36), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("purpose", String(20), nullable=False),
    Column("filename", String(255), nullable=False),
    Column("bytes", BigInteger(), nullable=False),
    Column("line_count", Integer(), nullable=False),
    Column("storage_key", String(300), nullable=False),  # key in the artefact store (core.artifacts)
    Column("sha256", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    CheckConstraint(_in("purpose", BATCH_FILE_PURPOSES), name="purpose"),
    Index("ix_batch_files_org_id_created_at", "org_id", "created_at"),
)

batches = Table(
    "batches",
    metadata,
    Column("id", String(40), primary_key=True),  # batch_<24 hex>
    Column("org_id", String(36), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("key_id", String(36), nullable=False),  # the API key that created it: its lines run as that key
    Column("endpoint", String(40), nullable=False),
    Column("input_file_id", String(40), nullable=False),
    Column("completion_window", String(8), nullable=False),
    Column("status", String(12), nullable=False),
    Column("batch_metadata", Text(), nullable=True),  # JSON object, at most 16 string pairs
    Column("errors", Text(), nullable=True),  # JSON list of {code, message, param, line}
    Column("output_file_id", String(40), nullable=True),
    Column("error_file_id", String(40), nullable=True),
    Column("total", Integer(), nullable=False),
    Column("completed", Integer(), nullable=False),
    Column("failed", Integer(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("in_progress_at", UTCDateTime(), nullable=True),
    Column("finalizing_at", UTCDateTime(), nullable=True),
    Column("completed_at", UTCDateTime(), nullable=True),
    Column("failed_at", UTCDateTime(), nullable=True),
    Column("expired_at", UTCDateTime(), nullable=True),
    Column("cancelling_at", UTCDateTime(), nullable=True),
    Column("cancelled_at", UTCDateTime(), nullable=True),
    Column("run_after", UTCDateTime(), nullable=True),  # carbon-aware deferral: no line starts before
    Column("carbon", Text(), nullable=True),  # JSON: the schedule and its CO2e versus running at once
    Column("lease_owner", String(64), nullable=True),  # the runner working on it, until lease_until
    Column("lease_until", UTCDateTime(), nullable=True),
    CheckConstraint(_in("status", BATCH_STATUSES), name="status"),
    Index("ix_batches_org_id_created_at", "org_id", "created_at"),
    Index("ix_batches_status", "status"),
)

batch_lines = Table(
    "batch_lines",
    metadata,
    Column("batch_id", String(40), ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True),
    Column("custom_id", String(512), primary_key=True),
    Column("line_no", Integer(), nullable=False),
    Column("ok", Boolean(), nullable=False),  # a 2xx answer (output file) or not (error file)
    Column("output", Text(), nullable=False),  # the output/error file line (JSON)
    Column("energy_j", Float(), nullable=False),
    Column("co2_kg", Float(), nullable=False),
    Column("done_at", UTCDateTime(), nullable=False),
)

intensity_profiles = Table(
    "intensity_profiles",
    metadata,
    Column("region", String(64), primary_key=True),
    Column("hour", Integer(), primary_key=True),  # hour of the day, UTC, 0-23
    Column("intensity_kg_per_kwh", Float(), nullable=False),
    Column("loaded_at", UTCDateTime(), nullable=False),
    CheckConstraint("hour >= 0 AND hour <= 23", name="hour"),
)


# --------------------------------------------------------------------------------------------- tenancy (0070)

ROLES = ("admin", "member", "viewer")
BALANCE_TX_KINDS = ("topup", "debit", "adjustment")

users = Table(
    "users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("email", String(320), nullable=True, unique=True),  # lower-case; None for an IdP user without one
    Column("name", String(200), nullable=True),
    Column("password_hash", Text(), nullable=True),  # argon2id; None: the identity provider signs them in
    Column("external_id", String(200), nullable=True, unique=True),  # the identity provider's user id
    Column("created_at", UTCDateTime(), nullable=False),
    Column("deleted_at", UTCDateTime(), nullable=True),
)

memberships = Table(
    "memberships",
    metadata,
    Column("org_id", String(36), ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True),
    Column("role", String(10), nullable=False),
    Column("is_default", Boolean(), nullable=False, server_default=text("false")),
    Column("created_at", UTCDateTime(), nullable=False),
    CheckConstraint(_in("role", ROLES), name="role"),
)

external_orgs = Table(
    "external_orgs",
    metadata,
    Column("external_id", String(200), primary_key=True),  # the identity provider's organization id
    Column(
        "org_id", String(36), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False, unique=True
    ),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("family_id", String(36), nullable=False, index=True),
    Column("issued_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("used_at", UTCDateTime(), nullable=True),  # rotated: presenting it again is reuse
    Column("revoked_at", UTCDateTime(), nullable=True),
)

identity_events = Table(
    "identity_events",
    metadata,
    Column("id", String(255), primary_key=True),  # svix-id: idempotency of the identity webhook
    Column("type", String(100), nullable=False),
    Column("outcome", String(200), nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("org_id", String(36), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("actor", String(200), nullable=False),  # "user:<id>", "api_key:<id>", "identity_provider", "cli"
    Column("action", String(60), nullable=False),
    Column("target", String(200), nullable=True),
    Column("detail", Text(), nullable=True),  # JSON
    Index("ix_audit_log_org_id_at", "org_id", "at"),
)

balance_transactions = Table(
    "balance_transactions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("org_id", String(36), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(12), nullable=False),
    Column("amount_micros", BigInteger(), nullable=False),  # signed: debits are negative
    Column(
        "hour", UTCDateTime(), nullable=True
    ),  # debits: the hour they aggregate (one row per org and hour)
    Column("requests", Integer(), nullable=False, server_default=text("0")),  # debits: requests aggregated
    Column("reason", String(500), nullable=True),
    Column("actor", String(200), nullable=True),
    Column("ref", String(255), nullable=True, unique=True),  # top-ups: the Checkout session (idempotency)
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    CheckConstraint(_in("kind", BALANCE_TX_KINDS), name="kind"),
    UniqueConstraint("org_id", "kind", "hour"),
    Index("ix_balance_transactions_org_id_created_at", "org_id", "created_at"),
)

auth_epochs = Table(
    "auth_epochs",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=False),  # one row, id 1
    Column(
        "epoch", BigInteger(), nullable=False
    ),  # bumped by every revocation, rotation, role change, removal
)
