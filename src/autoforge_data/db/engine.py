"""Connections and engines for the three modes: embedded file, remote server, embedded replica.

Drivers, chosen by measurements on our machines (see DESIGN.md and the README):

* **embedded** file: stdlib ``sqlite3`` (faster than libsql-experimental, releases the GIL during a
  query, raises real DB-API exceptions); the libSQL driver only when libSQL is needed (an
  encryption key, a libSQL vector index in the file, or ``AFDB_DB_DRIVER=libsql``). A file that
  holds a libSQL vector index is never opened with stdlib ``sqlite3``.
* **remote** (sqld / Turso): our Hrana-over-HTTP driver (:mod:`autoforge_data.db.hrana`): bounded
  timeouts, no GIL held while waiting, no idle stream left to expire, one round trip per unit of
  work.
* **replica**: reads from a local embedded replica (libsql-experimental), writes to the primary
  through the Hrana driver, then a bounded sync for read-your-writes
  (:mod:`autoforge_data.db.replica`).

Hot paths take raw DB-API connections from :class:`ConnectionPool` (a checkout costs well under a
microsecond, against ~25 µs for a SQLAlchemy ``Connection``); Alembic and admin code use the
SQLAlchemy engine from :func:`make_engine`, built on the same connection factory.
"""

from __future__ import annotations

import collections
import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import QueuePool

from autoforge_data.errors import Busy, ConfigError
from autoforge_data.fsutil import ensure_private_dir, touch_private
from autoforge_data.settings import Mode, Settings

DBAPIConnection = Any
Factory = Callable[[], DBAPIConnection]

_open_files: dict[str, str] = {}  # realpath -> driver name, for this process
_open_lock = threading.Lock()


def driver_for(settings: Settings) -> str:
    """The driver for the database: 'sqlite3', 'libsql' or 'hrana'."""
    target = settings.target
    if target.mode is Mode.REMOTE:
        return "hrana"
    if target.mode is Mode.REPLICA:
        return "libsql"
    if settings.encryption_key is not None:
        return "libsql"
    return settings.db_driver if settings.db_driver != "auto" else "sqlite3"


def has_libsql_vector_index(path: Path) -> bool:
    """True if the file holds a libSQL vector index (then stdlib sqlite3 must not open it).

    Reads only the schema, read-only, before any other connection to the file exists in this
    process (so no lock of another library can be disturbed).
    """
    if not path.exists() or path.stat().st_size == 0:
        return False
    uri = f"file:{path.as_posix()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        row = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'libsql_vector_meta_shadow' "
            "OR sql LIKE '%libsql_vector_idx%' LIMIT 1"
        ).fetchone()
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorcode", None) == 26:  # SQLITE_NOTADB, e.g. encrypted
            return False  # opening it with the right driver and key reports what it is
        raise Busy(
            f"cannot read the schema of {path}: {type(exc).__name__}",
            hint="another process may hold an exclusive lock; retry",
        ) from None
    finally:
        conn.close()
    return row is not None


def _claim_file(path: Path, driver: str) -> None:
    """Refuse to open one file with two SQLite libraries in one process."""
    key = os.path.realpath(path)
    with _open_lock:
        other = _open_files.get(key)
        if other is not None and other != driver:
            raise ConfigError(
                f"{path} is already open with the {other} driver in this process",
                hint="two SQLite libraries on one file corrupt each other's locks; use one driver",
            )
        _open_files[key] = driver


def _release_file(path: Path) -> None:
    with _open_lock:
        _open_files.pop(os.path.realpath(path), None)


def _apply_pragmas(conn: DBAPIConnection, settings: Settings) -> None:
    cur = conn.cursor()
    for pragma in (
        f"PRAGMA busy_timeout = {int(settings.busy_timeout_ms)}",
        "PRAGMA journal_mode = WAL",
        f"PRAGMA synchronous = {settings.synchronous_level}",
        "PRAGMA foreign_keys = ON",
        "PRAGMA temp_store = MEMORY",
        # Litestream must own checkpoints: an app checkpoint that restarts the WAL while
        # Litestream is down made 15-30 of 40 drill restores corrupt (litestream#1164)
        *(("PRAGMA wal_autocheckpoint = 0",) if settings.replicate_url else ()),
    ):
        cur.execute(pragma)
        cur.fetchall()
    cur.close()


def sqlite3_factory(settings: Settings, path: Path) -> Factory:
    """Connections to an embedded file through stdlib sqlite3, in autocommit mode."""

    def connect() -> DBAPIConnection:
        conn = sqlite3.connect(
            str(path),
            timeout=settings.busy_timeout_ms / 1000,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=256,
        )
        _apply_pragmas(conn, settings)
        return conn

    return connect


def libsql_factory(settings: Settings, path: Path) -> Factory:
    """Connections to an embedded file through libsql-experimental (encryption, DiskANN)."""
    import libsql_experimental

    key = settings.encryption_key

    def connect() -> DBAPIConnection:
        kwargs: dict[str, Any] = {"isolation_level": None}
        if key is not None:
            kwargs["encryption_key"] = key.get_secret_value()
        conn = libsql_experimental.connect(str(path), **kwargs)
        _apply_pragmas(conn, settings)
        return conn

    return connect


def hrana_factory(settings: Settings, url: str) -> Factory:
    """Connections to a remote libSQL server through our Hrana-over-HTTP driver."""
    from autoforge_data.db import hrana

    token = settings.auth_token.get_secret_value() if settings.auth_token else None

    def connect() -> DBAPIConnection:
        return hrana.connect(
            url,
            auth_token=token,
            timeout=settings.db_timeout,
            connect_timeout=settings.connect_timeout,
        )

    return connect


def prepare_file(settings: Settings, path: Path, driver: str) -> None:
    """Create the data folder (0700) and the database file (0600); refuse a wrong driver."""
    ensure_private_dir(path.parent)
    if driver == "sqlite3" and has_libsql_vector_index(path):
        raise ConfigError(
            f"{path} holds a libSQL vector index, which stdlib sqlite3 must not open",
            hint="set AFDB_DB_DRIVER=libsql",
        )
    touch_private(path)


class ConnectionPool:
    """A small LIFO pool of raw DB-API connections with a bounded size and checkout wait."""

    def __init__(self, factory: Factory, size: int, wait: float) -> None:
        self._factory = factory
        self._idle: collections.deque[DBAPIConnection] = collections.deque()
        self._slots = threading.BoundedSemaphore(size)
        self._wait = wait
        self._closed = False

    def checkout(self) -> DBAPIConnection:
        """Take a connection (waiting at most the configured time for a free slot)."""
        if not self._slots.acquire(timeout=self._wait):
            raise Busy(
                "no database connection free within the wait time",
                hint="raise AFDB_POOL_SIZE or lower the request concurrency",
            )
        try:
            return self._idle.pop()
        except IndexError:
            pass
        try:
            return self._factory()
        except BaseException:
            self._slots.release()
            raise

    def checkin(self, conn: DBAPIConnection, *, discard: bool = False) -> None:
        """Give a connection back; ``discard`` closes it (broken, or state unknown)."""
        try:
            if discard or self._closed:
                with contextlib.suppress(Exception):
                    conn.close()
            else:
                self._idle.append(conn)
        finally:
            self._slots.release()

    @contextlib.contextmanager
    def connection(self) -> Iterator[DBAPIConnection]:
        """Check a connection out for the block; it is discarded if the block raises."""
        conn = self.checkout()
        ok = False
        try:
            yield conn
            ok = True
        finally:
            self.checkin(conn, discard=not ok)

    def close(self) -> None:
        """Close every idle connection; connections in use close when returned."""
        self._closed = True
        while self._idle:
            with contextlib.suppress(Exception):
                self._idle.pop().close()


_DIALECTS = {"sqlite3": "sqlite+pysqlite://", "libsql": "sqlite+libsql://", "hrana": "sqlite+hrana://"}


def make_engine(
    settings: Settings, *, factory: Factory | None = None, driver: str | None = None
) -> Engine:
    """A SQLAlchemy engine for the configured database (Alembic, admin and ad-hoc queries)."""
    driver = driver or driver_for(settings)
    if factory is None:
        factory = _factory(settings, driver)
    engine = create_engine(
        _DIALECTS[driver],
        creator=factory,
        poolclass=QueuePool,
        pool_size=settings.pool_size,
        max_overflow=0,
        pool_timeout=settings.db_timeout,
    )
    _install_begin_handling(engine)
    _install_error_mapping(engine)
    return engine


def _install_error_mapping(engine: Engine) -> None:
    """Engine users get our error types too (a bad vector, a duplicate key, a lost server)."""
    from autoforge_data.db.errormap import translate

    @event.listens_for(engine, "handle_error")
    def _map(ctx: Any) -> None:
        mapped = translate(ctx.original_exception)
        if mapped is not None and not ctx.is_disconnect:
            raise mapped from ctx.original_exception


def _install_begin_handling(engine: Engine) -> None:
    """Let SQLAlchemy emit BEGIN itself (the drivers run in autocommit mode)."""

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("afdb_begin", "")
        conn.exec_driver_sql(f"BEGIN {mode}".strip() if mode in ("", "IMMEDIATE") else "BEGIN")


def _factory(settings: Settings, driver: str) -> Factory:
    target = settings.target
    if driver == "hrana":
        assert target.url is not None
        return hrana_factory(settings, target.url)
    assert target.path is not None
    if driver == "libsql":
        return libsql_factory(settings, target.path)
    return sqlite3_factory(settings, target.path)


class Database:
    """The open database: a connection pool for the hot paths and an engine for everything else.

    In replica mode ``reads`` and ``writes`` are different pools (local replica, primary); in the
    other modes they are the same.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.target = settings.target
        self.driver = driver_for(settings)
        self.replica: Any = None
        self.writes: Any
        self.reads: Any
        if self.target.mode is Mode.REPLICA:
            from autoforge_data.db.replica import Replica

            self.replica = Replica(settings)
            self.writes = ConnectionPool(
                self.replica.primary_factory, settings.pool_size, settings.db_timeout
            )
            self.reads = self.replica.read_pool()
            self.engine = make_engine(
                settings, factory=self.replica.primary_factory, driver="hrana"
            )
            return
        if self.target.path is not None:
            prepare_file(settings, self.target.path, self.driver)
            _claim_file(self.target.path, self.driver)
        factory = _factory(settings, self.driver)
        self.writes = self.reads = ConnectionPool(factory, settings.pool_size, settings.db_timeout)
        self.engine = make_engine(settings, factory=factory)

    @property
    def mode(self) -> Mode:
        """embedded, remote or replica."""
        return self.target.mode

    def close(self) -> None:
        """Close pools, the engine and any background sync."""
        if self.replica is not None:
            self.replica.close()
        self.writes.close()
        self.reads.close()
        self.engine.dispose()
        if self.target.path is not None and self.target.mode is Mode.EMBEDDED:
            _release_file(self.target.path)

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Database({self.target.describe()}, driver={self.driver})"
