"""Insights: `recommendations` (one row per org and identity type|scope|subject, with its state and who
changed it when) and `recommendation_history` (every state change).

Tables defined in `controlplane/schema.py`.

Revision ID: 0060_recommendations
Revises: 0050_kpi_cache
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0060_recommendations"
down_revision = "0050_kpi_cache"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "recommendations",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("org_id", sa.String(36), nullable=False),
        sa.Column("identity", sa.String(600), nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("scope", sa.String(20), nullable=False),
        sa.Column("subject", sa.String(500), nullable=False),
        sa.Column("project_id", sa.String(36), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("priority", sa.String(10), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("potential_savings_co2e_grams", sa.Float(), nullable=False),
        sa.Column("potential_savings_cost", sa.Float(), nullable=True),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.Column("first_seen_at", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
        sa.Column("status_changed_at", TS, nullable=False),
        sa.Column("status_changed_by", sa.String(200), nullable=False),
        sa.Column("realized_savings_co2e_grams", sa.Float(), nullable=True),
        sa.Column("realized_savings_cost", sa.Float(), nullable=True),
        sa.Column("realized_reason", sa.String(500), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recommendations")),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_recommendations_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("org_id", "identity", name=op.f("uq_recommendations_org_id_identity")),
        sa.CheckConstraint(
            "status IN ('active', 'applied', 'ignored', 'stale')", name=op.f("ck_recommendations_status")
        ),
    )
    op.create_table(
        "recommendation_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org_id", sa.String(36), nullable=False),
        sa.Column("recommendation_id", sa.String(36), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("from_status", sa.String(10), nullable=True),
        sa.Column("to_status", sa.String(10), nullable=False),
        sa.Column("note", sa.String(500), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recommendation_history")),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_recommendation_history_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["recommendation_id"],
            ["recommendations.id"],
            name=op.f("fk_recommendation_history_recommendation_id_recommendations"),
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_recommendation_history_org_id_at", "recommendation_history", ["org_id", "at"])


def downgrade() -> None:
    op.drop_table("recommendation_history")
    op.drop_table("recommendations")
