"""GPU telemetry: `gpu_targets` (the endpoints an org's GPUs are scraped from), `gpu_series` (each counter's
last sample), `gpu_hours` (its increase per hour) and `gpu_buckets` (what was published per hour and model).

Tables defined in `controlplane/schema.py`.

Revision ID: 0090_gpu_targets
Revises: 0080_batches
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0090_gpu_targets"
down_revision = "0080_batches"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def _target_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["target_id"], ["gpu_targets.id"], name=op.f(f"fk_{table}_target_id_gpu_targets"), ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "gpu_targets",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("org_id", sa.String(36), nullable=False),
        sa.Column("project_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("dcgm_url", sa.String(2000), nullable=True),
        sa.Column("server_urls", sa.Text(), nullable=False),
        sa.Column("prometheus_url", sa.String(2000), nullable=True),
        sa.Column("gpus", sa.Text(), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=True),
        sa.Column("provider", sa.String(200), nullable=False),
        sa.Column("region", sa.String(200), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("deleted_at", TS, nullable=True),
        sa.Column("last_scrape_at", TS, nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gpu_targets")),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_gpu_targets_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_gpu_targets_project_id_projects"),
            ondelete="RESTRICT",
        ),
    )
    op.create_index("ix_gpu_targets_org_id", "gpu_targets", ["org_id"])
    op.create_table(
        "gpu_series",
        sa.Column("target_id", sa.String(36), nullable=False),
        sa.Column("series", sa.String(500), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.PrimaryKeyConstraint("target_id", "series", name=op.f("pk_gpu_series")),
        _target_fk("gpu_series"),
    )
    op.create_table(
        "gpu_hours",
        sa.Column("target_id", sa.String(36), nullable=False),
        sa.Column("hour", TS, nullable=False),
        sa.Column("series", sa.String(500), nullable=False),
        sa.Column("amount", sa.Float(), nullable=False),
        sa.Column("resets", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("target_id", "hour", "series", name=op.f("pk_gpu_hours")),
        _target_fk("gpu_hours"),
    )
    op.create_table(
        "gpu_buckets",
        sa.Column("target_id", sa.String(36), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("hour", TS, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("target_id", "event_id", name=op.f("pk_gpu_buckets")),
        _target_fk("gpu_buckets"),
    )
    op.create_index("ix_gpu_buckets_target_id_hour", "gpu_buckets", ["target_id", "hour"])


def downgrade() -> None:
    op.drop_table("gpu_buckets")
    op.drop_table("gpu_hours")
    op.drop_table("gpu_series")
    op.drop_table("gpu_targets")
