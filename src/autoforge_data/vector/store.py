"""The vectors' system of record in libSQL: per-model tables, the journal, the model registry.

Every piece of SQL that touches vectors or the model registry lives here (and in the index
backends of :mod:`autoforge_data.vector.index`). Table names never come from outside: they are
derived from a registered model name and checked against ``_TABLE_NAME``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from autoforge_data.db.engine import Database
from autoforge_data.db.types import pack_f32
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.errors import Conflict, InvalidInput, NotFound

_TABLE_NAME = re.compile(r"^emb_[a-z0-9_]{1,56}$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True, slots=True)
class ModelRow:
    """One registered embedding model."""

    name: str
    dimension: int
    metric: str
    normalized: bool
    status: str
    table: str


def table_for(model: str) -> str:
    """The embeddings table of a model name: ``emb_`` + a lower-case slug (validated)."""
    if not _MODEL_NAME.match(model):
        raise InvalidInput(f"invalid model name {model!r}", hint="letters, digits, . _ -")
    table = "emb_" + re.sub(r"[^a-z0-9]+", "_", model.lower()).strip("_")
    if not _TABLE_NAME.match(table):
        raise InvalidInput(f"model name {model!r} makes no valid table name")
    return table


def journal_trigger_sql(table: str, model: str) -> list[str]:
    """Triggers that journal every write to ``table`` in the writer's own transaction."""
    if not (_TABLE_NAME.match(table) and _MODEL_NAME.match(model)):
        raise InvalidInput(f"invalid embeddings table or model name: {table!r}, {model!r}")
    out = []
    for event, ref, kind in (
        ("INSERT", "NEW", "upsert"),
        ("UPDATE", "NEW", "upsert"),
        ("DELETE", "OLD", "delete"),
    ):
        out.append(
            f"CREATE TRIGGER IF NOT EXISTS trg_{table}_journal_{event.lower()} AFTER {event} "
            f"ON {table} BEGIN INSERT INTO vector_journal (model, num, op) "
            f"VALUES ('{model}', {ref}.id, '{kind}'); END"
        )
    return out


_COLS = "name, dimension, metric, normalized, status, table_name"


def _row(r: tuple[object, ...]) -> ModelRow:
    return ModelRow(str(r[0]), int(r[1]), str(r[2]), bool(r[3]), str(r[4]), str(r[5]))  # type: ignore[call-overload]


def list_models(db: Database) -> list[ModelRow]:
    """Every registered model, active first."""
    with UnitOfWork(db) as uow:
        rows = uow.fetchall(
            f"SELECT {_COLS} FROM embedding_models "
            "ORDER BY status = 'active' DESC, created_at, name"
        )
    return [_row(r) for r in rows]


def get_model(db: Database, name: str) -> ModelRow:
    """One registered model (NotFound lists the registered names)."""
    with UnitOfWork(db) as uow:
        r = uow.fetchone(f"SELECT {_COLS} FROM embedding_models WHERE name = ?", (name,))
    if r is None:
        known = ", ".join(m.name for m in list_models(db)) or "none"
        raise NotFound(f"embedding model {name!r} is not registered", hint=f"registered: {known}")
    return _row(r)


def active_model(db: Database) -> ModelRow:
    """The model search uses now."""
    with UnitOfWork(db) as uow:
        r = uow.fetchone(f"SELECT {_COLS} FROM embedding_models WHERE status = 'active'")
    if r is None:
        raise NotFound("no active embedding model", hint="afdb embeddings activate NAME")
    return _row(r)


def register_model(
    db: Database, name: str, dimension: int, metric: str = "cosine", normalized: bool = True
) -> ModelRow:
    """Register a model (status building) and create its table and journal triggers; idempotent."""
    table = table_for(name)
    if not 1 <= dimension <= 65536:
        raise InvalidInput(f"dimension {dimension} out of range 1..65536")
    if metric not in ("cosine", "l2"):
        raise InvalidInput(f"unknown metric {metric!r}", hint="cosine or l2")
    with UnitOfWork(db, write=True) as uow:
        existing = uow.fetchone(f"SELECT {_COLS} FROM embedding_models WHERE name = ?", (name,))
        if existing is not None:
            row = _row(existing)
            if row.dimension != dimension:
                raise Conflict(f"model {name!r} is registered with dimension {row.dimension}")
            return row
        uow.execute(
            "INSERT INTO embedding_models (name, dimension, metric, normalized, status, table_name)"
            " VALUES (?, ?, ?, ?, 'building', ?)",
            (name, dimension, metric, int(normalized), table),
        )
        uow.execute(
            f"CREATE TABLE IF NOT EXISTS {table} ("
            "id INTEGER NOT NULL PRIMARY KEY, "
            "prompt_id VARCHAR(26) NOT NULL UNIQUE REFERENCES prompts (id) ON DELETE CASCADE, "
            "version INTEGER NOT NULL, content_hash VARCHAR(64) NOT NULL, "
            f"embedding F32_BLOB({int(dimension)}) NOT NULL, "
            "created_at VARCHAR(24) NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))"
        )
        for sql in journal_trigger_sql(table, name):
            uow.execute(sql)
        uow.commit()
    return ModelRow(name, dimension, metric, normalized, "building", table)


def activate_model(db: Database, name: str) -> ModelRow:
    """Make ``name`` the active model; the previous one becomes retired (one transaction)."""
    model = get_model(db, name)
    with UnitOfWork(db, write=True) as uow:
        uow.execute("UPDATE embedding_models SET status = 'retired' WHERE status = 'active'")
        uow.execute("UPDATE embedding_models SET status = 'active' WHERE name = ?", (name,))
        uow.commit()
    return ModelRow(
        model.name, model.dimension, model.metric, model.normalized, "active", model.table
    )


class VectorStore:
    """Vectors of one model in its table; rows keyed by the prompt's stable ``num``."""

    def __init__(self, model: ModelRow) -> None:
        if not _TABLE_NAME.match(model.table):
            raise InvalidInput(f"invalid embeddings table {model.table!r}")
        self.model = model
        self.table = model.table

    def upsert(
        self,
        uow: UnitOfWork,
        prompt_id: str,
        version: int,
        content_hash: str,
        vector: np.ndarray | list[float],
    ) -> None:
        """Insert or replace the vector of a prompt (journaled by trigger, same transaction)."""
        blob = pack_f32(vector, self.model.dimension)
        uow.execute(
            f"INSERT INTO {self.table} (id, prompt_id, version, content_hash, embedding) "
            "SELECT num, ?, ?, ?, ? FROM prompt_keys WHERE prompt_id = ? "
            "ON CONFLICT (id) DO UPDATE SET version = excluded.version, "
            "content_hash = excluded.content_hash, embedding = excluded.embedding",
            (prompt_id, version, content_hash, blob, prompt_id),
            kind="insert",
        )

    def upsert_many(self, uow: UnitOfWork, rows: list[tuple[str, int, str, np.ndarray]]) -> None:
        """Upsert many (prompt_id, version, content_hash, vector) rows."""
        dim = self.model.dimension
        uow.executemany(
            f"INSERT INTO {self.table} (id, prompt_id, version, content_hash, embedding) "
            "SELECT num, ?, ?, ?, ? FROM prompt_keys WHERE prompt_id = ? "
            "ON CONFLICT (id) DO UPDATE SET version = excluded.version, "
            "content_hash = excluded.content_hash, embedding = excluded.embedding",
            [(pid, ver, h, pack_f32(v, dim), pid) for pid, ver, h, v in rows],
        )

    def delete(self, uow: UnitOfWork, prompt_id: str) -> None:
        """Remove a prompt's vector (journaled)."""
        uow.execute(f"DELETE FROM {self.table} WHERE prompt_id = ?", (prompt_id,), kind="delete")

    def count(self, db: Database) -> int:
        """How many vectors the table holds."""
        with UnitOfWork(db) as uow:
            return int(uow.fetchone(f"SELECT count(*) FROM {self.table}")[0])

    def stale(self, db: Database, limit: int, after: str = "") -> list[tuple[str, int, str]]:
        """Prompts (id, version, text) whose vector is missing or from an older version."""
        with UnitOfWork(db) as uow:
            rows = uow.fetchall(
                f"SELECT p.id, p.current_version, p.title || char(10) || p.content "
                f"FROM prompts p LEFT JOIN {self.table} e ON e.prompt_id = p.id "
                "WHERE p.id > ? AND (e.id IS NULL OR e.version <> p.current_version) "
                "ORDER BY p.id LIMIT ?",
                (after, limit),
            )
        return [(str(r[0]), int(r[1]), str(r[2])) for r in rows]

    def hashes(self, db: Database, prompt_ids: list[str]) -> dict[str, str]:
        """The stored content hash per prompt id (for "never embed unchanged content twice")."""
        if not prompt_ids:
            return {}
        marks = ",".join("?" * len(prompt_ids))
        with UnitOfWork(db) as uow:
            rows = uow.fetchall(
                f"SELECT prompt_id, content_hash FROM {self.table} WHERE prompt_id IN ({marks})",
                prompt_ids,
            )
        return {str(r[0]): str(r[1]) for r in rows}

    def iter_all(
        self, db: Database, chunk: int | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every (nums int64, vectors float32 (n, d)) in chunks, in num order."""
        if chunk is None:  # each chunk's Hrana response stays well under sqld's 10 MB limit
            chunk = max(100, min(10_000, 4_000_000 // (self.model.dimension * 6)))
        last = -1
        dim = self.model.dimension
        while True:
            with UnitOfWork(db) as uow:
                rows = uow.fetchall(
                    f"SELECT id, embedding FROM {self.table} WHERE id > ? ORDER BY id LIMIT ?",
                    (last, chunk),
                )
            if not rows:
                return
            nums = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(-1, dim)
            last = int(nums[-1])
            yield nums, vecs

    def get(self, db: Database, nums: list[int]) -> dict[int, np.ndarray]:
        """Vectors of some nums."""
        if not nums:
            return {}
        marks = ",".join("?" * len(nums))
        with UnitOfWork(db) as uow:
            rows = uow.fetchall(
                f"SELECT id, embedding FROM {self.table} WHERE id IN ({marks})", nums
            )
        return {int(r[0]): np.frombuffer(r[1], dtype="<f4") for r in rows}


def journal_since(
    db: Database, seq: int, limit: int = 100_000
) -> list[tuple[int, str | None, int, str]]:
    """Journal entries after ``seq``: (seq, model or None for filter changes, num, op)."""
    with UnitOfWork(db) as uow:
        rows = uow.fetchall(
            "SELECT seq, model, num, op FROM vector_journal WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        )
    return [(int(r[0]), r[1], int(r[2]), str(r[3])) for r in rows]


def journal_head(db: Database) -> int:
    """The newest journal sequence number (0 when empty)."""
    with UnitOfWork(db) as uow:
        return int(uow.fetchone("SELECT coalesce(max(seq), 0) FROM vector_journal")[0])
