"""Pollers (issue 21): `connections.poll_notes` — what the last successful poll noticed and worked around (a JSON
list of short texts: OpenRouter BYOK usage left to another connection, bucket shapes skipped, inconsistent
figures), shown on the connections API.

Column defined in `controlplane/schema.py`.

Revision ID: 0100_pollers
Revises: 0090_gpu_targets
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0100_pollers"
down_revision = "0090_gpu_targets"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.add_column(sa.Column("poll_notes", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.drop_column("poll_notes")
