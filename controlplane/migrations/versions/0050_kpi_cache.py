"""The dashboard KPI cache: per org and window (24h, 7d, 30d, 1y, ytd), the figures and chart points computed
from the warehouse rollups, and when.

Table defined in `controlplane/schema.py`.

Revision ID: 0050_kpi_cache
Revises: 0040_price_overrides
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0050_kpi_cache"
down_revision = "0040_price_overrides"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "kpi_cache",
        sa.Column("org_id", sa.String(36), nullable=False),
        sa.Column("window_slug", sa.String(8), nullable=False),
        sa.Column("window_start", TS, nullable=False),
        sa.Column("window_end", TS, nullable=False),
        sa.Column("computed_at", TS, nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("series", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "window_slug", name=op.f("pk_kpi_cache")),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_kpi_cache_org_id_organizations"),
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("kpi_cache")
