"""Our Hrana-over-HTTP DB-API driver and its SQLAlchemy dialect, against a real sqld (no mocks).

Only the HTTP 5xx / non-JSON answers come from a tiny local fake server (our own), because sqld
cannot be made to produce them.
"""

from __future__ import annotations

import base64
import http.server
import itertools
import json
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url

from autoforge_data.db import hrana
from autoforge_data.db.dialect import HranaDialect
from servers import Sqld, free_port, start_sqld

pytestmark = pytest.mark.sqld


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sqld]:
    """One sqld for this module, stopped afterwards."""
    srv = start_sqld(tmp_path_factory.mktemp("hrana"))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def conn(server: Sqld) -> Iterator[hrana.Connection]:
    """A driver connection to the module's sqld."""
    c = hrana.connect(server.url, timeout=5.0)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def table() -> str:
    """A table name no other test uses (the server is shared by the module)."""
    return f"t_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def engine(server: Sqld) -> Iterator[sa.Engine]:
    """A SQLAlchemy engine on the dialect ``sqlite+hrana://``."""
    eng = sa.create_engine(f"sqlite+hrana://127.0.0.1:{server.port}",
                           connect_args={"timeout": 5.0})
    try:
        yield eng
    finally:
        eng.dispose()


def count(server: Sqld, table: str) -> int:
    """Rows in ``table`` as seen by a raw client (committed data only)."""
    return int(str(server.sql(f"SELECT count(*) FROM {table}")[0][0]))


# ------------------------------------------------------------------------------------ DB-API


def test_values_round_trip(conn: hrana.Connection, table: str) -> None:
    """Every supported Python type binds and comes back equal, including 64-bit ints and bytes."""
    cur = conn.cursor()
    cur.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, i INTEGER, f REAL, t TEXT, b BLOB,"
                " n)")
    rows: list[tuple[Any, ...]] = [
        (1, 2**63 - 1, 1.5, "héllo ✓ 'quoted'", b"\x00\x01\xff", None),
        (2, -(2**63), -2.5e-300, "", b"", None),
        (3, 0, 1e300, "x" * 10_000, bytes(range(256)), None),
        (4, 7, 0.1, "a", b"\x00", None),
        (5, 8, 3.0, "b", b"\x00\x01", None),
    ]
    cur.executemany(f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?)", rows)
    cur.execute(f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?)",
                (6, True, 2.0, "c", bytearray(b"ba"), None))
    cur.execute(f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?)",
                (7, False, float("nan"), "d", memoryview(b"mv"), None))
    conn.commit()
    got = conn.execute(f"SELECT id, i, f, t, b, n FROM {table} ORDER BY id").fetchall()
    assert got[:5] == rows
    assert got[5] == (6, 1, 2.0, "c", b"ba", None)
    assert got[6] == (7, 0, None, "d", b"mv", None)  # NaN is stored as NULL, as SQLite does
    assert all(type(r[1]) is int and type(r[4]) is bytes for r in got)
    cur.execute(f"SELECT id AS ident, t FROM {table} WHERE id = ?", (1,))
    assert cur.description is not None
    assert [d[0] for d in cur.description] == ["ident", "t"]
    assert len(cur.description[0]) == 7
    assert cur.fetchone() == (1, "héllo ✓ 'quoted'")
    assert cur.fetchone() is None


def test_named_parameters_and_fetch_api(conn: hrana.Connection) -> None:
    """``:name`` parameters bind; fetchmany/fetchall/iteration follow PEP 249."""
    cur = conn.execute("SELECT :a + 1, :b", {"a": 41, "b": "x"})
    assert cur.fetchall() == [(42, "x")]
    cur = conn.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5)"
                       " SELECT x FROM c")
    cur.arraysize = 2
    assert cur.fetchmany() == [(1,), (2,)]
    assert cur.fetchmany(1) == [(3,)]
    assert list(cur) == [(4,), (5,)]
    assert cur.rowcount == -1
    assert hrana.apilevel == "2.0" and hrana.paramstyle == "qmark" and hrana.threadsafety == 1
    assert issubclass(hrana.IntegrityError, hrana.DatabaseError)
    assert issubclass(hrana.TransportError, hrana.OperationalError)
    assert issubclass(hrana.AuthError, hrana.OperationalError)


def test_errors_map_like_sqlite3(conn: hrana.Connection) -> None:
    """Server errors become sqlite3's exception classes and keep the server's code."""
    with pytest.raises(hrana.OperationalError, match="syntax") as e1:
        conn.execute("SELEC 1")
    assert e1.value.code
    with pytest.raises(hrana.OperationalError, match="no such table") as e2:
        conn.execute("SELECT * FROM no_such_table_here")
    assert e2.value.code
    with pytest.raises(hrana.ProgrammingError) as e3:
        conn.execute("SELECT 1; SELECT 2")
    assert e3.value.code == "SQL_MANY_STATEMENTS"
    with pytest.raises(hrana.ProgrammingError):
        conn.execute("SELECT ?", (1, 2))
    with pytest.raises(hrana.ProgrammingError, match="not supported"):
        conn.execute("SELECT ?", (object(),))
    with pytest.raises(hrana.DataError):
        conn.execute("SELECT ?", (2**63,))
    with pytest.raises(hrana.DataError):
        conn.execute("SELECT ?", (float("inf"),))
    busy = hrana._error_from_server("SQLite error: database is locked", "SQLITE_BUSY")
    assert type(busy) is hrana.OperationalError and "database is locked" in str(busy)
    locked = hrana._error_from_server("SQLite error: locked", "SQLITE_LOCKED_SHAREDCACHE")
    assert "database is locked" in str(locked) and locked.code == "SQLITE_LOCKED_SHAREDCACHE"
    unique = hrana._error_from_server("UNIQUE constraint failed: t.a", "SQLITE_CONSTRAINT_UNIQUE")
    assert isinstance(unique, hrana.IntegrityError)
    assert conn.execute("SELECT 1").fetchone() == (1,)  # the connection is still fine


def test_deferred_unit_of_work_is_one_round_trip(conn: hrana.Connection, server: Sqld,
                                                 table: str) -> None:
    """BEGIN IMMEDIATE + 2 INSERTs + COMMIT cost exactly one HTTP request."""
    conn.execute(f"CREATE TABLE {table} (id TEXT PRIMARY KEY, v INTEGER)")
    before = conn.round_trips
    cur = conn.cursor()
    cur.execute("BEGIN IMMEDIATE")
    cur.execute(f"INSERT INTO {table} VALUES (?, ?)", ("a", 1))
    assert cur.description is None and cur.is_deferred
    cur.execute(f"INSERT INTO {table} VALUES (?, ?)", ("b", 2))
    assert conn.round_trips == before and conn.pending_statements == 2
    assert conn.in_transaction
    conn.commit()
    assert conn.round_trips == before + 1
    assert not conn.in_transaction
    assert count(server, table) == 2
    assert cur.rowcount == 1  # results of queued statements are known after the commit


def test_duplicate_in_queue_fails_commit_and_leaves_nothing(conn: hrana.Connection, server: Sqld,
                                                            table: str) -> None:
    """A duplicate key among queued writes raises IntegrityError from commit; no row is kept."""
    conn.execute(f"CREATE TABLE {table} (id TEXT PRIMARY KEY)")
    conn.execute("BEGIN")
    conn.execute(f"INSERT INTO {table} VALUES ('x')")
    conn.execute(f"INSERT INTO {table} VALUES ('x')")
    before = conn.round_trips
    with pytest.raises(hrana.IntegrityError, match="UNIQUE constraint failed") as err:
        conn.commit()
    assert (err.value.code or "").startswith("SQLITE_CONSTRAINT")
    assert conn.round_trips == before + 1
    assert count(server, table) == 0
    assert not conn.in_transaction
    conn.execute(f"INSERT INTO {table} VALUES ('y')")
    conn.commit()
    assert count(server, table) == 1


def test_failed_flush_aborts_the_transaction(conn: hrana.Connection, server: Sqld,
                                             table: str) -> None:
    """After a queued write fails at a flush, the transaction refuses work and commits nothing."""
    conn.execute(f"CREATE TABLE {table} (id TEXT PRIMARY KEY)")
    conn.execute("BEGIN")
    conn.execute(f"INSERT INTO {table} VALUES ('a')")
    conn.execute(f"INSERT INTO {table} VALUES ('a')")
    conn.execute(f"INSERT INTO {table} VALUES ('b')")
    with pytest.raises(hrana.IntegrityError):
        conn.execute(f"SELECT count(*) FROM {table}")
    with pytest.raises(hrana.OperationalError) as aborted:
        conn.execute(f"INSERT INTO {table} VALUES ('c')")
    assert aborted.value.code == "TX_ABORTED"
    with pytest.raises(hrana.OperationalError, match="rolled back"):
        conn.commit()
    assert count(server, table) == 0
    assert conn.execute("SELECT 1").fetchone() == (1,)


def test_rollback_leaves_nothing(conn: hrana.Connection, server: Sqld, table: str) -> None:
    """Rollback drops queued writes (no request) and undoes flushed ones (one request)."""
    conn.execute(f"CREATE TABLE {table} (id TEXT PRIMARY KEY)")
    conn.execute(f"INSERT INTO {table} VALUES ('q')")
    before = conn.round_trips
    conn.rollback()
    assert conn.round_trips == before  # nothing had reached the server
    conn.execute(f"INSERT INTO {table} VALUES ('f')")
    assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (1,)
    conn.rollback()
    assert conn.round_trips == before + 2
    assert count(server, table) == 0


def test_reads_see_the_transactions_own_queued_writes(conn: hrana.Connection, server: Sqld,
                                                      table: str) -> None:
    """A SELECT inside a transaction flushes the queue first, in the same request."""
    conn.execute(f"CREATE TABLE {table} (id TEXT PRIMARY KEY, v INTEGER)")
    before = conn.round_trips
    conn.execute("BEGIN")
    conn.execute(f"INSERT INTO {table} VALUES ('a', 1)")
    conn.execute(f"INSERT INTO {table} VALUES ('b', 2)")
    assert conn.execute(f"SELECT sum(v) FROM {table}").fetchone() == (3,)
    assert conn.round_trips == before + 1
    assert count(server, table) == 0  # not committed yet: other connections do not see it
    conn.execute(f"UPDATE {table} SET v = v * 10")
    conn.commit()
    assert conn.round_trips == before + 2
    assert server.sql(f"SELECT sum(v) FROM {table}") == [["30"]]


def test_rowcount_and_lastrowid_send_the_queue(conn: hrana.Connection, table: str) -> None:
    """Reading rowcount or lastrowid of a queued write sends it; RETURNING runs at once."""
    conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, v INTEGER)")
    conn.execute("BEGIN")
    cur = conn.execute(f"INSERT INTO {table}(v) VALUES (1), (2), (3)")
    before = conn.round_trips
    assert cur.rowcount == 3 and cur.lastrowid == 3
    assert conn.round_trips == before + 1 and conn.pending_statements == 0
    upd = conn.execute(f"UPDATE {table} SET v = v + 1 WHERE v >= 2")
    assert upd.is_deferred
    assert upd.rowcount == 2
    ret = conn.execute(f"INSERT INTO {table}(v) VALUES (9) RETURNING id, v")
    assert ret.fetchall() == [(4, 9)]
    many = conn.cursor().executemany(f"DELETE FROM {table} WHERE v = ?", [(1,), (3,), (99,)])
    assert many.rowcount == 2
    conn.commit()


def test_foreign_keys_are_enforced(conn: hrana.Connection, server: Sqld, table: str) -> None:
    """Every stream starts with PRAGMA foreign_keys=ON, outside and inside transactions."""
    conn.execute(f"CREATE TABLE {table}_p (id TEXT PRIMARY KEY)")
    conn.execute(f"CREATE TABLE {table}_c (id TEXT PRIMARY KEY,"
                 f" p TEXT NOT NULL REFERENCES {table}_p(id))")
    auto = hrana.connect(server.url, isolation_level=None)
    try:
        with pytest.raises(hrana.IntegrityError, match="FOREIGN KEY"):
            auto.execute(f"INSERT INTO {table}_c VALUES ('c1', 'missing')")
    finally:
        auto.close()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(f"INSERT INTO {table}_p VALUES ('p1')")
    conn.execute(f"INSERT INTO {table}_c VALUES ('c1', 'p1')")
    conn.execute(f"INSERT INTO {table}_c VALUES ('c2', 'missing')")
    with pytest.raises(hrana.IntegrityError, match="FOREIGN KEY"):
        conn.commit()
    assert count(server, f"{table}_p") == 0
    # a connection-scoped PRAGMA the caller sets is replayed on every new stream
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute(f"INSERT INTO {table}_c VALUES ('c3', 'missing')")
    conn.commit()
    assert count(server, f"{table}_c") == 1


def test_autocommit_mode_keeps_no_stream(server: Sqld, table: str) -> None:
    """With isolation_level=None every statement commits at once in its own request."""
    c = hrana.connect(server.url, isolation_level=None)
    try:
        c.execute(f"CREATE TABLE {table} (id TEXT PRIMARY KEY)")
        before = c.round_trips
        cur = c.execute(f"INSERT INTO {table} VALUES ('a')")
        assert not cur.is_deferred and cur.rowcount == 1
        assert c.round_trips == before + 1 and not c.in_transaction
        assert count(server, table) == 1
        c.cursor().executemany(f"INSERT INTO {table} VALUES (?)", [("b",), ("c",)])
        assert c.round_trips == before + 2
        assert count(server, table) == 3
    finally:
        c.close()


def test_replication_index_is_tracked(conn: hrana.Connection, table: str) -> None:
    """last_replication_index is the highest index the server reported; writes raise it."""
    conn.execute(f"CREATE TABLE {table} (id TEXT PRIMARY KEY)")
    first = conn.last_replication_index
    assert isinstance(first, int)
    conn.execute(f"INSERT INTO {table} VALUES ('a')")
    conn.commit()
    assert isinstance(conn.last_replication_index, int)
    assert conn.last_replication_index > first


# ------------------------------------------------------------------------------------ SQLAlchemy


def test_sqlalchemy_core(engine: sa.Engine, server: Sqld, table: str) -> None:
    """create_all, inserts, selects and reflection work through ``sqlite+hrana://``."""
    md = sa.MetaData()
    parent = sa.Table(f"{table}_p", md, sa.Column("id", sa.String(26), primary_key=True),
                      sa.Column("name", sa.String(50), nullable=False, unique=True),
                      sa.Column("data", sa.LargeBinary), sa.Column("score", sa.Float))
    child = sa.Table(f"{table}_c", md,
                     sa.Column("id", sa.Integer, primary_key=True),
                     sa.Column("p", sa.String(26), sa.ForeignKey(parent.c.id), nullable=False))
    md.create_all(engine)
    with engine.begin() as c:
        raw = c.connection.dbapi_connection
        assert isinstance(raw, hrana.Connection)
        before = raw.round_trips
        c.execute(parent.insert(), [{"id": "p1", "name": "one", "data": b"\x00\x01", "score": 0.5},
                                    {"id": "p2", "name": "two", "data": None, "score": None}])
        c.execute(child.insert().values(id=1, p="p1"))
    assert raw.round_trips == before + 1  # BEGIN + both INSERTs + COMMIT in one request
    with engine.connect() as c:
        rows = c.execute(sa.select(parent).order_by(parent.c.id)).all()
        assert [tuple(r) for r in rows] == [("p1", "one", b"\x00\x01", 0.5),
                                           ("p2", "two", None, None)]
        res = c.execute(parent.update().where(parent.c.score.is_(None)).values(score=1.0))
        assert res.rowcount == 1
        c.commit()
        res = c.execute(child.insert().values(p="p2"))
        assert res.inserted_primary_key == (2,)  # lastrowid is fetched on demand
        c.rollback()
    insp = sa.inspect(engine)
    assert {f"{table}_p", f"{table}_c"} <= set(insp.get_table_names())
    assert [col["name"] for col in insp.get_columns(f"{table}_p")] == ["id", "name", "data",
                                                                        "score"]
    assert insp.get_foreign_keys(f"{table}_c")[0]["referred_table"] == f"{table}_p"
    assert engine.dialect.server_version_info is not None
    assert engine.dialect.server_version_info >= (3, 35)
    assert engine.dialect.insert_returning
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as c:
        c.execute(parent.insert().values(id="p3", name="one"))  # duplicate name, raised at commit
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as c:
        c.execute(child.insert().values(id=5, p="nope"))  # foreign key
    assert count(server, f"{table}_c") == 1


def test_sqlalchemy_isolation_levels_and_begin_immediate(server: Sqld, engine: sa.Engine,
                                                        table: str) -> None:
    """AUTOCOMMIT works, and the "BEGIN IMMEDIATE in a begin event" recipe is one request."""
    eng = sa.create_engine(f"sqlite+hrana://127.0.0.1:{server.port}")

    @event.listens_for(eng, "connect")
    def _connect(dbapi_conn: Any, record: Any) -> None:
        dbapi_conn.isolation_level = None

    @event.listens_for(eng, "begin")
    def _begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    try:
        with eng.begin() as c:
            c.exec_driver_sql(f"CREATE TABLE {table} (id TEXT PRIMARY KEY)")
        with eng.begin() as c:
            raw = c.connection.dbapi_connection
            assert isinstance(raw, hrana.Connection)
            before = raw.round_trips
            c.exec_driver_sql(f"INSERT INTO {table} VALUES ('a')")
            c.exec_driver_sql(f"INSERT INTO {table} VALUES ('b')")
        assert raw.round_trips == before + 1
        auto = engine.execution_options(isolation_level="AUTOCOMMIT")  # no BEGIN event here
        with auto.connect() as c:
            assert c.get_isolation_level() == "AUTOCOMMIT"
            c.exec_driver_sql(f"INSERT INTO {table} VALUES ('c')")
            assert count(server, table) == 3  # committed without commit()
    finally:
        eng.dispose()


def test_sqlalchemy_savepoint_failure_keeps_the_outer_transaction(engine: sa.Engine, server: Sqld,
                                                                  table: str) -> None:
    """A duplicate inside begin_nested() raises IntegrityError; the outer transaction commits."""
    with engine.begin() as c:
        c.exec_driver_sql(f"CREATE TABLE {table} (id TEXT PRIMARY KEY)")
    with engine.connect() as c:
        c.exec_driver_sql(f"INSERT INTO {table} VALUES ('a')")
        with pytest.raises(sa.exc.IntegrityError), c.begin_nested():
            c.exec_driver_sql(f"INSERT INTO {table} VALUES ('n')")
            c.exec_driver_sql(f"INSERT INTO {table} VALUES ('a')")
        c.exec_driver_sql(f"INSERT INTO {table} VALUES ('b')")
        c.commit()
    assert server.sql(f"SELECT id FROM {table} ORDER BY id") == [["a"], ["b"]]


def test_lazy_begin_reads_cost_one_request_each(server: Sqld, table: str) -> None:
    """With lazy_begin a read-only unit of work is one request per read and none to end it."""
    eng = sa.create_engine(f"sqlite+hrana://127.0.0.1:{server.port}?lazy_begin=true")
    try:
        with eng.begin() as c:
            c.exec_driver_sql(f"CREATE TABLE {table} (id TEXT PRIMARY KEY)")
        with eng.connect() as c:
            raw = c.connection.dbapi_connection
            assert isinstance(raw, hrana.Connection)
            before = raw.round_trips
            assert c.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar() == 0
            c.commit()
            assert raw.round_trips == before + 1
            c.exec_driver_sql(f"SELECT count(*) FROM {table}")
            c.exec_driver_sql(f"INSERT INTO {table} VALUES ('x')")
            assert c.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar() == 1  # own write
            c.commit()
            assert raw.round_trips == before + 4
    finally:
        eng.dispose()


def test_sqlalchemy_pool_under_concurrent_writers(engine: sa.Engine, server: Sqld,
                                                  table: str) -> None:
    """Four threads committing units of work through one pooled engine lose nothing."""
    with engine.begin() as c:
        c.exec_driver_sql(f"CREATE TABLE {table} (id TEXT PRIMARY KEY, n INTEGER)")
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for i in range(25):
                with engine.begin() as c:
                    c.exec_driver_sql(f"INSERT INTO {table} VALUES (?, ?)", (f"{w}-{i}", i))
                    c.exec_driver_sql(f"UPDATE {table} SET n = n + 1 WHERE id = ?", (f"{w}-{i}",))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert server.sql(f"SELECT count(*), sum(n) FROM {table}") == [["100", str(4 * 325)]]


def test_dialect_urls() -> None:
    """URLs map to base URLs; credentials in the URL are refused; options are typed."""
    d = HranaDialect()
    assert d.create_connect_args(make_url("sqlite+hrana://127.0.0.1:8080")) == (
        ["http://127.0.0.1:8080"], {})
    args, opts = d.create_connect_args(make_url(
        "sqlite+hrana://db-org.turso.io?timeout=3&namespace=dev&lazy_begin=true"))
    assert args == ["https://db-org.turso.io"]
    assert opts == {"timeout": 3.0, "namespace": "dev", "lazy_begin": True}
    assert d.create_connect_args(make_url("sqlite+hrana://localhost:1?secure=true"))[0] == [
        "https://localhost:1"]
    with pytest.raises(sa.exc.ArgumentError, match="connect_args") as err:
        d.create_connect_args(make_url("sqlite+hrana://user:s3cret@127.0.0.1:8080"))
    assert "s3cret" not in str(err.value)
    with pytest.raises(sa.exc.ArgumentError, match="unknown"):
        d.create_connect_args(make_url("sqlite+hrana://127.0.0.1:1?bogus=1"))
    assert d.create_connect_args(make_url("sqlite+hrana://")) == ([], {})  # creator= engines
    with pytest.raises(hrana.InterfaceError, match="no server URL"):
        hrana.connect()


# ------------------------------------------------------------------------------------ faults


def _longest_stall(block: Any) -> tuple[float, float]:
    """Run ``block()`` while a second thread counts; return (its longest pause, block's time)."""
    beats: list[float] = []
    stop = threading.Event()

    def worker() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            if n % 1000 == 0:
                beats.append(time.monotonic())

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    time.sleep(0.05)
    started = time.monotonic()
    try:
        block()
    finally:
        ended = time.monotonic()
        stop.set()
        thread.join(5)
    during = [b for b in beats if started <= b <= ended]
    points = [started, *during, ended]
    return max(b - a for a, b in itertools.pairwise(points)), ended - started


def test_hung_server_times_out_without_freezing_other_threads(server: Sqld) -> None:
    """With sqld stopped (SIGSTOP) a query fails within timeout+0.5 s; other threads run on."""
    c = hrana.connect(server.url, timeout=1.0, connect_timeout=1.0)
    assert c.execute("SELECT 1").fetchone() == (1,)  # a warm keep-alive connection
    caught: list[hrana.Error] = []

    def query() -> None:
        try:
            c.execute("SELECT 2")
        except hrana.Error as exc:
            caught.append(exc)

    server.pause()
    try:
        stall, elapsed = _longest_stall(query)
    finally:
        server.resume()
    assert len(caught) == 1 and isinstance(caught[0], hrana.TransportError)
    assert caught[0].code == "TIMEOUT" and "did not answer within 1 s" in str(caught[0])
    assert 0.9 < elapsed < 1.5
    assert stall < 0.5  # the other thread kept running: the wait released the GIL
    assert c.execute("SELECT 3").fetchone() == (3,)
    c.close()
    # sensitivity arm: the measurement does see a call that holds the GIL for ~0.8 s
    held, _ = _longest_stall(lambda: re.match(r"(a+)+$", "a" * 25 + "b"))
    assert held > 0.4


def test_unreachable_server_fails_fast() -> None:
    """A refused port or an unknown host raise TransportError at once, naming the URL."""
    port = free_port()
    c = hrana.connect(f"http://127.0.0.1:{port}", auth_token="tok-SECRET-123")
    started = time.monotonic()
    with pytest.raises(hrana.TransportError, match="unreachable") as err:
        c.execute("SELECT 1")
    assert time.monotonic() - started < 1.0
    assert f"127.0.0.1:{port}" in str(err.value) and "tok-SECRET-123" not in str(err.value)
    assert err.value.disconnect
    c.close()
    c = hrana.connect("http://no-such-host.invalid:1")
    with pytest.raises(hrana.TransportError, match="unreachable"):
        c.execute("SELECT 1")
    c.close()
    with pytest.raises(hrana.ProgrammingError, match="closed"):
        c.execute("SELECT 1")


def test_server_restart_is_survived(tmp_path: Path) -> None:
    """After sqld is killed and restarted, the same connection works again (no stale socket)."""
    srv = start_sqld(tmp_path, name="restart")
    try:
        c = hrana.connect(srv.url, timeout=2.0)
        assert c.execute("SELECT 1").fetchone() == (1,)
        srv.kill()
        with pytest.raises(hrana.TransportError):
            c.execute("SELECT 1")
        srv.start()
        assert c.execute("SELECT 2").fetchone() == (2,)
        c.close()
    finally:
        srv.stop()


class _FakeHandler(http.server.BaseHTTPRequestHandler):
    """Answers every POST with the status and body the test put on the server."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        status, body = self.server.answer  # type: ignore[attr-defined]  # set by the test
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def fake() -> Iterator[http.server.HTTPServer]:
    """A local HTTP server that answers what the test tells it to."""
    srv = http.server.HTTPServer(("127.0.0.1", 0), _FakeHandler)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def test_http_failures_map_to_clear_errors(fake: http.server.HTTPServer) -> None:
    """HTTP 401 -> AuthError, 5xx and junk -> TransportError, 404 -> OperationalError; the token
    never shows."""
    token = "tok-SECRET-xyz"
    url = f"http://127.0.0.1:{fake.server_address[1]}"
    c = hrana.connect(url, auth_token=token)
    assert token not in repr(c)
    cases: list[tuple[int, bytes, type[hrana.Error], str]] = [
        (401, b'{"error":"Unauthorized: tok-SECRET-xyz is bad"}', hrana.AuthError,
         "rejected the auth token"),
        (403, b"{}", hrana.AuthError, "rejected the auth token"),
        (500, b"boom tok-SECRET-xyz", hrana.TransportError, "HTTP 500"),
        (503, b"", hrana.TransportError, "HTTP 503"),
        (200, b"<html>not json</html>", hrana.TransportError, "not JSON"),
        (200, b'{"results": 5}', hrana.TransportError, "malformed"),
        (404, b'{"error":"Namespace `x` doesn\'t exist"}', hrana.OperationalError, "HTTP 404"),
        (400, b'{"message":"The stream has expired due to inactivity","code":"STREAM_EXPIRED"}',
         hrana.TransportError, "expired"),
    ]
    for status, body, cls, text in cases:
        fake.answer = (status, body)  # type: ignore[attr-defined]  # read by the handler
        with pytest.raises(cls, match=text) as err:
            c.execute("SELECT 1")
        assert type(err.value) is cls
        assert token not in str(err.value) and token not in repr(err.value)
        assert url in str(err.value) or status == 400
    c.close()


def _mint(key: Path, claims: dict[str, Any]) -> str:
    """An EdDSA JWT signed with the openssl CLI (no Python crypto package needed)."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(b'{"alg":"EdDSA","typ":"JWT"}') + "." + b64(json.dumps(claims).encode())
    msg = key.parent / "msg"
    msg.write_bytes(signing_input.encode())
    sig = subprocess.run(["openssl", "pkeyutl", "-sign", "-inkey", str(key), "-rawin", "-in",
                          str(msg)], check=True, capture_output=True).stdout
    return signing_input + "." + b64(sig)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_auth_with_real_jwt_server(tmp_path: Path) -> None:
    """A sqld with JWT auth: our token works, a wrong one is refused, a read-only one reads but
    cannot write; no token is ever shown."""
    key, pub = tmp_path / "k.pem", tmp_path / "pub.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(key)], check=True)
    subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(pub)], check=True)
    token = _mint(key, {"exp": int(time.time()) + 600})
    srv = start_sqld(tmp_path, name="jwt", extra=["--auth-jwt-key-file", str(pub)])
    try:
        good = hrana.connect(srv.url, auth_token=token)
        assert token not in repr(good)
        assert good.execute("SELECT 1").fetchone() == (1,)
        good.close()
        bad_token = token[:-4] + "AAAA"
        bad = hrana.connect(srv.url, auth_token=bad_token)
        with pytest.raises(hrana.AuthError, match="rejected the auth token") as err:
            bad.execute("SELECT 1")
        assert bad_token not in str(err.value) and err.value.code == "HTTP_401"
        bad.close()
        expired = hrana.connect(srv.url, auth_token=_mint(key, {"exp": int(time.time()) - 120}))
        with pytest.raises(hrana.AuthError, match="expired"):  # sqld allows 60 s of leeway
            expired.execute("SELECT 1")
        expired.close()
        anon = hrana.connect(srv.url)
        with pytest.raises(hrana.AuthError, match="requires an auth token"):
            anon.execute("SELECT 1")
        anon.close()
        writer = hrana.connect(srv.url, auth_token=token)
        writer.execute("CREATE TABLE t (id TEXT PRIMARY KEY)")
        writer.close()
        ro_token = _mint(key, {"exp": int(time.time()) + 600, "a": "ro"})
        ro = hrana.connect(srv.url, auth_token=ro_token)
        assert ro.token_read_only  # from the claims: no PRAGMA (sqld refuses them to readers)
        assert ro.execute("SELECT count(*) FROM t").fetchone() == (0,)
        assert ro.round_trips == 1
        ro.execute("BEGIN")
        assert ro.execute("SELECT count(*) FROM t").fetchone() == (0,)
        ro.commit()
        with pytest.raises(hrana.ReadOnlyError, match="readonly") as ro_err:
            ro.execute("INSERT INTO t VALUES ('x')")
            ro.commit()
        assert isinstance(ro_err.value, hrana.AuthError) and ro_token not in str(ro_err.value)
        ro.close()
        learner = hrana.connect(srv.url, auth_token=ro_token)
        learner.token_read_only = False  # as with a read-only token whose claims we cannot read
        assert learner.execute("SELECT count(*) FROM t").fetchone() == (0,)
        assert learner.token_read_only and learner.round_trips == 2  # one refusal, then learnt
        assert learner.execute("SELECT 1").fetchone() == (1,)
        assert learner.round_trips == 3
        learner.close()
        eng = sa.create_engine(f"sqlite+hrana://127.0.0.1:{srv.port}",
                               connect_args={"auth_token": token})
        with eng.connect() as c:
            assert c.exec_driver_sql("SELECT 7").scalar() == 7
        eng.dispose()
    finally:
        srv.stop()


def test_namespaces(tmp_path: Path) -> None:
    """``namespace=`` selects a database on a sqld with --enable-namespaces."""
    srv = start_sqld(tmp_path, name="ns", namespaces=True)
    try:
        for ns in ("alpha", "beta"):
            r = httpx.post(f"{srv.admin_url}/v1/namespaces/{ns}/create", json={}, timeout=10)
            assert r.status_code == 200, r.text
        a = hrana.connect(srv.url, namespace="alpha")
        b = hrana.connect(srv.url, namespace="beta")
        a.execute("CREATE TABLE only_in_alpha (x)")
        assert a.execute("SELECT count(*) FROM only_in_alpha").fetchone() == (0,)
        with pytest.raises(hrana.OperationalError, match="no such table"):
            b.execute("SELECT count(*) FROM only_in_alpha")
        missing = hrana.connect(srv.url, namespace="gamma")
        with pytest.raises(hrana.OperationalError, match="gamma"):
            missing.execute("SELECT 1")
        for c in (a, b, missing):
            c.close()
        eng = sa.create_engine(f"sqlite+hrana://127.0.0.1:{srv.port}?namespace=alpha")
        assert "only_in_alpha" in sa.inspect(eng).get_table_names()
        eng.dispose()
    finally:
        srv.stop()


@pytest.mark.slow
def test_idle_transaction_stream_expires_cleanly(server: Sqld, engine: sa.Engine,
                                                 table: str) -> None:
    """A transaction idle past the stream expiry raises a disconnect TransportError; then all
    works again, for the driver and for SQLAlchemy's pool (which discards the connection)."""
    c = hrana.connect(server.url)
    c.execute(f"CREATE TABLE {table} (id TEXT PRIMARY KEY)")
    c.execute("BEGIN")
    c.execute(f"INSERT INTO {table} VALUES ('a')")
    assert c.execute(f"SELECT count(*) FROM {table}").fetchone() == (1,)  # stream now open
    sa_conn = engine.connect()
    sa_conn.exec_driver_sql(f"SELECT count(*) FROM {table}")  # an open SQLAlchemy transaction
    time.sleep(12)
    c.execute(f"INSERT INTO {table} VALUES ('b')")  # queued: nothing reaches the server yet
    with pytest.raises(hrana.TransportError, match="expired") as err:
        c.execute(f"SELECT count(*) FROM {table}")
    assert err.value.code == "STREAM_EXPIRED" and err.value.disconnect
    with pytest.raises(hrana.TransportError):
        c.commit()  # nothing can be committed from a lost transaction
    assert c.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    c.close()
    with pytest.raises(sa.exc.OperationalError) as sa_err:
        sa_conn.exec_driver_sql(f"SELECT count(*) FROM {table}")
    assert sa_err.value.connection_invalidated
    sa_conn.close()
    with engine.connect() as fresh:
        assert fresh.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar() == 0
