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
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import logging
import math
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import httpx

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

log = logging.getLogger(__name__)

apilevel: Final = "2.0"
threadsafety: Final = 1
paramstyle: Final = "qmark"

#: The SQLite version of the servers we target (sqld 0.24 / Turso). SQLAlchemy reads this before
#: any connection exists; the dialect replaces it with the server's real ``sqlite_version()``.
sqlite_version: Final = "3.45.1"
sqlite_version_info: Final = (3, 45, 1)

_PIPELINE_PATH: Final = "/v2/pipeline"


# --------------------------------------------------------------------------------------------
# PEP 249 exceptions
# --------------------------------------------------------------------------------------------


class Warning(Exception):  # the name is mandated by PEP 249
    """Important warnings (PEP 249); this driver never raises it."""


class Error(Exception):
    """Base of every error this driver raises. ``code`` is the server's code string, if any."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class InterfaceError(Error):
    """Misuse of the driver itself (closed connection, bad arguments to a driver method)."""


class DatabaseError(Error):
    """An error reported by or about the database."""


class DataError(DatabaseError):
    """A value cannot be stored or sent (out of range, not representable)."""


class OperationalError(DatabaseError):
    """The database could not do the operation (locked, no such table, syntax, unreachable)."""


class IntegrityError(DatabaseError):
    """A constraint failed (UNIQUE, NOT NULL, CHECK, FOREIGN KEY)."""


class InternalError(DatabaseError):
    """The server reported an internal inconsistency."""


class ProgrammingError(DatabaseError):
    """The statement or its arguments are wrong (several statements, wrong argument count)."""


class NotSupportedError(DatabaseError):
    """The operation is not supported by this driver or server."""


class AuthError(OperationalError):
    """The server rejected the auth token (HTTP 401/403). The message never contains it."""


class ReadOnlyError(AuthError):
    """The token may only read and the request would write (HTTP 403 from sqld)."""


class TransportError(OperationalError):
    """The server could not be reached or answered badly, or the stream was lost.

    ``disconnect`` is True: the connection's server-side state (an open transaction) is gone;
    SQLAlchemy's pool discards the connection.
    """

    disconnect = True


# --------------------------------------------------------------------------------------------
# PEP 249 type objects and constructors
# --------------------------------------------------------------------------------------------


class _DBAPIType:
    def __init__(self, *names: str) -> None:
        self.names = frozenset(names)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other.upper() in self.names

    def __hash__(self) -> int:
        return hash(self.names)


STRING = _DBAPIType("TEXT", "VARCHAR", "CHAR", "CLOB", "STRING")
BINARY = _DBAPIType("BLOB")
NUMBER = _DBAPIType("INTEGER", "INT", "REAL", "FLOAT", "DOUBLE", "NUMERIC", "DECIMAL")
DATETIME = _DBAPIType("DATE", "DATETIME", "TIMESTAMP", "TIME")
ROWID = _DBAPIType("ROWID", "INTEGER")

Binary = bytes
Date = _dt.date
Time = _dt.time
Timestamp = _dt.datetime


def DateFromTicks(ticks: float) -> _dt.date:  # PEP 249 name
    """PEP 249 constructor."""
    return _dt.date.fromtimestamp(ticks)


def TimeFromTicks(ticks: float) -> _dt.time:  # PEP 249 name
    """PEP 249 constructor."""
    return _dt.datetime.fromtimestamp(ticks).time()


def TimestampFromTicks(ticks: float) -> _dt.datetime:  # PEP 249 name
    """PEP 249 constructor."""
    return _dt.datetime.fromtimestamp(ticks)


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------

_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**63 - 1

JSONDict = dict[str, Any]


def _encode_value(value: object, where: int | str) -> JSONDict:  # noqa: PLR0911 - one per type
    if value is None:
        return {"type": "null"}
    if isinstance(value, bool):
        return {"type": "integer", "value": "1" if value else "0"}
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise DataError(f"parameter {where}: integer does not fit in 64 bits", code="RANGE")
        return {"type": "integer", "value": str(int(value))}
    if isinstance(value, float):
        if math.isnan(value):
            return {"type": "null"}  # SQLite stores NaN as NULL
        if math.isinf(value):
            raise DataError(f"parameter {where}: infinity cannot be sent over Hrana JSON",
                            code="RANGE")
        return {"type": "float", "value": float(value)}
    if isinstance(value, str):
        return {"type": "text", "value": str.__str__(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"type": "blob", "base64": base64.b64encode(bytes(value)).decode("ascii")}
    raise ProgrammingError(
        f"Error binding parameter {where}: type {type(value).__name__!r} is not supported",
        code="ARGS_INVALID",
    )


def _decode_value(cell: JSONDict) -> Any:
    kind = cell.get("type")
    if kind == "null":
        return None
    if kind == "integer":
        return int(cell["value"])
    if kind == "float":
        return float(cell["value"])
    if kind == "text":
        return cell["value"]
    if kind == "blob":
        raw = cell.get("base64", cell.get("value")) or ""
        return base64.b64decode(raw + "=" * (-len(raw) % 4))
    raise InterfaceError(f"unknown value type {kind!r} from the server", code="PROTOCOL")


def _encode_params(params: Sequence[Any] | Mapping[str, Any] | None) -> JSONDict:
    if params is None:
        return {}
    if isinstance(params, Mapping):
        return {"named_args": [
            {"name": name, "value": _encode_value(value, repr(name))}
            for name, value in params.items()
        ]}
    if isinstance(params, str | bytes | bytearray | memoryview):
        raise ProgrammingError("parameters must be a sequence or a mapping, not a string",
                               code="ARGS_INVALID")
    return {"args": [_encode_value(v, i) for i, v in enumerate(params, start=1)]}


# --------------------------------------------------------------------------------------------
# Statement classification (leading keyword, comments skipped)
# --------------------------------------------------------------------------------------------

StmtKind = Literal[
    "begin", "commit", "rollback", "rollback_to", "savepoint", "dml", "select", "pragma", "other",
]

_NOISE = re.compile(r"(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?(?:\*/|\Z))*", re.S)
_WORDS = re.compile(r"[A-Za-z_]+")
_STRINGS = re.compile(r"'(?:[^']|'')*'")
_RETURNING = re.compile(r"\bRETURNING\b", re.I)
_BEGIN = re.compile(r"BEGIN(?:\s+(DEFERRED|IMMEDIATE|EXCLUSIVE))?(?:\s+TRANSACTION)?\s*;?\s*\Z",
                    re.I)
_RELEASE = re.compile(r"RELEASE\s+(?:SAVEPOINT\s+)?(\S+?)\s*;?\s*\Z", re.I)
_PRAGMA_SET = re.compile(
    r"PRAGMA\s+(?:main\s*\.\s*)?([A-Za-z_]+)\s*(?:=\s*(.+?)|\(\s*(.+?)\s*\))\s*;?\s*\Z",
    re.I | re.S,
)
#: PRAGMAs that configure one SQLite connection: replayed at the start of every new stream.
_SESSION_PRAGMAS: Final = frozenset({
    "foreign_keys", "recursive_triggers", "busy_timeout", "query_only", "ignore_check_constraints",
    "legacy_alter_table", "trusted_schema", "automatic_index", "reverse_unordered_selects",
    "cache_size", "temp_store", "cell_size_check", "case_sensitive_like",
})


def _strip_noise(sql: str) -> str:
    m = _NOISE.match(sql)
    return sql[m.end():] if m else sql


def _classify(sql: str) -> StmtKind:  # noqa: PLR0911 - one return per kind
    words = [w.upper() for w in _WORDS.findall(_strip_noise(sql)[:80], 0)[:4]]
    first = words[0] if words else ""
    if first == "BEGIN":
        return "begin"
    if first in ("COMMIT", "END"):
        return "commit"
    if first == "ROLLBACK":
        return "rollback_to" if "TO" in words[1:3] else "rollback"
    if first in ("SAVEPOINT", "RELEASE"):
        return "savepoint"
    if first in ("INSERT", "UPDATE", "DELETE", "REPLACE"):
        return "dml"
    if first in ("SELECT", "VALUES"):
        return "select"
    if first == "PRAGMA":
        return "pragma"
    return "other"


def _has_returning(sql: str) -> bool:
    return _RETURNING.search(_STRINGS.sub("''", sql)) is not None


# --------------------------------------------------------------------------------------------
# Error mapping
# --------------------------------------------------------------------------------------------

_SQLITE_CLASSES: Final[dict[str, type[DatabaseError]]] = {
    # the same table CPython's sqlite3 uses, by primary result code
    "SQLITE_CONSTRAINT": IntegrityError,
    "SQLITE_MISMATCH": IntegrityError,
    "SQLITE_TOOBIG": DataError,
    "SQLITE_INTERNAL": InternalError,
    "SQLITE_NOTFOUND": InternalError,
    "SQLITE_CORRUPT": DatabaseError,
    "SQLITE_NOTADB": DatabaseError,
    "SQLITE_MISUSE": ProgrammingError,
    "SQLITE_RANGE": ProgrammingError,
}
_PROGRAMMING_CODES: Final = frozenset({
    "ARGS_INVALID", "ARGS_BOTH_POSITIONAL_AND_NAMED", "SQL_MANY_STATEMENTS", "SQL_NO_STATEMENT",
    "SQL_INPUT_ERROR",
})
_LOST_STREAM_CODES: Final = frozenset({"STREAM_EXPIRED", "BATON_INVALID", "BATON_REUSED",
                                        "STREAM_CLOSED"})
_LOCKED_TEXT: Final = "database is locked"


def _error_from_server(message: str, code: str | None) -> DatabaseError:
    """Map a Hrana ``Error`` (message, code) to the PEP 249 class sqlite3 would raise."""
    msg = message.removeprefix("SQLite error: ")
    upper = (code or "").upper()
    if upper in _LOST_STREAM_CODES:
        return TransportError(f"the server lost the stream: {msg}", code=code)
    if upper.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        if _LOCKED_TEXT not in msg:
            msg = f"{_LOCKED_TEXT} ({msg})"
        return OperationalError(msg, code=code)
    for prefix, cls in _SQLITE_CLASSES.items():
        if upper == prefix or upper.startswith(prefix + "_"):
            return cls(msg, code=code)
    if upper in _PROGRAMMING_CODES:
        return ProgrammingError(msg, code=code)
    if "constraint failed" in msg:
        return IntegrityError(msg, code=code)
    return OperationalError(msg, code=code)


# --------------------------------------------------------------------------------------------
# Statements and results
# --------------------------------------------------------------------------------------------


class _Result:
    __slots__ = ("columns", "lastrowid", "rowcount", "rows")

    def __init__(self, raw: JSONDict) -> None:
        cols = raw.get("cols") or []
        self.columns: tuple[str, ...] | None = (
            tuple(str(c.get("name") or "") for c in cols) if cols else None
        )
        self.rows: list[tuple[Any, ...]] = [
            tuple(_decode_value(cell) for cell in row) for row in raw.get("rows") or []
        ]
        self.rowcount = int(raw.get("affected_row_count") or 0)
        rid = raw.get("last_insert_rowid")
        self.lastrowid: int | None = int(rid) if rid is not None else None


_State = Literal["new", "queued", "done", "failed", "skipped"]


class _Stmt:
    """One statement on its way to the server, and what became of it."""

    __slots__ = ("error", "internal", "kind", "payload", "result", "state")

    def __init__(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None,
                 kind: StmtKind, *, want_rows: bool = True, internal: bool = False) -> None:
        self.kind = kind
        self.internal = internal  # sent by the driver (prelude, BEGIN, COMMIT...), not the caller
        self.payload: JSONDict = {"sql": sql, **_encode_params(params), "want_rows": want_rows}
        self.state: _State = "new"
        self.result: _Result | None = None
        self.error: DatabaseError | None = None

    @property
    def sql(self) -> str:
        return str(self.payload["sql"])


def _internal(sql: str, kind: StmtKind = "other") -> _Stmt:
    return _Stmt(sql, None, kind, want_rows=False, internal=True)


def _claims_read_only(token: str) -> bool:
    """True if ``token`` is a JWT whose payload says ``"a": "ro"`` (sqld and Turso read-only).

    Only a hint (the signature is not checked): it spares the session PRAGMAs, which sqld counts
    as writes and refuses to read-only tokens.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return False
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return False
    return isinstance(claims, dict) and claims.get("a") == "ro"


# --------------------------------------------------------------------------------------------
# Connection
# --------------------------------------------------------------------------------------------

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
        raise InterfaceError("no server URL given: use sqlite+hrana://HOST:PORT or pass one",
                             code="URL")
    return Connection(url, auth_token=auth_token, timeout=timeout,
                      connect_timeout=connect_timeout, namespace=namespace,
                      isolation_level=isolation_level, defer_writes=defer_writes,
                      lazy_begin=lazy_begin, foreign_keys=foreign_keys)


class Connection:
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
        if url.startswith("libsql://"):
            url = "https://" + url.removeprefix("libsql://")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InterfaceError("the URL must look like http(s)://host[:port]", code="URL")
        if parts.username or parts.password:
            raise InterfaceError("credentials do not belong in the URL: pass auth_token=...",
                                 code="URL")
        if timeout <= 0 or connect_timeout <= 0:
            raise InterfaceError("timeouts must be positive", code="ARGS")
        netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        if ":" in parts.hostname:  # IPv6 literal
            netloc = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port else "")
        self.url = f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"
        self.namespace = namespace
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.defer_writes = defer_writes
        self.lazy_begin = lazy_begin
        self.round_trips = 0
        self.last_replication_index: int | None = None
        self._token = auth_token or None
        #: True when the token may only read (from its claims, or learnt from an HTTP 403): the
        #: session PRAGMAs are then not sent (sqld refuses any PRAGMA to read-only tokens).
        self.token_read_only = bool(self._token) and _claims_read_only(self._token or "")
        headers = {"content-type": "application/json", "accept": "application/json"}
        if self._token:
            headers["authorization"] = f"Bearer {self._token}"
        if namespace:
            headers["host"] = f"{namespace}.{netloc}"
        self._client: httpx.Client | None = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            follow_redirects=False,
        )
        self._isolation_level: str | None = self._check_level(isolation_level)
        self._session_pragmas: dict[str, str] = {}
        if foreign_keys:
            self._session_pragmas["foreign_keys"] = "PRAGMA foreign_keys = ON"
        # transaction state
        self._tx = False
        self._begin_sql: str | None = None  # BEGIN not yet run on the server
        self._baton: str | None = None
        self._stream_url: str | None = None
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

    def execute(self, sql: str, parameters: Sequence[Any] | Mapping[str, Any] | None = None,
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
                f"the outcome of COMMIT is unknown: {exc.message}", code=exc.code) from exc
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
        elif (kind == "select" and self.lazy_begin and self._baton is None and not self._queue
              and self._begin_sql in ("BEGIN", "BEGIN DEFERRED")):
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
                code=self._lost.code)
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
                self._aborted = (exc if isinstance(exc, DatabaseError)
                                 else OperationalError(exc.message, code=exc.code))
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
        out = [] if self._baton is not None else [
            _internal(sql, "pragma") for sql in self._session_pragmas.values()
            if not self.token_read_only]
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
            raise OperationalError("cannot start a transaction within a transaction",
                                   code="SQLITE_ERROR")

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
            f"({cause.message}); {action}", code="TX_ABORTED")

    # ---------------------------------------------------------------- protocol

    def _batch(self, stmts: list[_Stmt], *, baton: str | None, close: bool,
               rollback_if_last_fails: bool = False) -> None:
        """One HTTP request: ``stmts`` as one batch, each step running only if the one before it
        succeeded (plus an optional ROLLBACK step if the last one did not), then maybe ``close``.
        Results and errors are stored in the statements."""
        try:
            try:
                self._exchange(stmts, baton, close=close, rollback=rollback_if_last_fails)
            except ReadOnlyError:
                # sqld refuses the whole request (nothing ran) when a read-only token sends a
                # PRAGMA; if only our session PRAGMAs made it a "write", resend without them
                pragmas = [s for s in stmts if s.internal and s.kind == "pragma"]
                if not pragmas or not all(s.internal or s.kind == "select" for s in stmts):
                    raise
                self.token_read_only = True
                log.info("the auth token is read-only: session PRAGMAs are not sent any more")
                for s in pragmas:
                    s.state = "skipped"
                self._exchange([s for s in stmts if s not in pragmas], baton, close=close,
                               rollback=rollback_if_last_fails)
        finally:
            for s in stmts:
                if s.state in ("new", "queued"):  # the request failed as a whole
                    s.state = "skipped"

    def _exchange(self, stmts: list[_Stmt], baton: str | None, *, close: bool,
                  rollback: bool) -> None:
        steps: list[JSONDict] = []
        for i, s in enumerate(stmts):
            step: JSONDict = {"stmt": s.payload}
            if i:
                step["condition"] = {"type": "ok", "step": i - 1}
            steps.append(step)
        if rollback:
            steps.append({"stmt": {"sql": "ROLLBACK", "want_rows": False},
                          "condition": {"type": "not",
                                        "cond": {"type": "ok", "step": len(stmts) - 1}}})
        requests: list[JSONDict] = [{"type": "batch", "batch": {"steps": steps}}]
        if close:
            requests.append({"type": "close"})
        body = self._post(requests, baton)
        results = body.get("results")
        if (not isinstance(results, list) or len(results) != len(requests)
                or not all(isinstance(r, dict) for r in results)):
            raise TransportError(f"libSQL server {self._where()} sent a malformed response",
                                 code="PROTOCOL")
        if close:
            self._baton = self._stream_url = None
        else:
            new_baton = body.get("baton")
            if not new_baton:
                raise TransportError("the server closed the transaction's stream",
                                     code="STREAM_CLOSED")
            self._baton = str(new_baton)
            stream_url = str(body.get("base_url") or "").rstrip("/")
            if stream_url.startswith("https://") or (
                    stream_url.startswith("http://") and self.url.startswith("http://")):
                self._stream_url = stream_url  # sticky stream routing; never downgrade to http
        first = results[0]
        if first.get("type") != "ok":
            err = first.get("error") or {}
            raise _error_from_server(self._scrub(str(err.get("message", "batch failed"))),
                                     err.get("code"))
        self._apply_results(stmts, first.get("response", {}).get("result", {}))

    def _apply_results(self, stmts: list[_Stmt], result: JSONDict) -> None:
        self._note_replication_index(result.get("replication_index"))
        step_results = result.get("step_results") or []
        step_errors = result.get("step_errors") or []
        for i, s in enumerate(stmts):
            res = step_results[i] if i < len(step_results) else None
            err = step_errors[i] if i < len(step_errors) else None
            if err is not None:
                s.state = "failed"
                s.error = _error_from_server(self._scrub(str(err.get("message", ""))),
                                             err.get("code"))
            elif res is not None:
                s.state, s.result = "done", _Result(res)
                self._note_replication_index(res.get("replication_index"))
            else:
                s.state = "skipped"

    def _close_stream(self, baton: str) -> None:
        try:
            self._post([{"type": "close"}], baton)
        except Error as exc:
            log.debug("closing an idle stream failed: %s", exc.message)

    def _post(self, requests: list[JSONDict], baton: str | None) -> JSONDict:
        client = self._client
        if client is None:
            raise InterfaceError("Cannot operate on a closed database.", code="CLOSED")
        base = self._stream_url if (baton is not None and self._stream_url) else self.url
        content = json.dumps({"baton": baton, "requests": requests}, allow_nan=False,
                             separators=(",", ":")).encode()
        self.round_trips += 1
        started = time.monotonic()
        where = self._where()
        try:
            response = client.post(base + _PIPELINE_PATH, content=content)
        except httpx.ConnectTimeout as exc:
            raise TransportError(
                f"libSQL server {where} is unreachable: no connection within "
                f"{self.connect_timeout:g} s", code="CONNECT_TIMEOUT") from exc
        except httpx.TimeoutException as exc:
            raise TransportError(
                f"libSQL server {where} did not answer within {self.timeout:g} s",
                code="TIMEOUT") from exc
        except httpx.ConnectError as exc:
            raise TransportError(
                f"libSQL server {where} is unreachable: {self._scrub(str(exc))}",
                code="CONNECT") from exc
        except httpx.HTTPError as exc:
            raise TransportError(
                f"the connection to libSQL server {where} failed: {self._scrub(str(exc))}",
                code="NETWORK") from exc
        elapsed_ms = (time.monotonic() - started) * 1000
        log.debug("hrana request %d: %d requests, HTTP %d, %.1f ms", self.round_trips,
                  len(requests), response.status_code, elapsed_ms)
        status = response.status_code
        if status == 403 and "permission" in self._body_text(response).lower():
            raise ReadOnlyError(
                f"attempt to write a readonly database: libSQL server {where} allows this auth "
                f"token to read only (HTTP 403)", code="HTTP_403")
        if status in (401, 403):
            what = "rejected the auth token" if self._token else "requires an auth token"
            reason = self._server_reason(response)
            raise AuthError(f"libSQL server {where} {what} (HTTP {status}{reason})",
                            code=f"HTTP_{status}")
        if status >= 500:
            raise TransportError(
                f"libSQL server {where} failed with HTTP {status}: {self._body_text(response)}",
                code=f"HTTP_{status}")
        if status != 200:
            raise self._client_error(response)
        try:
            body = response.json()
        except ValueError as exc:
            raise TransportError(f"libSQL server {where} sent a response that is not JSON",
                                 code="PROTOCOL") from exc
        if not isinstance(body, dict):
            raise TransportError(f"libSQL server {where} sent an unexpected response",
                                 code="PROTOCOL")
        return body

    def _client_error(self, response: httpx.Response) -> DatabaseError:
        text = self._body_text(response)
        code: str | None = None
        message = text
        try:
            data = response.json()
        except ValueError:
            data = None
        if isinstance(data, dict):
            if isinstance(data.get("message"), str):
                message = self._scrub(data["message"])
                code = data.get("code") if isinstance(data.get("code"), str) else None
            elif isinstance(data.get("error"), str):
                message = self._scrub(data["error"])
        lowered = message.lower()
        if code is None and "baton" in lowered:
            code = "BATON_REUSED" if "already been used" in lowered else "BATON_INVALID"
        if (code or "") in _LOST_STREAM_CODES:
            why = ("it expired after being idle too long" if code == "STREAM_EXPIRED"
                   else "the server does not know it")
            return TransportError(
                f"the transaction's stream on libSQL server {self._where()} is gone: {why} "
                f"({message})", code=code)
        if code is not None:
            return _error_from_server(message, code)
        return OperationalError(
            f"libSQL server {self._where()} refused the request (HTTP {response.status_code}): "
            f"{message}", code=f"HTTP_{response.status_code}")

    def _server_reason(self, response: httpx.Response) -> str:
        """``": <the server's short reason>"`` from a JSON error body, scrubbed, or ``""``."""
        try:
            data = response.json()
        except ValueError:
            return ""
        reason = data.get("error") or data.get("message") if isinstance(data, dict) else None
        if not isinstance(reason, str) or not reason.strip():
            return ""
        return ": " + self._scrub(reason.strip().removeprefix("Unauthorized: ").strip("`"))[:200]

    def _body_text(self, response: httpx.Response) -> str:
        try:
            text = response.text
        except (UnicodeDecodeError, httpx.HTTPError):
            text = ""
        return self._scrub(text.strip()[:300])

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "<redacted>") if self._token else text

    def _where(self) -> str:
        return f"at {self.url}" + (f" (namespace {self.namespace!r})" if self.namespace else "")

    def _note_replication_index(self, value: object) -> None:
        if value is None:
            return
        try:
            index = int(str(value))
        except ValueError:
            return
        if self.last_replication_index is None or index > self.last_replication_index:
            self.last_replication_index = index

    def _check_open(self) -> None:
        if self._client is None:
            raise ProgrammingError("Cannot operate on a closed database.", code="CLOSED")

    @staticmethod
    def _check_level(value: str | None) -> str | None:
        if value is None:
            return None
        level = value.strip().upper()
        if level not in _ISOLATION_LEVELS:
            raise ValueError("isolation_level must be None, '', DEFERRED, IMMEDIATE or "
                             f"EXCLUSIVE, not {value!r}")
        return level


def _first_failure(stmts: list[_Stmt]) -> _Stmt | None:
    return next((s for s in stmts if s.state == "failed"), None)


# --------------------------------------------------------------------------------------------
# Cursor
# --------------------------------------------------------------------------------------------

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

    def execute(self, operation: str,
                parameters: Sequence[Any] | Mapping[str, Any] | None = None) -> Cursor:
        """Execute one statement (qmark ``?`` or named ``:name`` parameters)."""
        self._check()
        kind = _classify(operation)
        self._start([_Stmt(operation, parameters, kind)], kind)
        return self

    def executemany(self, operation: str,
                    seq_of_parameters: Iterator[Any] | Sequence[Any]) -> Cursor:
        """Execute a statement once per parameter set, in one request (or queued in a transaction).

        Execution stops at the first failing set; outside a transaction the sets before it stay
        committed (as with sqlite3 in autocommit mode).
        """
        self._check()
        kind = _classify(operation)
        if kind in ("begin", "commit", "rollback", "rollback_to", "savepoint"):
            raise ProgrammingError("executemany() cannot run transaction control statements",
                                   code="ARGS_INVALID")
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
        self._description = tuple((name, None, None, None, None, None, None)
                                   for name in last.result.columns)
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
        rows = self._rows[self._pos:self._pos + n]
        self._pos += len(rows)
        return rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        """All remaining rows."""
        self._check()
        rows = self._rows[self._pos:]
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
