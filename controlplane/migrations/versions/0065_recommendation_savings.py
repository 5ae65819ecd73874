"""Insights: `recommendation_savings`, the measured savings ledger — one row per applied recommendation and
complete UTC day, written once by `api.savings.record_due`.

Table defined in `controlplane/schema.py`.

Revision ID: 0065_recommendation_savings
Revises: 0060_recommendations
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0065_recommendation_savings"
down_revision = "0060_recommendations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recommendation_savings",
        sa.Column("recommendation_id", sa.String(36), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("org_id", sa.String(36), nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("co2e_grams", sa.Float(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=True),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("factors_version", sa.String(40), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["recommendation_id"], ["recommendations.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("recommendation_id", "day"),
    )
    op.create_index("ix_recommendation_savings_org_id_day", "recommendation_savings", ["org_id", "day"])


def downgrade() -> None:
    op.drop_index("ix_recommendation_savings_org_id_day", table_name="recommendation_savings")
    op.drop_table("recommendation_savings")
