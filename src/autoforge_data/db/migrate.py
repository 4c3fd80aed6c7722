"""Schema migrations through Alembic; the scripts ship inside the package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError

from autoforge_data.db.engine import Database
from autoforge_data.db.errormap import translate
from autoforge_data.db.models import DEFAULT_EMBEDDINGS_TABLE, metadata
from autoforge_data.db.types import F32Vector
from autoforge_data.errors import AfdbError, InvalidInput, SchemaError

SCRIPTS = Path(__file__).resolve().parent.parent / "migrations"


def compare_type(
    ctx: Any, inspected: Any, metadata_col: Any, inspected_type: Any, metadata_type: Any
) -> bool | None:
    """Vector columns compare by dimension (reflection yields our F32Vector, see db/types.py)."""
    if isinstance(metadata_type, F32Vector):
        return getattr(inspected_type, "dimension", None) != metadata_type.dimension
    return None


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Ignore libSQL's and SQLite's own tables (vector index shadows, FTS internals)."""
    internal = name is not None and (
        name.startswith(("libsql_", "sqlite_", "_litestream", "prompts_fts"))
        or name.endswith("_shadow")
        or (name.startswith("emb_") and name != DEFAULT_EMBEDDINGS_TABLE)  # registry-made
    )
    return not (type_ == "table" and internal)


def alembic_config() -> Config:
    """An Alembic config pointing at the packaged migrations (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    return cfg


def code_head() -> str:
    """The newest revision this code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(db: Database) -> str | None:
    """The revision the database is at (None for an empty database)."""
    try:
        with db.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except Exception as exc:
        raise _mapped(exc) from exc


def check_not_newer(db: Database) -> str | None:
    """Refuse a database migrated by a newer version of the code; returns its revision."""
    rev = current_revision(db)
    if rev is None:
        return None
    scripts = ScriptDirectory.from_config(alembic_config())
    try:
        scripts.get_revision(rev)
    except CommandError:
        raise SchemaError(
            f"the database is at migration {rev}, newer than this code (head {code_head()})",
            hint="upgrade autoforge-data, or restore a backup made by this version",
        ) from None
    return rev


def _run(db: Database, fn: str, rev: str) -> None:
    cfg = alembic_config()
    try:
        with db.engine.connect() as conn:
            cfg.attributes["connection"] = conn
            getattr(command, fn)(cfg, rev)
            conn.commit()
    except CommandError as exc:
        raise InvalidInput(f"migration failed: {exc}", hint="see `afdb migrate --help`") from None
    except AfdbError:
        raise
    except Exception as exc:
        raise _mapped(exc) from exc


def upgrade(db: Database, rev: str = "head") -> None:
    """Migrate up to ``rev`` (default: the newest)."""
    check_not_newer(db)
    _run(db, "upgrade", rev)


def downgrade(db: Database, rev: str) -> None:
    """Migrate down to ``rev`` ('base' removes every table)."""
    check_not_newer(db)
    _run(db, "downgrade", rev)


def drift(db: Database) -> list[str]:
    """Differences between the database and the models (empty when they match)."""
    try:
        with db.engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": compare_type, "include_object": include_object}
            )
            return [str(d) for d in compare_metadata(ctx, metadata)]
    except Exception as exc:
        raise _mapped(exc) from exc


def _mapped(exc: Exception) -> Exception:
    mapped = translate(exc)
    return mapped if mapped is not None else exc
