"""Per-org price overrides: an org's own token prices for the models matching a pattern.

Table defined in `controlplane/schema.py`.

Revision ID: 0040_price_overrides
Revises: 0030_billing
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0040_price_overrides"
down_revision = "0030_billing"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "price_overrides",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("org_id", sa.String(36), nullable=False),
        sa.Column("model_pattern", sa.String(200), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False, server_default=""),
        sa.Column("input", sa.Float(), nullable=False),
        sa.Column("cached_input", sa.Float(), nullable=False),
        sa.Column("cache_write", sa.Float(), nullable=False),
        sa.Column("output", sa.Float(), nullable=False),
        sa.Column("note", sa.String(500), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_price_overrides")),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_price_overrides_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "org_id",
            "provider",
            "model_pattern",
            name=op.f("uq_price_overrides_org_id_provider_model_pattern"),
        ),
    )


def downgrade() -> None:
    op.drop_table("price_overrides")
