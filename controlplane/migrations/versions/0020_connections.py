"""Provider connections and the pollers' per-bucket state.

Tables defined in `controlplane/schema.py`.

Revision ID: 0020_connections
Revises: 0010_gateway
Create Date: 2026-07-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020_connections"
down_revision = "0010_gateway"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "connections",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("org_id", sa.String(36), nullable=False),
        sa.Column("provider", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False, server_default="active"),
        sa.Column("secret_ref", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("deleted_at", TS, nullable=True),
        sa.Column("last_polled_at", TS, nullable=True),
        sa.Column("last_attempt_at", TS, nullable=True),
        sa.Column("next_poll_at", TS, nullable=True),
        sa.Column("poll_cursor", TS, nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("sync_requested_at", TS, nullable=True),
        sa.Column("sync_job_id", sa.String(36), nullable=True),
        sa.Column("last_sync_request_at", TS, nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connections")),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_connections_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "provider IN ('openai', 'anthropic', 'openrouter')", name=op.f("ck_connections_provider")
        ),
        sa.CheckConstraint("status IN ('active', 'error', 'disabled')", name=op.f("ck_connections_status")),
    )
    op.create_index(op.f("ix_connections_org_id"), "connections", ["org_id"])
    op.create_index(
        "uq_connections_org_id_provider_live",
        "connections",
        ["org_id", "provider"],
        unique=True,
        sqlite_where=sa.text("deleted_at IS NULL"),
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_table(
        "connection_buckets",
        sa.Column("connection_id", sa.String(36), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("bucket_start", TS, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("connection_id", "event_id", name=op.f("pk_connection_buckets")),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_connection_buckets_connection_id_connections"),
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_connection_buckets_connection_id_bucket_start",
        "connection_buckets",
        ["connection_id", "bucket_start"],
    )


def downgrade() -> None:
    op.drop_index("ix_connection_buckets_connection_id_bucket_start", table_name="connection_buckets")
    op.drop_table("connection_buckets")
    op.drop_index("uq_connections_org_id_provider_live", table_name="connections")
    op.drop_index(op.f("ix_connections_org_id"), table_name="connections")
    op.drop_table("connections")
