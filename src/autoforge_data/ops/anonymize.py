"""Make a branch safe for dev: empty it (schema only) or anonymize it, then compact it.

Runs on a branch file no one else uses yet (before it gets its final name), through one raw
connection of the libSQL engine.

* **schema only**: every row of every table goes, except ``alembic_version`` and
  ``embedding_models`` (the schema and the model registry stay: tables, indexes, triggers, the
  FTS table, vector tables and their indexes).
* **anonymize**: emails and usernames become pseudonyms, ``HMAC-SHA256(key, value)`` under a
  random per-branch key that is never stored (the same prod value maps to the same pseudonym
  within the branch, so uniqueness and joins survive, but two branches cannot be linked and
  the value cannot be recovered); Clerk ids and user metadata are cleared, API keys deleted.
* **drop content** (with anonymize): prompt titles, contents and metadata, every version's
  title and content, evaluation metrics, every embedding and the vector journal are replaced or
  deleted, and the FTS table is refilled from the replaced text and rebuilt.

``secure_delete`` is on for every change, and ``VACUUM`` then rewrites every page: a plain
snapshot copies pages as they are, and the unused space of a page can still hold bytes of rows
deleted or moved long ago in prod (seen here: without VACUUM, replaced emails survived in a
page's free space). VACUUM rebuilds every libSQL vector index from its table, so an anonymized
branch that keeps its vectors costs minutes at 50k vectors (40 s at 3,000 here); with
``drop_content`` or ``schema_only`` the vector tables are empty and it is quick. A TRUNCATE
checkpoint leaves a single file.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterator
from typing import Any

from autoforge_data.errors import DatabaseError

KEEP_TABLES = ("alembic_version", "embedding_models")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def quote_ident(name: str) -> str:
    """A table name from the file's own schema, checked and quoted for SQL."""
    if not _IDENT.match(name):
        raise DatabaseError(f"unexpected table name in the branch: {name[:60]!a}")
    return f'"{name}"'


def _rows(conn: Any, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute(sql, params).fetchall()]


def _tables(conn: Any) -> list[tuple[str, str]]:
    """(name, sql) of every table, virtual tables included."""
    return [
        (str(n), str(s or ""))
        for n, s in _rows(conn, "SELECT name, sql FROM sqlite_master WHERE type = 'table'")
    ]


def data_tables(conn: Any) -> list[str]:
    """Tables whose rows we delete: ours and virtual ones, not shadows or SQLite's own."""
    tables = _tables(conn)
    virtual = [n for n, sql in tables if sql.upper().startswith("CREATE VIRTUAL TABLE")]
    out = []
    for name, _sql in tables:
        shadow = any(name.startswith(f"{v}_") for v in virtual)
        internal = name.startswith(("sqlite_", "libsql_")) or name.endswith("_shadow")
        if not shadow and not internal and name not in KEEP_TABLES:
            out.append(name)
    return out


@contextlib.contextmanager
def triggers_off(conn: Any) -> Iterator[None]:
    """Drop every trigger for the block and recreate each from its own SQL afterwards."""
    saved = _rows(conn, "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
    for name, _sql in saved:
        conn.execute(f"DROP TRIGGER {quote_ident(str(name))}")
    try:
        yield
    finally:
        for _name, sql in saved:
            conn.execute(str(sql))


@contextlib.contextmanager
def _transaction(conn: Any) -> Iterator[None]:
    conn.execute("PRAGMA secure_delete = ON")  # overwritten and freed content is zeroed
    conn.execute("PRAGMA foreign_keys = OFF")  # everything goes, parents and children alike
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    conn.execute("PRAGMA foreign_keys = ON")


def empty_rows(conn: Any) -> dict[str, int]:
    """Delete every row except the schema's own records; returns rows deleted per table."""
    deleted: dict[str, int] = {}
    with _transaction(conn), triggers_off(conn):
        for name in data_tables(conn):
            table = quote_ident(name)
            deleted[name] = int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
            conn.execute(f"DELETE FROM {table}")
        for name in _fts5_tables(conn):  # a DELETE leaves the old index segments behind
            _fts_rebuild(conn, name)
        if _has_table(conn, "sqlite_sequence"):
            conn.execute("DELETE FROM sqlite_sequence")
    return deleted


def _has_table(conn: Any, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return row is not None


def pseudonym(key: bytes, kind: str, value: str, length: int = 20) -> str:
    """A stable, unlinkable stand-in for ``value`` under ``key`` (hex of an HMAC-SHA256)."""
    mac = hmac.new(key, f"{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()
    return mac[:length]


def anonymize(conn: Any, *, drop_content: bool) -> dict[str, int]:
    """Replace personal data (and with ``drop_content`` all prompt text); returns counts."""
    key = secrets.token_bytes(32)  # per branch, never stored: pseudonyms cannot be linked
    counts: dict[str, int] = {}
    with _transaction(conn), triggers_off(conn):
        counts["users"] = _anonymize_users(conn, key)
        if _has_table(conn, "api_keys"):  # prod's API keys must not open a dev service
            counts["api_keys"] = conn.execute("DELETE FROM api_keys").rowcount
        if drop_content:
            counts.update(_drop_content(conn))
            _refill_fts(conn)
    return counts


def _anonymize_users(conn: Any, key: bytes) -> int:
    if not _has_table(conn, "users"):
        return 0
    users = _rows(conn, "SELECT id, email, username FROM users")
    for uid, email, username in users:
        conn.execute(
            "UPDATE users SET email = ?, username = ?, clerk_id = NULL, metadata = '{}' "
            "WHERE id = ?",
            (
                f"user-{pseudonym(key, 'email', str(email))}@example.invalid",
                f"user-{pseudonym(key, 'username', str(username), 12)}",
                uid,
            ),
        )
    return len(users)


def _drop_content(conn: Any) -> dict[str, int]:
    """Replace prompt text everywhere and delete every embedding and journal row."""
    out: dict[str, int] = {}
    if _has_table(conn, "prompts"):
        out["prompts"] = conn.execute(
            "UPDATE prompts SET title = 'prompt ' || substr(id, -8), "
            "content = 'redacted content of prompt ' || id, metadata = '{}'"
        ).rowcount
    if _has_table(conn, "prompt_versions"):
        out["prompt_versions"] = conn.execute(
            "UPDATE prompt_versions SET title = 'prompt ' || substr(prompt_id, -8), "
            "content = 'redacted version ' || version || ' of prompt ' || prompt_id"
        ).rowcount
    if _has_table(conn, "evaluations"):
        conn.execute("UPDATE evaluations SET metrics = '{}'")
    for table in _embedding_tables(conn):
        out[table] = conn.execute(f"DELETE FROM {quote_ident(table)}").rowcount
    if _has_table(conn, "vector_journal"):
        conn.execute("DELETE FROM vector_journal")
    return out


def _embedding_tables(conn: Any) -> list[str]:
    """Vector tables named in the model registry that exist in the file."""
    if not _has_table(conn, "embedding_models"):
        return []
    names = [str(r[0]) for r in _rows(conn, "SELECT table_name FROM embedding_models")]
    return [n for n in names if _IDENT.match(n) and _has_table(conn, n)]


def _fts5_tables(conn: Any) -> list[str]:
    return [n for n, sql in _tables(conn) if re.search(r"USING\s+fts5", sql, re.IGNORECASE)]


def _fts_rebuild(conn: Any, name: str) -> None:
    """Drop an FTS5 index's segments (deleted terms stay in them) and re-index its content."""
    table = quote_ident(name)
    conn.execute(f"INSERT INTO {table}({table}) VALUES ('rebuild')")
    conn.execute(f"INSERT INTO {table}({table}) VALUES ('optimize')")


def _refill_fts(conn: Any) -> None:
    """Empty every FTS5 table, refill ``prompts_fts`` from the replaced text, rebuild, merge.

    A plain FTS5 table keeps its own copy of the text (``<name>_content``), so "rebuild" alone
    would re-index the old text: the rows are deleted and re-inserted from ``prompts`` first.
    """
    for name in _fts5_tables(conn):
        conn.execute(f"DELETE FROM {quote_ident(name)}")
        if name == "prompts_fts" and _has_table(conn, "prompt_keys"):
            conn.execute(
                "INSERT INTO prompts_fts (rowid, title, content) SELECT k.num, p.title, "
                "p.content FROM prompts p JOIN prompt_keys k ON k.prompt_id = p.id"
            )
        _fts_rebuild(conn, name)


def compact(conn: Any) -> None:
    """Rewrite every page (no free space keeps old bytes), then fold the WAL into the file."""
    conn.execute("PRAGMA secure_delete = ON")
    conn.execute("VACUUM")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
