"""The unit of work: one object owns a connection and the transaction of one use case.

``with UnitOfWork(db, write=True) as uow: ...; uow.commit()`` — without ``commit()`` everything is
rolled back. Write units begin ``IMMEDIATE`` (the write lock is taken up front, so two writers
queue on the busy timeout instead of failing late with SQLITE_BUSY on upgrade). Read units run
without a transaction unless ``snapshot=True`` asks for one consistent view across statements.
Callbacks registered with :meth:`after_commit` run only after COMMIT returned (cache invalidation,
change events), never before. Driver errors leave as our own error types (:mod:`.errormap`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from autoforge_data.db.engine import Database
from autoforge_data.db.errormap import translate

StatementHook = Callable[[str, float], None]
_statement_hooks: list[StatementHook] = []


def add_statement_hook(hook: StatementHook) -> None:
    """Call ``hook(kind, seconds)`` after every statement a unit of work runs (for metrics)."""
    _statement_hooks.append(hook)


class UnitOfWork:
    """A transaction scope over one pooled connection; see the module docstring."""

    def __init__(self, db: Database, *, write: bool = False, snapshot: bool = False) -> None:
        self.db = db
        self.write = write
        self.snapshot = snapshot
        self._conn: Any = None
        self._pool = db.writes if write else db.reads
        self._broken = False
        self._in_tx = False
        self._after: list[Callable[[], None]] = []
        self.committed = False

    def __enter__(self) -> UnitOfWork:
        try:
            self._conn = self._pool.checkout()
        except Exception as exc:  # connecting failed: unreachable, wrong key, not a database
            mapped = translate(exc)
            if mapped is None:
                raise
            raise mapped from exc
        try:
            if self.write:
                self.execute("BEGIN IMMEDIATE", (), kind="begin")
                self._in_tx = True
            elif self.snapshot:
                self.execute("BEGIN", (), kind="begin")
                self._in_tx = True
        except BaseException:
            self._pool.checkin(self._conn, discard=True)
            raise
        return self

    def execute(self, sql: str, params: Sequence[Any] = (), *, kind: str = "query") -> Any:
        """Run one statement and return the DB-API cursor."""
        start = time.perf_counter()
        try:
            cur = self._conn.cursor()
            cur.execute(sql, tuple(params))  # libsql-experimental takes tuples only
        except Exception as exc:
            raise self._translated(exc) from exc
        finally:
            if _statement_hooks:
                elapsed = time.perf_counter() - start
                for hook in _statement_hooks:
                    hook(kind, elapsed)
        return cur

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], *, kind: str = "insert") -> None:
        """Run one statement for many parameter rows (bulk work)."""
        start = time.perf_counter()
        try:
            self._conn.cursor().executemany(sql, rows)
        except Exception as exc:
            raise self._translated(exc) from exc
        finally:
            for hook in _statement_hooks:
                hook(kind, time.perf_counter() - start)

    def fetchone(self, sql: str, params: Sequence[Any] = (), *, kind: str = "select") -> Any:
        """Run a query and return its first row (or None)."""
        return self.execute(sql, params, kind=kind).fetchone()

    def fetchall(self, sql: str, params: Sequence[Any] = (), *, kind: str = "select") -> list[Any]:
        """Run a query and return all its rows."""
        return list(self.execute(sql, params, kind=kind).fetchall())

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the transaction has committed (never if it rolls back)."""
        self._after.append(callback)

    def commit(self) -> None:
        """Commit the transaction, then run the after-commit callbacks."""
        start = time.perf_counter()
        try:
            self._conn.commit()
        except Exception as exc:
            raise self._translated(exc) from exc
        finally:
            for hook in _statement_hooks:
                hook("commit", time.perf_counter() - start)
        self._in_tx = False
        self.committed = True
        replica = self.db.replica
        if replica is not None and self.write:
            replica.after_write(getattr(self._conn, "last_replication_index", None))
        callbacks, self._after = self._after, []
        for callback in callbacks:
            callback()

    def _translated(self, exc: Exception) -> Exception:
        """Our error for a driver error; unknown errors mark the connection as broken."""
        mapped = translate(exc)
        if mapped is None or mapped.code in ("unavailable", "database_error", "corrupt"):
            self._broken = True
        return mapped if mapped is not None else exc

    def __exit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and isinstance(exc, Exception) and translate(exc) is None:
            self._broken = True
        if self._in_tx:
            try:
                self._conn.rollback()
            except Exception:
                self._broken = True  # state unknown: never pool this connection again
        self._in_tx = False
        if et is not None and not isinstance(exc, Exception):
            self._broken = True  # KeyboardInterrupt and the like: the statement may still run
        self._pool.checkin(self._conn, discard=self._broken)
