"""Connection: transactions, deferred writes and savepoints over Hrana, as ``sqlite3`` behaves.

See the package docstring (:mod:`autoforge_data.db.hrana`) for the semantics a caller can rely on.
The HTTP side (requests, batons, errors of the transport) is :class:`PipelineClient`'s; rows and
the fetch API are :class:`Cursor`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

from autoforge_data.db.hrana.cursor import Cursor
from autoforge_data.db.hrana.errors import (
    _LOST_STREAM_CODES,
    DatabaseError,
    Error,
    InterfaceError,
    OperationalError,
    TransportError,
)
from autoforge_data.db.hrana.statements import (
    _BEGIN,
    _PRAGMA_SET,
    _RELEASE,
    _SESSION_PRAGMAS,
    StmtKind,
    _first_failure,
    _has_returning,
    _internal,
    _Stmt,
    _strip_noise,
)
from autoforge_data.db.hrana.transport import PipelineClient

log = logging.getLogger(__package__)  # one logger for the whole driver: autoforge_data.db.hrana

_ISOLATION_LEVELS: Final = frozenset({"", "DEFERRED", "IMMEDIATE", "EXCLUSIVE"})


def connect(
    url: str | None = None,
    *,
    auth_token: str | None = None,
    timeout: float = 5.0,
    connect_timeout: float = 2.0,
    namespace: str | None = None,
    isolation_level: str | None = "",
    defer_writes: bool = True,
    lazy_begin: bool = False,
    foreign_keys: bool = True,
) -> Connection:
    """Open a connection to the libSQL server at ``url`` (``http://host:port`` or ``https://``).

    ``libsql://host`` is accepted as ``https://host``. Nothing is sent until the first statement.
    ``timeout`` bounds each network wait of a request (sending, waiting for the answer, each read);
    ``connect_timeout`` bounds establishing the TCP/TLS connection. ``namespace`` selects a
    database on a sqld started with ``--enable-namespaces`` (sent as ``Host: {namespace}.{host}``).
    """
    if url is None:
        raise InterfaceError(
            "no server URL given: use sqlite+hrana://HOST:PORT or pass one", code="URL"
        )
    return Connection(
        url,
        auth_token=auth_token,
        timeout=timeout,
        connect_timeout=connect_timeout,
        namespace=namespace,
        isolation_level=isolation_level,
        defer_writes=defer_writes,
        lazy_begin=lazy_begin,
        foreign_keys=foreign_keys,
    )


class Connection(PipelineClient):
    """A DB-API connection to one libSQL database. Not for sharing between threads."""

    def __init__(
        self,
        url: str,
        *,
        auth_token: str | None = None,
        timeout: float = 5.0,
        connect_timeout: float = 2.0,
        namespace: str | None = None,
        isolation_level: str | None = "",
        defer_writes: bool = True,
        lazy_begin: bool = False,
        foreign_keys: bool = True,
    ) -> None:
        super().__init__(
            url,
            auth_token=auth_token,
            timeout=timeout,
            connect_timeout=connect_timeout,
            namespace=namespace,
        )
        self.defer_writes = defer_writes
        self.lazy_begin = lazy_begin
        self._isolation_level: str | None = self._check_level(isolation_level)
        self._session_pragmas: dict[str, str] = {}
        if foreign_keys:
            self._session_pragmas["foreign_keys"] = "PRAGMA foreign_keys = ON"
        # transaction state
        self._tx = False
        self._begin_sql: str | None = None  # BEGIN not yet run on the server
        self._queue: list[_Stmt] = []
        self._aborted: DatabaseError | None = None  # a queued statement failed
        self._lost: TransportError | None = None  # the transaction's stream is gone

    # ---------------------------------------------------------------- public API

    def __repr__(self) -> str:
        state = "closed" if self._client is None else ("in transaction" if self._tx else "idle")
        ns = f" namespace={self.namespace!r}" if self.namespace else ""
        auth = " auth=token" if self._token else ""
        return f"<hrana.Connection {self.url}{ns}{auth} {state}>"

    @property
    def isolation_level(self) -> str | None:
        """``None`` for autocommit, else the BEGIN mode used for implicit transactions."""
        return self._isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        level = self._check_level(value)
        if level is None and self._tx:
            self.commit()  # as sqlite3 does when switching to autocommit
        self._isolation_level = level

    @property
    def in_transaction(self) -> bool:
        """True between BEGIN (explicit or implicit) and commit/rollback."""
        return self._tx

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._client is None

    @property
    def pending_statements(self) -> int:
        """How many deferred writes wait to be sent."""
        return len(self._queue)

    def cursor(self) -> Cursor:
        """A new cursor on this connection."""
        self._check_open()
        return Cursor(self)

    def execute(
        self,
        sql: str,
        parameters: Sequence[Any] | Mapping[str, Any] | None = None,
    ) -> Cursor:
        """Shortcut (as in sqlite3): a new cursor that executed ``sql``."""
        return self.cursor().execute(sql, parameters)

    def begin(self, mode: str | None = None) -> None:
        """Start a transaction now (sent lazily with the first statement that needs the server).

        ``mode`` is ``"DEFERRED"``, ``"IMMEDIATE"`` or ``"EXCLUSIVE"``; by default the
        connection's ``isolation_level`` (``""`` -> plain ``BEGIN``). No-op inside a transaction.
        """
        self._check_open()
        if self._tx:
            return
        level = self._check_level(mode if mode is not None else (self._isolation_level or ""))
        self._start_tx(f"BEGIN {level}".strip())

    def flush(self) -> None:
        """Send the queued writes now (one request); raise their error, if any."""
        self._check_open()
        if self._queue:
            self._check_usable("dml")
            self._flush([])

    def commit(self) -> None:
        """Commit: BEGIN (if unsent) + queued writes + COMMIT in one request; stream closed."""
        self._check_open()
        if not self._tx:
            return
        if self._lost is not None:
            lost = self._lost
            self._reset_tx()
            raise TransportError(f"nothing was committed: {lost.message}", code=lost.code)
        if self._aborted is not None:
            aborted = self._aborted
            self.rollback()
            raise self._aborted_error(aborted, "rolled back")
        if not self._queue and self._begin_sql is not None:
            # nothing ran in this transaction; only an idle stream may need closing
            baton = self._baton
            self._reset_tx()
            if baton is not None:
                self._close_stream(baton)
            return
        stmts = self._stream_prelude() + self._queue + [_internal("COMMIT")]
        baton, self._queue = self._baton, []
        try:
            self._batch(stmts, baton=baton, close=True, rollback_if_last_fails=True)
        except TransportError as exc:
            raise TransportError(
                f"the outcome of COMMIT is unknown: {exc.message}", code=exc.code
            ) from exc
        finally:
            self._reset_tx()
        failed = _first_failure(stmts)
        if failed is not None:
            assert failed.error is not None
            raise failed.error

    def rollback(self) -> None:
        """Roll back: queued writes are dropped; an open stream gets ROLLBACK + close."""
        self._check_open()
        if not self._tx:
            return
        baton = self._baton
        self._reset_tx()
        if baton is None:
            return
        stmts = [_internal("ROLLBACK")]
        try:
            self._batch(stmts, baton=baton, close=True)
        except TransportError as exc:
            if (exc.code or "") in _LOST_STREAM_CODES:
                return  # the server already dropped the stream and its transaction
            raise
        # a failing ROLLBACK ("no transaction is active") leaves nothing to undo

    def close(self) -> None:
        """Close the connection; an open transaction is rolled back (best effort)."""
        if self._client is None:
            return
        baton = self._baton if self._tx else None
        self._reset_tx()
        if baton is not None:
            try:
                self._batch([_internal("ROLLBACK")], baton=baton, close=True)
            except Error as exc:
                log.debug("rollback on close failed: %s", exc.message)
        self._client.close()
        self._client = None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        """As sqlite3: commit if the block succeeded, else roll back (the connection stays open)."""
        if self._client is None:
            return
        if exc_type is None:
            self.commit()
        else:
            self.rollback()

    # ---------------------------------------------------------------- execution

    def _execute(self, stmts: list[_Stmt], kind: StmtKind) -> None:
        """Run (or queue) ``stmts``, all of the same ``kind``; results land in the statements."""
        self._check_open()
        if kind in ("begin", "commit", "rollback"):
            self._transaction_control(stmts, kind)
            return
        self._check_usable(kind)
        if not self._tx:
            if kind == "dml" and self._isolation_level is not None:
                self._start_tx(f"BEGIN {self._isolation_level}".strip())
            elif kind == "savepoint":
                self._start_tx("BEGIN")  # so that RELEASE never commits behind our back
        if not self._tx:
            self._standalone(stmts)
        elif kind == "dml" and self.defer_writes and not _has_returning(stmts[0].sql):
            for s in stmts:
                s.state = "queued"
            self._queue.extend(stmts)
            return
        elif (
            kind == "select"
            and self.lazy_begin
            and self._baton is None
            and not self._queue
            and self._begin_sql in ("BEGIN", "BEGIN DEFERRED")
        ):
            self._standalone(stmts)
        elif kind == "savepoint":
            self._flush_savepoint(stmts)
        else:
            self._flush(stmts)
            if kind == "rollback_to":
                self._aborted = None
        if kind == "pragma":
            self._remember_pragma(stmts[0].sql)

    def _check_usable(self, kind: StmtKind) -> None:
        if self._lost is not None:
            raise TransportError(
                f"the transaction was lost ({self._lost.message}); roll back and start again",
                code=self._lost.code,
            )
        if self._aborted is not None and kind != "rollback_to":
            raise self._aborted_error(self._aborted, "roll it back")

    def _transaction_control(self, stmts: list[_Stmt], kind: StmtKind) -> None:
        if kind == "begin":
            self._explicit_begin(stmts[0].sql)
        elif kind == "commit":
            self.commit()
        else:
            self.rollback()
        for s in stmts:
            s.state = "done"

    def _flush_savepoint(self, stmts: list[_Stmt]) -> None:
        """SAVEPOINT/RELEASE. If a write queued inside the savepoint fails when RELEASE sends it,
        the savepoint is rolled back and released before the error is raised: the transaction
        is then exactly as before the savepoint (as after a failed ``begin_nested()`` block)."""
        try:
            self._flush(stmts)
        except DatabaseError as exc:
            m = _RELEASE.match(_strip_noise(stmts[0].sql))
            if m is None or self._aborted is not exc or isinstance(exc, TransportError):
                raise
            undo = [_internal(f"ROLLBACK TO {m.group(1)}"), _internal(f"RELEASE {m.group(1)}")]
            try:
                self._flush(undo)
            except DatabaseError:
                raise exc from None
            self._aborted = None
            raise

    def _standalone(self, stmts: list[_Stmt]) -> None:
        """Outside a transaction: one request on a fresh stream that is closed at once."""
        prelude = self._stream_prelude(begin=False)
        self._batch(prelude + stmts, baton=None, close=True)
        failed = _first_failure(prelude + stmts)
        if failed is not None:
            assert failed.error is not None
            raise failed.error

    def _flush(self, trigger: list[_Stmt]) -> None:
        """Send BEGIN (if unsent) + the queue + ``trigger`` on the transaction's stream."""
        prelude = self._stream_prelude()
        queue, self._queue = self._queue, []
        stmts = prelude + queue + trigger
        try:
            self._batch(stmts, baton=self._baton, close=False)
        except TransportError as exc:
            self._lost, self._baton, self._stream_url = exc, None, None
            raise
        except Error as exc:
            if queue:  # the queued writes are lost with this request
                self._aborted = (
                    exc
                    if isinstance(exc, DatabaseError)
                    else OperationalError(exc.message, code=exc.code)
                )
            raise
        failed = _first_failure(stmts)
        if failed is None or failed not in prelude:
            self._begin_sql = None
        if failed is None:
            return
        assert failed.error is not None
        if (failed in prelude or failed in queue) and queue:
            self._aborted = failed.error  # queued statements already reported success
        if (failed.error.code or "").upper() == "TRANSACTION_TIMEOUT":
            self._aborted = failed.error  # the server rolled the transaction back
        raise failed.error

    def _stream_prelude(self, *, begin: bool = True) -> list[_Stmt]:
        out = (
            []
            if self._baton is not None
            else [
                _internal(sql, "pragma")
                for sql in self._session_pragmas.values()
                if not self.token_read_only
            ]
        )
        if begin and self._begin_sql is not None:
            out.append(_internal(self._begin_sql))
        return out

    def _explicit_begin(self, sql: str) -> None:
        m = _BEGIN.match(_strip_noise(sql))
        mode = (m.group(1) or "").upper() if m else ""
        begin_sql = f"BEGIN {mode}".strip()
        if not self._tx:
            self._start_tx(begin_sql)
        elif self._begin_sql is not None and not self._queue and self._baton is None:
            self._begin_sql = begin_sql  # e.g. BEGIN IMMEDIATE right after an implicit begin()
        else:
            raise OperationalError(
                "cannot start a transaction within a transaction", code="SQLITE_ERROR"
            )

    def _start_tx(self, begin_sql: str) -> None:
        self._tx, self._begin_sql = True, begin_sql
        self._aborted = self._lost = None

    def _reset_tx(self) -> None:
        self._tx = False
        self._begin_sql = self._baton = self._stream_url = None
        self._aborted = self._lost = None
        for s in self._queue:
            s.state = "skipped"
        self._queue = []

    def _remember_pragma(self, sql: str) -> None:
        m = _PRAGMA_SET.match(_strip_noise(sql))
        if m and m.group(1).lower() in _SESSION_PRAGMAS:
            name = m.group(1).lower()
            self._session_pragmas[name] = f"PRAGMA {name} = {m.group(2) or m.group(3)}"

    def _aborted_error(self, cause: DatabaseError, action: str) -> OperationalError:
        return OperationalError(
            f"the transaction was aborted because a deferred statement failed "
            f"({cause.message}); {action}",
            code="TX_ABORTED",
        )

    @staticmethod
    def _check_level(value: str | None) -> str | None:
        if value is None:
            return None
        level = value.strip().upper()
        if level not in _ISOLATION_LEVELS:
            raise ValueError(
                f"isolation_level must be None, '', DEFERRED, IMMEDIATE or EXCLUSIVE, not {value!r}"
            )
        return level
