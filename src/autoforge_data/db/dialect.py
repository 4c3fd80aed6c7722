"""SQLAlchemy dialect ``sqlite+hrana://`` for libSQL servers, on our driver :mod:`.hrana`.

URL form (no credentials in it, ever)::

    sqlite+hrana://HOST[:PORT][/PATH][?secure=true|false&namespace=NS&timeout=5&connect_timeout=2
                                      &lazy_begin=false&defer_writes=true]

* ``secure`` picks ``https`` (true) or ``http`` (false); by default loopback hosts (``localhost``,
  ``127.x``, ``::1``) use ``http`` and every other host ``https``.
* ``namespace`` selects a database on a sqld run with ``--enable-namespaces``.
* ``timeout``/``connect_timeout`` (seconds), ``lazy_begin``, ``defer_writes``: see :mod:`.hrana`.

``sqlite+hrana://`` without a host is accepted together with ``create_engine(..., creator=...)``.

The auth token goes only in ``connect_args``::

    engine = create_engine("sqlite+hrana://127.0.0.1:8080",
                           connect_args={"auth_token": token})

What the dialect adds on top of SQLAlchemy's SQLite dialect:

* ``do_begin`` starts a driver transaction, so everything in ``with engine.begin() as conn:`` (or
  a Session's unit of work) runs in ONE server-side transaction; writes whose ``rowcount`` nobody
  reads are sent with the COMMIT (one HTTP request for BEGIN + writes + COMMIT). An event that
  executes ``BEGIN IMMEDIATE`` itself (SQLite's usual recipe) works too.
* The result's ``rowcount`` of a deferred write is read lazily: reading it sends the writes.
* ``isolation_level``: ``"SERIALIZABLE"`` (default; SQLite transactions are serializable),
  ``"READ UNCOMMITTED"`` (accepted; it has no effect on a server's separate connections) and
  ``"AUTOCOMMIT"`` (every statement commits on its own).
* ``server_version_info`` is the server's ``sqlite_version()``, and the SQLite feature flags
  (RETURNING, multi-row VALUES...) follow it.
* ``is_disconnect`` is true for :class:`.hrana.TransportError` (unreachable server, timeout,
  expired stream), so the pool discards such connections.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import exc, util
from sqlalchemy.dialects.sqlite.base import SQLiteDialect, SQLiteExecutionContext
from sqlalchemy.engine import URL

from autoforge_data.db import hrana

if TYPE_CHECKING:
    from sqlalchemy.engine.base import Connection
    from sqlalchemy.engine.interfaces import (
        ConnectArgsType,
        DBAPIConnection,
        DBAPICursor,
        DBAPIModule,
        IsolationLevel,
    )
    from sqlalchemy.pool import PoolProxiedConnection


class _LazyRowcount(int):
    """Marks "rowcount not fetched yet" where SQLAlchemy expects an int (identity-compared)."""


_LAZY_ROWCOUNT = _LazyRowcount(-1)

_QUERY_ARGS: dict[str, type] = {
    "timeout": float,
    "connect_timeout": float,
    "namespace": str,
    "lazy_begin": bool,
    "defer_writes": bool,
    "foreign_keys": bool,
}


class HranaExecutionContext(SQLiteExecutionContext):
    """Execution context that does not force deferred writes out just to learn their rowcount."""

    def post_exec(self) -> None:
        """Mark the rowcount of a deferred write as "ask the cursor when someone needs it"."""
        super().post_exec()  # type: ignore[no-untyped-call]  # SQLAlchemy leaves it untyped
        if self._rowcount is None and getattr(self.cursor, "is_deferred", False):
            self._rowcount = _LAZY_ROWCOUNT

    @property
    def rowcount(self) -> int:
        """The statement's rowcount; for a deferred write this sends the queued writes."""
        if self._rowcount is _LAZY_ROWCOUNT:
            self._rowcount = int(self.cursor.rowcount)
        return super().rowcount


class HranaDialect(SQLiteDialect):
    """SQLite dialect over the Hrana-over-HTTP driver (``sqlite+hrana://``)."""

    driver = "hrana"
    supports_statement_cache = True
    default_paramstyle = "qmark"
    returns_native_bytes = True
    supports_sane_rowcount = True
    supports_sane_multi_rowcount = True
    execution_ctx_cls = HranaExecutionContext

    _isolation_lookup = util.immutabledict({  # AUTOCOMMIT maps to no PRAGMA value
        "READ UNCOMMITTED": 1, "SERIALIZABLE": 0,
        "AUTOCOMMIT": None,  # type: ignore[dict-item]  # the base class types values as int
    })

    @classmethod
    def import_dbapi(cls) -> DBAPIModule:
        """Our driver module."""
        return cast("DBAPIModule", hrana)

    def create_connect_args(self, url: URL) -> ConnectArgsType:
        """Build ``hrana.connect(base_url, **options)`` from the URL; reject credentials in it."""
        if url.username or url.password:
            raise exc.ArgumentError(
                "sqlite+hrana:// URLs must not carry credentials: pass the token as "
                "connect_args={'auth_token': ...}")
        query = dict(url.query)
        secure_raw = query.pop("secure", None)
        if isinstance(secure_raw, tuple):
            raise exc.ArgumentError("'secure' given more than once")
        secure = (util.asbool(secure_raw) if secure_raw is not None
                  else not _is_loopback(url.host or "localhost"))
        opts: dict[str, Any] = {}
        for key, type_ in _QUERY_ARGS.items():
            if key not in query:
                continue
            value = query.pop(key)
            if isinstance(value, tuple):
                raise exc.ArgumentError(f"{key!r} given more than once")
            opts[key] = util.asbool(value) if type_ is bool else type_(value)
        if query:
            raise exc.ArgumentError(
                f"unknown sqlite+hrana:// URL option(s): {', '.join(sorted(query))}")
        if not url.host:  # e.g. create_engine("sqlite+hrana://", creator=...)
            return [], opts
        host = f"[{url.host}]" if ":" in url.host else url.host
        base = f"{'https' if secure else 'http'}://{host}"
        if url.port:
            base += f":{url.port}"
        if url.database:
            base += "/" + url.database.strip("/")
        return [base], opts

    # ------------------------------------------------------------------ transactions

    def do_begin(self, dbapi_connection: DBAPIConnection) -> None:
        """Start a (lazily sent) driver transaction unless the connection is in autocommit."""
        conn = cast(hrana.Connection, dbapi_connection)
        if conn.isolation_level is not None:
            conn.begin()

    def get_isolation_level_values(
            self, dbapi_connection: DBAPIConnection) -> Sequence[IsolationLevel]:
        """The levels ``isolation_level=`` accepts."""
        return ["READ UNCOMMITTED", "SERIALIZABLE", "AUTOCOMMIT"]

    def set_isolation_level(self, dbapi_connection: DBAPIConnection,
                            level: IsolationLevel) -> None:
        """AUTOCOMMIT switches the driver to autocommit; the others to transactions.

        No PRAGMA is sent: every server stream is a separate SQLite connection, where
        ``read_uncommitted`` has no effect.
        """
        if level not in self._isolation_lookup:
            raise exc.ArgumentError(
                f"Invalid value {level!r} for isolation_level. Valid isolation levels for "
                f"{self.name} are {', '.join(self._isolation_lookup)}")
        conn = cast(hrana.Connection, dbapi_connection)
        conn.isolation_level = None if level == "AUTOCOMMIT" else ""

    def get_isolation_level(self, dbapi_connection: DBAPIConnection) -> IsolationLevel:
        """AUTOCOMMIT or SERIALIZABLE, from the driver's state (no round trip)."""
        conn = cast(hrana.Connection, dbapi_connection)
        return "AUTOCOMMIT" if conn.isolation_level is None else "SERIALIZABLE"

    def detect_autocommit_setting(self, dbapi_conn: DBAPIConnection) -> bool:
        """True when the driver runs in autocommit mode."""
        return cast(hrana.Connection, dbapi_conn).isolation_level is None

    # ------------------------------------------------------------------ server facts

    def _get_server_version_info(self, connection: Connection) -> tuple[int, ...]:
        """``sqlite_version()`` of the server, as a tuple, in one standalone request."""
        dbapi_conn = connection.connection.dbapi_connection
        assert dbapi_conn is not None
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute("SELECT sqlite_version()")
            row = cursor.fetchone()
        finally:
            cursor.close()
        text = str(row[0]) if row else hrana.sqlite_version
        return tuple(int(part) for part in re.findall(r"\d+", text)[:3])

    def initialize(self, connection: Connection) -> None:
        """SQLAlchemy's initialisation, then the SQLite feature flags for the server's version."""
        super().initialize(connection)
        version = self.server_version_info
        if not version:
            return
        self._broken_dotted_colnames = version < (3, 10, 0)
        self.supports_default_values = version >= (3, 3, 8)
        self.supports_cast = version >= (3, 2, 3)
        self.supports_multivalues_insert = version >= (3, 7, 11)
        self._broken_fk_pragma_quotes = version < (3, 6, 14)
        returning = version >= (3, 35)
        self.update_returning = self.delete_returning = self.insert_returning = returning
        if version < (3, 32, 0):
            self.insertmanyvalues_max_parameters = 999

    def is_disconnect(
        self,
        e: DBAPIModule.Error,
        connection: PoolProxiedConnection | DBAPIConnection | None,
        cursor: DBAPICursor | None,
    ) -> bool:
        """Transport failures and lost streams invalidate the connection; so does a closed one."""
        if isinstance(e, hrana.TransportError):
            return True
        return isinstance(e, hrana.Error) and e.code == "CLOSED"


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(
            ".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


dialect = HranaDialect
