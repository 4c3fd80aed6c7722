"""A small DB-API 2.0 (PEP 249) driver for libSQL servers (sqld, Turso) over Hrana-over-HTTP.

It speaks the server's JSON protocol (``POST {base}/v2/pipeline``) through one ``httpx.Client`` per
connection, so every wait on the network is bounded by a timeout and releases the GIL.

Usage::

    from autoforge_data.db import hrana

    conn = hrana.connect("http://127.0.0.1:8080", auth_token=token, timeout=5.0)
    cur = conn.cursor()
    cur.execute("INSERT INTO t(a, b) VALUES (?, ?)", (1, "x"))   # queued, not sent yet
    cur.execute("INSERT INTO t(a, b) VALUES (?, ?)", (2, "y"))   # queued
    conn.commit()                # ONE request: PRAGMA foreign_keys=ON, BEGIN, both INSERTs, COMMIT
    conn.round_trips             # -> 1

Semantics (what a caller can rely on):

* **Outside a transaction** each statement is one HTTP request on a fresh server stream that is
  closed in the same request; no stream is ever left idle, so none can expire.
* **Transactions** follow Python's ``sqlite3`` (legacy mode): with ``isolation_level`` ``""``
  (the default), ``"DEFERRED"``, ``"IMMEDIATE"`` or ``"EXCLUSIVE"`` an INSERT/UPDATE/DELETE/REPLACE
  implicitly opens a transaction; ``None`` is autocommit. A transaction also starts with an explicit
  ``BEGIN [DEFERRED|IMMEDIATE|EXCLUSIVE]`` statement or :meth:`Connection.begin` (SQLAlchemy's
  dialect calls that, so ``with engine.begin():`` is one server-side transaction). ``BEGIN`` is
  never sent on its own: it travels with the first statement that must reach the server. While the
  transaction runs, the stream's baton is carried between requests; ``commit()``/``rollback()``
  end the stream.
* **Deferred writes**: inside a transaction an INSERT/UPDATE/DELETE/REPLACE without RETURNING is
  queued, not sent (its ``description`` is ``None``). The queue is flushed, in one request together
  with whatever triggered it, when a statement that must run now is executed (SELECT, PRAGMA, DDL,
  SAVEPOINT, ... anything that is not a queueable write), when ``rowcount`` or ``lastrowid`` of a
  queued statement is read, on :meth:`Connection.flush`, or on ``commit()``. ``commit()`` sends
  ``BEGIN`` (if not sent yet) + the queue + ``COMMIT`` as one Hrana batch whose steps each run only
  if the previous one succeeded, followed by a ``ROLLBACK`` step that runs if ``COMMIT`` did not
  succeed, and closes the stream: one HTTP request, nothing committed unless every step succeeded.
  An error in a queued statement is raised by whatever flushed it (for example IntegrityError from
  ``commit()``); the statements queued after it were not run, so the transaction is then *aborted*:
  everything but ``rollback()`` (or ``ROLLBACK TO`` a savepoint) raises ``OperationalError`` with
  code ``TX_ABORTED``, and ``commit()`` rolls back and raises. Savepoints: SAVEPOINT and RELEASE
  send the queue; when a write queued inside a savepoint fails as RELEASE sends it, the driver
  rolls back to that savepoint and releases it before raising the error, so the transaction goes
  on as it was before the savepoint (what SQLAlchemy's ``begin_nested()`` expects).
* A SAVEPOINT outside a transaction opens one (sent as BEGIN + SAVEPOINT), so RELEASE never
  commits on its own: ``commit()`` does.
* Every new stream first runs ``PRAGMA foreign_keys = ON`` (and any connection-scoped PRAGMA
  assignment the caller executed before, e.g. ``PRAGMA recursive_triggers = ON``) in the same
  request, before ``BEGIN`` -- except with a read-only token (JWT claim ``"a": "ro"``, or learnt
  from the server's HTTP 403 on the first request): sqld refuses any PRAGMA to such tokens, and
  they cannot write anyway.
* ``lazy_begin=True`` (optional) lets plain SELECTs of a deferred transaction that has not written
  yet run as standalone requests: read-only units of work then cost one request per read and
  nothing to commit, at the price of reads not sharing one snapshot (like sqlite3's legacy mode).
* ``Connection.round_trips`` counts HTTP requests; ``Connection.last_replication_index`` is the
  highest ``replication_index`` the server reported (for read-your-writes on replicas).
* Errors: PEP 249 classes mapped like ``sqlite3`` does (constraint -> IntegrityError, busy/locked
  -> OperationalError "database is locked", syntax/missing table -> OperationalError, bad
  arguments/several statements -> ProgrammingError), each with ``.code`` (the server's code string,
  e.g. ``"SQLITE_CONSTRAINT"``). :class:`AuthError` (HTTP 401/403; its subclass
  :class:`ReadOnlyError` when a read-only token tries to write) and :class:`TransportError`
  (unreachable, timeout, HTTP 5xx, a response that is not Hrana, stream expired or unknown
  baton) are OperationalErrors;
  ``TransportError.disconnect`` is True. A transaction whose stream was lost raises TransportError
  on every further use until ``rollback()`` (which then sends nothing).
* No retries: a failed request is reported, never resent (a write might have run).
* The auth token is sent only as ``Authorization: Bearer``; it never appears in ``repr()``, in an
  exception message or in a log line.

Modules: :mod:`.errors` (exceptions, error mapping), :mod:`.values` (value encoding, PEP 249 types),
:mod:`.statements` (classification, results), :mod:`.transport` (the HTTP pipeline client),
:mod:`.connection` (transactions, deferred writes) and :mod:`.cursor`. This package is the DB-API
module itself (SQLAlchemy's dialect returns it from ``import_dbapi()``): every public name is
re-exported here.
"""

from __future__ import annotations

from typing import Final

from autoforge_data.db.hrana.connection import Connection, connect
from autoforge_data.db.hrana.cursor import Cursor
from autoforge_data.db.hrana.errors import (
    AuthError,
    DatabaseError,
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
    ReadOnlyError,
    TransportError,
    Warning,
)

# not public; the tests of the error mapping call it as hrana._error_from_server
from autoforge_data.db.hrana.errors import _error_from_server as _error_from_server
from autoforge_data.db.hrana.values import (
    BINARY,
    DATETIME,
    NUMBER,
    ROWID,
    STRING,
    Binary,
    Date,
    DateFromTicks,
    Time,
    TimeFromTicks,
    Timestamp,
    TimestampFromTicks,
)

__all__ = [
    "BINARY",
    "DATETIME",
    "NUMBER",
    "ROWID",
    "STRING",
    "AuthError",
    "Binary",
    "Connection",
    "Cursor",
    "DataError",
    "DatabaseError",
    "Date",
    "DateFromTicks",
    "Error",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "NotSupportedError",
    "OperationalError",
    "ProgrammingError",
    "ReadOnlyError",
    "Time",
    "TimeFromTicks",
    "Timestamp",
    "TimestampFromTicks",
    "TransportError",
    "Warning",
    "apilevel",
    "connect",
    "paramstyle",
    "sqlite_version",
    "sqlite_version_info",
    "threadsafety",
]

apilevel: Final = "2.0"
threadsafety: Final = 1
paramstyle: Final = "qmark"

#: The SQLite version of the servers we target (sqld 0.24 / Turso). SQLAlchemy reads this before
#: any connection exists; the dialect replaces it with the server's real ``sqlite_version()``.
sqlite_version: Final = "3.45.1"
sqlite_version_info: Final = (3, 45, 1)

# The public classes keep the module they had before the split: SQLAlchemy prints it in error
# messages ("(autoforge_data.db.hrana.IntegrityError) ..."), errormap recognises driver errors by
# it, and pickles refer to it.
for _cls in (
    Warning,
    Error,
    InterfaceError,
    DatabaseError,
    DataError,
    OperationalError,
    IntegrityError,
    InternalError,
    ProgrammingError,
    NotSupportedError,
    AuthError,
    ReadOnlyError,
    TransportError,
    Connection,
    Cursor,
):
    _cls.__module__ = __name__
del _cls
