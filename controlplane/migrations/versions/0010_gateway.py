"""Inference gateway: prepaid balances per org and signed per-request receipts.

Tables defined in `controlplane/schema.py`.

Revision ID: 0010_gateway
Revises: 0001_initial
Create Date: 2026-07-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_gateway"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "org_balances",
        sa.Column("org_id", sa.String(36), nullable=False),
        sa.Column("balance_micros", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_org_balances")),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_org_balances_org_id_organizations"),
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "gateway_receipts",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("org_id", sa.String(36), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("key_version", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateway_receipts")),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_gateway_receipts_org_id_organizations"),
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_gateway_receipts_org_id_created_at", "gateway_receipts", ["org_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_gateway_receipts_org_id_created_at", table_name="gateway_receipts")
    op.drop_table("gateway_receipts")
    op.drop_table("org_balances")
