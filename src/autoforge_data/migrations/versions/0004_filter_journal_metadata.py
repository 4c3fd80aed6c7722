"""Search: the filter journal also records metadata changes (and created_at).

In-process vector indexes mirror what search filters on (status, owner, created time and the
values of the metadata keys searches use) and keep that mirror current by replaying
``vector_journal``. Until now its trigger fired only on status and owner changes, so a changed
metadata value never reached another process's mirror; metadata filters had to run
``json_extract`` over every prompt on each query. The trigger now fires on ``metadata`` and
``created_at`` too (only when a value really changes).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRIGGER = "trg_prompts_filter_journal"
JOURNAL = (
    "INSERT INTO vector_journal (model, num, op) "
    "SELECT NULL, num, 'meta' FROM prompt_keys WHERE prompt_id = NEW.id; END"
)


def upgrade() -> None:
    """Journal status, owner, created_at and metadata changes."""
    op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}")
    op.execute(
        f"CREATE TRIGGER {TRIGGER} AFTER UPDATE OF status, owner_id, created_at, metadata "
        "ON prompts WHEN NEW.status IS NOT OLD.status OR NEW.owner_id IS NOT OLD.owner_id "
        "OR NEW.created_at IS NOT OLD.created_at OR NEW.metadata IS NOT OLD.metadata "
        f"BEGIN {JOURNAL}"
    )


def downgrade() -> None:
    """Back to journaling status and owner changes only (as in 0002)."""
    op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}")
    op.execute(
        f"CREATE TRIGGER {TRIGGER} AFTER UPDATE OF status, owner_id ON prompts "
        "WHEN NEW.status IS NOT OLD.status OR NEW.owner_id IS NOT OLD.owner_id "
        f"BEGIN {JOURNAL}"
    )
