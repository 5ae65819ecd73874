"""Control-plane SQL schema (SQLAlchemy Core). Migrations in `migrations/versions/` create exactly this
schema; `tests/controlplane` compares the migrated database with this metadata, so change both together.

Timestamps are timezone-aware UTC in Python on every backend (`UTCDateTime`): PostgreSQL stores
`timestamptz`, SQLite stores naive UTC text (fixed-width, so it sorts chronologically).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.types import TypeDecorator

PLAN_TIERS = ("free", "starter", "growth", "scale", "enterprise")
SCOPES = ("read", "ingest", "admin", "billing")
WORKLOAD_KINDS = ("connection", "gateway_key")

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


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


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
