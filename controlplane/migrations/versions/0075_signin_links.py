"""Dashboard sign-in links: one-time, short-lived tokens that the dashboard exchanges for a session key.

Table defined in `controlplane/schema.py`.

Revision ID: 0075_signin_links
Revises: 0070_tenancy
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0075_signin_links"
down_revision = "0070_tenancy"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "signin_links",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("org_id", sa.String(36), nullable=False),
        sa.Column("scopes", sa.String(100), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("used_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_signin_links")),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_signin_links_org_id_organizations"),
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("signin_links")
