"""Search: an index on prompts.created_at.

A created-time filter (``created_from`` / ``created_to``) had no index: the libsql backend's
exact scan of a 1% window read every prompt (0.48x its unfiltered QPS at 50k prompts in
bench/results/vector.synthetic.md), and its planner could only estimate such a filter from a
sample. With the index the window is read from it, and counted through it like status and owner.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Index prompts by creation time."""
    op.create_index("ix_prompts_created_at", "prompts", ["created_at"])


def downgrade() -> None:
    """Drop the index."""
    op.drop_index("ix_prompts_created_at", table_name="prompts")
