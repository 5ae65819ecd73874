"""Billing periods, carbon-credit inventory and allocations, monthly receipts, processed Stripe events.

Tables defined in `controlplane/schema.py`.

Revision ID: 0030_billing
Revises: 0020_connections
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0030_billing"
down_revision = "0020_connections"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "billing_periods",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("org_id", sa.String(36), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("status", sa.String(10), nullable=False, server_default="open"),
        sa.Column("cutoff", TS, nullable=True),
        sa.Column("adjustment_from", TS, nullable=True),
        sa.Column("closing_since", TS, nullable=True),
        sa.Column("figures", sa.Text(), nullable=True),
        sa.Column("co2_kg", sa.Float(), nullable=True),
        sa.Column("co2_kg_high", sa.Float(), nullable=True),
        sa.Column("credits_retired_kg", sa.Float(), nullable=True),
        sa.Column("error", sa.String(500), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("closed_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_periods")),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_billing_periods_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "status IN ('open', 'closing', 'closed', 'failed')", name=op.f("ck_billing_periods_status")
        ),
        sa.UniqueConstraint("org_id", "month", name=op.f("uq_billing_periods_org_id_month")),
    )
    op.create_index("ix_billing_periods_month_status", "billing_periods", ["month", "status"])

    op.create_table(
        "credit_blocks",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("registry", sa.String(50), nullable=False),
        sa.Column("serial_block", sa.String(200), nullable=False),
        sa.Column("serial_prefix", sa.String(150), nullable=False),
        sa.Column("first_number", sa.BigInteger(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("project", sa.String(200), nullable=False),
        sa.Column("vintage", sa.Integer(), nullable=False),
        sa.Column("tonnes", sa.Integer(), nullable=False),
        sa.Column("allocated_tonnes", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("loaded_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_blocks")),
        sa.UniqueConstraint("serial_block", name=op.f("uq_credit_blocks_serial_block")),
        sa.CheckConstraint("tonnes > 0", name=op.f("ck_credit_blocks_tonnes")),
        sa.CheckConstraint(
            "allocated_tonnes >= 0 AND allocated_tonnes <= tonnes", name=op.f("ck_credit_blocks_allocated")
        ),
    )

    op.create_table(
        "credit_allocations",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("period_id", sa.String(36), nullable=False),
        sa.Column("block_id", sa.String(36), nullable=False),
        sa.Column("first_index", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_allocations")),
        sa.ForeignKeyConstraint(
            ["period_id"],
            ["billing_periods.id"],
            name=op.f("fk_credit_allocations_period_id_billing_periods"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["block_id"],
            ["credit_blocks.id"],
            name=op.f("fk_credit_allocations_block_id_credit_blocks"),
            ondelete="RESTRICT",
        ),
        sa.UniqueConstraint(
            "block_id", "first_index", name=op.f("uq_credit_allocations_block_id_first_index")
        ),
        sa.CheckConstraint("count > 0", name=op.f("ck_credit_allocations_count")),
    )
    op.create_index(op.f("ix_credit_allocations_period_id"), "credit_allocations", ["period_id"])

    op.create_table(
        "receipt_counters",
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("month", name=op.f("pk_receipt_counters")),
    )

    op.create_table(
        "receipts",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("org_id", sa.String(36), nullable=False),
        sa.Column("period_id", sa.String(36), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("serial_number", sa.String(20), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("payload_hash", sa.String(64), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("key_version", sa.String(64), nullable=False),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("co2_retired_kg", sa.Float(), nullable=False),
        sa.Column("pdf_key", sa.Text(), nullable=True),
        sa.Column("pdf_sha256", sa.String(64), nullable=True),
        sa.Column("audit_pack_key", sa.Text(), nullable=True),
        sa.Column("audit_pack_sha256", sa.String(64), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_receipts")),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_receipts_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["period_id"],
            ["billing_periods.id"],
            name=op.f("fk_receipts_period_id_billing_periods"),
            ondelete="RESTRICT",
        ),
        sa.UniqueConstraint("period_id", name=op.f("uq_receipts_period_id")),
        sa.UniqueConstraint("serial_number", name=op.f("uq_receipts_serial_number")),
        sa.UniqueConstraint("month", "seq", name=op.f("uq_receipts_month_seq")),
    )
    op.create_index("ix_receipts_org_id_month", "receipts", ["org_id", "month"])

    op.create_table(
        "stripe_events",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("org_id", sa.String(36), nullable=True),
        sa.Column("outcome", sa.String(200), nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_events")),
    )


def downgrade() -> None:
    op.drop_table("stripe_events")
    op.drop_index("ix_receipts_org_id_month", table_name="receipts")
    op.drop_table("receipts")
    op.drop_table("receipt_counters")
    op.drop_index(op.f("ix_credit_allocations_period_id"), table_name="credit_allocations")
    op.drop_table("credit_allocations")
    op.drop_table("credit_blocks")
    op.drop_index("ix_billing_periods_month_status", table_name="billing_periods")
    op.drop_table("billing_periods")
