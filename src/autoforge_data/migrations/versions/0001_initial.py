"""Initial schema: users, prompts, versions, evaluations, embedding registry, default vectors.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from autoforge_data.db.types import F32Vector

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOW = sa.text("(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))")
STAMP = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"


def _timestamps() -> list[sa.Column[str]]:
    return [
        sa.Column("created_at", sa.String(24), nullable=False, server_default=NOW),
        sa.Column("updated_at", sa.String(24), nullable=False, server_default=NOW),
    ]


def upgrade() -> None:
    """Create the initial tables, indexes and triggers."""
    op.create_table(
        "users",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("clerk_id", sa.String(64), nullable=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("metadata", sa.Text(), nullable=False, server_default=sa.text("'{}'")),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("clerk_id", name=op.f("uq_users_clerk_id")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
        sa.CheckConstraint("json_valid(metadata)", name=op.f("ck_users_metadata_json")),
    )
    op.create_table(
        "prompts",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("owner_id", sa.String(26), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default=sa.text("'draft'")),
        sa.Column("current_version", sa.Integer(), nullable=False, server_default=sa.text("1")),
        sa.Column("metadata", sa.Text(), nullable=False, server_default=sa.text("'{}'")),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompts")),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_prompts_owner_id_users"), ondelete="RESTRICT"
        ),
        sa.CheckConstraint(
            "status IN ('draft', 'active', 'archived')", name=op.f("ck_prompts_status")
        ),
        sa.CheckConstraint("current_version >= 1", name=op.f("ck_prompts_current_version")),
        sa.CheckConstraint("json_valid(metadata)", name=op.f("ck_prompts_metadata_json")),
    )
    op.create_index(
        "ix_prompts_owner_list",
        "prompts",
        ["owner_id", "id", "status", "title", "current_version", "created_at", "updated_at"],
    )
    op.create_index("ix_prompts_status_id", "prompts", ["status", "id"])
    op.create_table(
        "prompt_versions",
        sa.Column("prompt_id", sa.String(26), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("created_at", sa.String(24), nullable=False, server_default=NOW),
        sa.PrimaryKeyConstraint("prompt_id", "version", name=op.f("pk_prompt_versions")),
        sa.ForeignKeyConstraint(
            ["prompt_id"],
            ["prompts.id"],
            name=op.f("fk_prompt_versions_prompt_id_prompts"),
            ondelete="RESTRICT",
        ),
        sa.CheckConstraint("version >= 1", name=op.f("ck_prompt_versions_version")),
    )
    op.create_table(
        "evaluations",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("prompt_id", sa.String(26), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("metrics", sa.Text(), nullable=False, server_default=sa.text("'{}'")),
        sa.Column("created_at", sa.String(24), nullable=False, server_default=NOW),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluations")),
        sa.ForeignKeyConstraint(
            ["prompt_id", "version"],
            ["prompt_versions.prompt_id", "prompt_versions.version"],
            name="fk_evaluations_prompt_version",
            ondelete="RESTRICT",
        ),
        sa.CheckConstraint("json_valid(metrics)", name=op.f("ck_evaluations_metrics_json")),
    )
    op.create_index("ix_evaluations_prompt_id_id", "evaluations", ["prompt_id", "id"])
    op.create_table(
        "embedding_models",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("dimension", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(16), nullable=False, server_default=sa.text("'cosine'")),
        sa.Column("normalized", sa.Boolean(), nullable=False, server_default=sa.text("1")),
        sa.Column("status", sa.String(16), nullable=False, server_default=sa.text("'building'")),
        sa.Column("table_name", sa.String(64), nullable=False),
        sa.Column("created_at", sa.String(24), nullable=False, server_default=NOW),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_embedding_models")),
        sa.UniqueConstraint("table_name", name=op.f("uq_embedding_models_table_name")),
        sa.CheckConstraint(
            "dimension BETWEEN 1 AND 65536", name=op.f("ck_embedding_models_dimension")
        ),
        sa.CheckConstraint("metric IN ('cosine', 'l2')", name=op.f("ck_embedding_models_metric")),
        sa.CheckConstraint(
            "status IN ('building', 'active', 'retired')", name=op.f("ck_embedding_models_status")
        ),
    )
    op.create_index(
        "uq_embedding_models_active",
        "embedding_models",
        ["status"],
        unique=True,
        sqlite_where=sa.text("status = 'active'"),
    )
    op.create_table(
        "emb_all_minilm_l6_v2",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prompt_id", sa.String(26), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("embedding", F32Vector(384), nullable=False),
        sa.Column("created_at", sa.String(24), nullable=False, server_default=NOW),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_emb_all_minilm_l6_v2")),
        sa.UniqueConstraint("prompt_id", name=op.f("uq_emb_all_minilm_l6_v2_prompt_id")),
        sa.ForeignKeyConstraint(
            ["prompt_id"],
            ["prompts.id"],
            name=op.f("fk_emb_all_minilm_l6_v2_prompt_id_prompts"),
            ondelete="CASCADE",
        ),
    )
    op.execute(
        "INSERT INTO embedding_models (name, dimension, metric, normalized, status, table_name) "
        "VALUES ('all-MiniLM-L6-v2', 384, 'cosine', 1, 'active', 'emb_all_minilm_l6_v2')"
    )
    for table in ("users", "prompts"):
        # updated_at really updates, even for an UPDATE that forgot to set it.
        op.execute(
            f"CREATE TRIGGER trg_{table}_touch AFTER UPDATE ON {table} FOR EACH ROW "
            f"WHEN NEW.updated_at = OLD.updated_at BEGIN "
            f"UPDATE {table} SET updated_at = {STAMP} WHERE id = NEW.id; END"
        )
    for action in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER trg_prompt_versions_no_{action.lower()} BEFORE {action} "
            "ON prompt_versions BEGIN "
            "SELECT RAISE(ABORT, 'prompt_versions rows are immutable'); END"
        )


def downgrade() -> None:
    """Drop everything the upgrade created."""
    for name in (
        "trg_prompt_versions_no_update",
        "trg_prompt_versions_no_delete",
        "trg_users_touch",
        "trg_prompts_touch",
    ):
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("emb_all_minilm_l6_v2")
    op.drop_index("uq_embedding_models_active", table_name="embedding_models")
    op.drop_table("embedding_models")
    op.drop_index("ix_evaluations_prompt_id_id", table_name="evaluations")
    op.drop_table("evaluations")
    op.drop_table("prompt_versions")
    op.drop_index("ix_prompts_status_id", table_name="prompts")
    op.drop_index("ix_prompts_owner_list", table_name="prompts")
    op.drop_table("prompts")
    op.drop_table("users")
