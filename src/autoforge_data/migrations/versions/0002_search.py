"""Search: stable integer keys for prompts, the vector change journal, FTS5 over prompts.

* ``prompt_keys`` gives every prompt a stable integer ``num`` (never reused, survives VACUUM):
  the label of its vectors in every index and the rowid of its FTS row.
* ``vector_journal`` records every vector write (triggers on each embeddings table, so it is in
  the writer's own transaction whoever writes) and every change of what search filters on
  (status, owner): in-process indexes replay it to stay in sync across processes.
* ``prompts_fts`` is an FTS5 table over title and content kept in sync by triggers.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOW = sa.text("(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))")
DEFAULT_TABLE = "emb_all_minilm_l6_v2"
MODEL = "all-MiniLM-L6-v2"


def journal_triggers(table: str, model: str) -> list[str]:
    """The three triggers that journal every write to one embeddings table."""
    out = []
    for event, ref, kind in (
        ("INSERT", "NEW", "upsert"),
        ("UPDATE", "NEW", "upsert"),
        ("DELETE", "OLD", "delete"),
    ):
        out.append(
            f"CREATE TRIGGER trg_{table}_journal_{event.lower()} AFTER {event} ON {table} "
            f"BEGIN INSERT INTO vector_journal (model, num, op) "
            f"VALUES ('{model}', {ref}.id, '{kind}'); END"
        )
    return out


def upgrade() -> None:
    """Create keys, journal and FTS, and backfill them from existing prompts."""
    op.create_table(
        "prompt_keys",
        sa.Column("num", sa.Integer(), nullable=False),
        sa.Column("prompt_id", sa.String(26), nullable=False),
        sa.PrimaryKeyConstraint("num", name=op.f("pk_prompt_keys")),
        sa.UniqueConstraint("prompt_id", name=op.f("uq_prompt_keys_prompt_id")),
        sa.ForeignKeyConstraint(
            ["prompt_id"],
            ["prompts.id"],
            name=op.f("fk_prompt_keys_prompt_id_prompts"),
            ondelete="CASCADE",
        ),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "vector_journal",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(100), nullable=True),
        sa.Column("num", sa.Integer(), nullable=False),
        sa.Column("op", sa.String(8), nullable=False),
        sa.Column("created_at", sa.String(24), nullable=False, server_default=NOW),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_vector_journal")),
        sa.CheckConstraint("op IN ('upsert', 'delete', 'meta')", name=op.f("ck_vector_journal_op")),
        sqlite_autoincrement=True,
    )
    op.execute("INSERT INTO prompt_keys (prompt_id) SELECT id FROM prompts ORDER BY id")
    op.execute(
        "CREATE TRIGGER trg_prompts_filter_journal AFTER UPDATE OF status, owner_id ON prompts "
        "WHEN NEW.status IS NOT OLD.status OR NEW.owner_id IS NOT OLD.owner_id BEGIN "
        "INSERT INTO vector_journal (model, num, op) "
        "SELECT NULL, num, 'meta' FROM prompt_keys WHERE prompt_id = NEW.id; END"
    )
    for sql in journal_triggers(DEFAULT_TABLE, MODEL):
        op.execute(sql)
    op.execute(
        "CREATE VIRTUAL TABLE prompts_fts USING fts5(title, content, "
        "tokenize = 'porter unicode61 remove_diacritics 2')"
    )
    op.execute(
        "INSERT INTO prompts_fts (rowid, title, content) "
        "SELECT k.num, p.title, p.content FROM prompts p JOIN prompt_keys k ON k.prompt_id = p.id"
    )
    op.execute(
        "CREATE TRIGGER trg_prompts_insert_keys AFTER INSERT ON prompts BEGIN "
        "INSERT INTO prompt_keys (prompt_id) VALUES (NEW.id); "
        "INSERT INTO prompts_fts (rowid, title, content) "
        "SELECT num, NEW.title, NEW.content FROM prompt_keys WHERE prompt_id = NEW.id; END"
    )
    op.execute(
        "CREATE TRIGGER trg_prompts_fts_update AFTER UPDATE OF title, content ON prompts "
        "WHEN NEW.title IS NOT OLD.title OR NEW.content IS NOT OLD.content BEGIN "
        "DELETE FROM prompts_fts WHERE rowid = "
        "(SELECT num FROM prompt_keys WHERE prompt_id = OLD.id); "
        "INSERT INTO prompts_fts (rowid, title, content) "
        "SELECT num, NEW.title, NEW.content FROM prompt_keys WHERE prompt_id = NEW.id; END"
    )
    op.execute(
        "CREATE TRIGGER trg_prompts_fts_delete BEFORE DELETE ON prompts BEGIN "
        "DELETE FROM prompts_fts WHERE rowid = "
        "(SELECT num FROM prompt_keys WHERE prompt_id = OLD.id); END"
    )


def downgrade() -> None:
    """Drop what the upgrade created."""
    for name in (
        "trg_prompts_fts_delete",
        "trg_prompts_fts_update",
        "trg_prompts_insert_keys",
        "trg_prompts_filter_journal",
        f"trg_{DEFAULT_TABLE}_journal_insert",
        f"trg_{DEFAULT_TABLE}_journal_update",
        f"trg_{DEFAULT_TABLE}_journal_delete",
    ):
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.execute("DROP TABLE IF EXISTS prompts_fts")
    op.drop_table("vector_journal")
    op.drop_table("prompt_keys")
