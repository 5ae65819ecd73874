"""Initial control plane: organizations, api_keys, projects, workloads, carbon_factor_versions.

Revision ID: 0001_initial
Revises:
Create Date: 2026-07-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "organizations",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("slug", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("plan_tier", sa.String(20), nullable=False, server_default="free"),
        sa.Column("stripe_customer_id", sa.String(255), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organizations")),
        sa.UniqueConstraint("slug", name=op.f("uq_organizations_slug")),
        sa.CheckConstraint(
            "plan_tier IN ('free', 'starter', 'growth', 'scale', 'enterprise')",
            name=op.f("ck_organizations_plan_tier"),
        ),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("org_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=True),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("last_used_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_api_keys_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index(op.f("ix_api_keys_org_id"), "api_keys", ["org_id"])
    op.create_index(op.f("ix_api_keys_prefix"), "api_keys", ["prefix"])

    op.create_table(
        "projects",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("org_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("deleted_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_projects_org_id_organizations"),
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        op.f("uq_projects_org_id_name_live"),
        "projects",
        ["org_id", "name"],
        unique=True,
        sqlite_where=sa.text("deleted_at IS NULL"),
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_index(
        op.f("uq_projects_org_id_default"),
        "projects",
        ["org_id"],
        unique=True,
        sqlite_where=sa.text("is_default AND deleted_at IS NULL"),
        postgresql_where=sa.text("is_default AND deleted_at IS NULL"),
    )

    op.create_table(
        "workloads",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("org_id", sa.String(36), nullable=False),
        sa.Column("project_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("ref_id", sa.String(200), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False, server_default=sa.text("true")),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("deactivated_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workloads")),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_workloads_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_workloads_project_id_projects"),
            ondelete="RESTRICT",
        ),
        sa.CheckConstraint("kind IN ('connection', 'gateway_key')", name=op.f("ck_workloads_kind")),
    )
    op.create_index(op.f("ix_workloads_project_id"), "workloads", ["project_id"])
    op.create_index(op.f("ix_workloads_org_id_kind_ref_id"), "workloads", ["org_id", "kind", "ref_id"])
    op.create_index(
        op.f("uq_workloads_active_source"),
        "workloads",
        ["org_id", "kind", "ref_id"],
        unique=True,
        sqlite_where=sa.text("is_active"),
        postgresql_where=sa.text("is_active"),
    )

    op.create_table(
        "carbon_factor_versions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("published_at", TS, nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("tier_count", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_carbon_factor_versions")),
        sa.UniqueConstraint("version", name=op.f("uq_carbon_factor_versions_version")),
    )


def downgrade() -> None:
    op.drop_table("carbon_factor_versions")
    op.drop_table("workloads")
    op.drop_table("projects")
    op.drop_table("api_keys")
    op.drop_table("organizations")
