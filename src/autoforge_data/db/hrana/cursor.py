"""Cursor: the DB-API cursor of a Hrana connection; rows are read into memory with each statement.

A cursor whose statement is a deferred write (see the package docstring) sends the connection's
queue when its ``rowcount`` or ``lastrowid`` is read.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from autoforge_data.db.hrana.errors import ProgrammingError
from autoforge_data.db.hrana.statements import _WORDS, StmtKind, _classify, _Stmt, _strip_noise

if TYPE_CHECKING:
    from autoforge_data.db.hrana.connection import Connection

Description = tuple[tuple[str, None, None, None, None, None, None], ...]


class Cursor:
    """A DB-API cursor. Results are fully read into memory with each statement."""

    arraysize: int

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.arraysize = 1
        self._stmts: list[_Stmt] = []
        self._kind: StmtKind = "other"
        self._rows: list[tuple[Any, ...]] = []
        self._pos = 0
        self._description: Description | None = None
        self._lastrowid: int | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<hrana.Cursor of {self.connection!r}>"

    # ---------------------------------------------------------------- execution

    def execute(
        self, operation: str, parameters: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> Cursor:
        """Execute one statement (qmark ``?`` or named ``:name`` parameters)."""
        self._check()
        kind = _classify(operation)
        self._start([_Stmt(operation, parameters, kind)], kind)
        return self

    def executemany(
        self, operation: str, seq_of_parameters: Iterator[Any] | Sequence[Any]
    ) -> Cursor:
        """Execute a statement once per parameter set, in one request (or queued in a transaction).

        Execution stops at the first failing set; outside a transaction the sets before it stay
        committed (as with sqlite3 in autocommit mode).
        """
        self._check()
        kind = _classify(operation)
        if kind in ("begin", "commit", "rollback", "rollback_to", "savepoint"):
            raise ProgrammingError(
                "executemany() cannot run transaction control statements", code="ARGS_INVALID"
            )
        stmts = [_Stmt(operation, params, kind) for params in seq_of_parameters]
        if not stmts:
            self._reset()
            return self
        self._start(stmts, kind)
        return self

    def _start(self, stmts: list[_Stmt], kind: StmtKind) -> None:
        self._reset()
        self._stmts, self._kind = stmts, kind
        self.connection._execute(stmts, kind)
        self._load()

    def _reset(self) -> None:
        self._stmts, self._rows, self._pos, self._description = [], [], 0, None

    def _load(self) -> None:
        last = self._stmts[-1] if self._stmts else None
        if last is None or last.result is None or last.result.columns is None:
            self._description, self._rows = None, []
            return
        self._description = tuple(
            (name, None, None, None, None, None, None) for name in last.result.columns
        )
        self._rows, self._pos = last.result.rows, 0

    # ---------------------------------------------------------------- results

    @property
    def is_deferred(self) -> bool:
        """True while this cursor's last statement waits, unsent, in the connection's queue."""
        return any(s.state == "queued" for s in self._stmts)

    @property
    def description(self) -> Description | None:
        """Column descriptions (name, then six Nones) or None for statements without rows."""
        return self._description

    @property
    def rowcount(self) -> int:
        """Rows changed by the last INSERT/UPDATE/DELETE/REPLACE (sum for executemany), else -1.

        Reading it sends a deferred write (and everything queued before it) to the server.
        """
        self._resolve()
        if self._kind != "dml":
            return -1
        done = [s.result.rowcount for s in self._stmts if s.result is not None]
        return sum(done) if done else -1

    @property
    def lastrowid(self) -> int | None:
        """Rowid of the last row inserted by this cursor (sends deferred writes first)."""
        self._resolve()
        for s in reversed(self._stmts):
            if s.result is not None and s.result.lastrowid is not None and s.kind == "dml":
                first = _WORDS.match(_strip_noise(s.sql))
                if first and first.group(0).upper() in ("INSERT", "REPLACE"):
                    self._lastrowid = s.result.lastrowid
                    break
        return self._lastrowid

    def _resolve(self) -> None:
        if self.is_deferred:
            self.connection.flush()

    def fetchone(self) -> tuple[Any, ...] | None:
        """The next row, or None."""
        self._check()
        if self._pos >= len(self._rows):
            return None
        row = self._rows[self._pos]
        self._pos += 1
        return row

    def fetchmany(self, size: int | None = None) -> list[tuple[Any, ...]]:
        """Up to ``size`` (default ``arraysize``) next rows."""
        self._check()
        n = self.arraysize if size is None else size
        rows = self._rows[self._pos : self._pos + n]
        self._pos += len(rows)
        return rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        """All remaining rows."""
        self._check()
        rows = self._rows[self._pos :]
        self._pos = len(self._rows)
        return rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        while (row := self.fetchone()) is not None:
            yield row

    def setinputsizes(self, sizes: object) -> None:
        """PEP 249 no-op."""

    def setoutputsize(self, size: object, column: object = None) -> None:
        """PEP 249 no-op."""

    def close(self) -> None:
        """Release the rows. ``rowcount``/``lastrowid`` of a deferred write stay readable."""
        self._closed = True
        self._rows, self._pos = [], 0

    def _check(self) -> None:
        if self._closed:
            raise ProgrammingError("Cannot operate on a closed cursor.", code="CLOSED")
        self.connection._check_open()
