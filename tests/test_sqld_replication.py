"""sqld primary + read replica (``--primary-grpc-url``), embedded replica lag, and a primary
SIGKILLed under write load. Real sqld processes; our Hrana driver as the client.

Recipe tested here (README, Replication): start the primary with ``--grpc-listen-addr``, each
replica with its own ``--db-path`` and ``--primary-grpc-url http://PRIMARY:GRPC``; point readers
at the replica's HTTP URL. A replica serves reads from its own copy and forwards writes to the
primary, so one URL works for both.
"""

from __future__ import annotations

import random
import select
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoforge_data.db import hrana
from autoforge_data.db.engine import Database
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.ops.replication import measure_sqld_lag, replication_status
from conftest import settings_for
from servers import Sqld, primary_and_replica, start_sqld
from sqld_writer import ROWS

WRITER = Path(__file__).with_name("sqld_writer.py")
KILLS = 4
SEED = 20261127

pytestmark = pytest.mark.sqld


def conn_to(server: Sqld) -> hrana.Connection:
    """A Hrana connection with short timeouts."""
    return hrana.connect(server.url, timeout=5.0, connect_timeout=1.0)


def wait_for(server: Sqld, sql: str, params: tuple[object, ...], timeout: float = 10.0) -> float:
    """Poll ``server`` until ``sql`` returns a row; the seconds it took."""
    conn = conn_to(server)
    start = time.perf_counter()
    try:
        while conn.execute(sql, params).fetchone() is None:
            assert time.perf_counter() - start < timeout, f"not visible within {timeout}s"
            time.sleep(0.005)
    finally:
        conn.close()
    return time.perf_counter() - start


@pytest.fixture(scope="module")
def table(sqld_pair: tuple[Sqld, Sqld]) -> str:
    """A scratch table of this module on the pair's primary."""
    primary, _replica = sqld_pair
    name = f"repl_{uuid.uuid4().hex[:8]}"
    conn = conn_to(primary)
    conn.execute(f"CREATE TABLE {name} (id TEXT PRIMARY KEY, origin TEXT)")
    conn.commit()
    conn.close()
    return name


def test_replica_serves_rows_written_on_the_primary(
    sqld_pair: tuple[Sqld, Sqld], table: str
) -> None:
    """A row inserted on the primary is read from the replica (its own copy) soon after."""
    primary, replica = sqld_pair
    key = uuid.uuid4().hex
    conn = conn_to(primary)
    conn.execute(f"INSERT INTO {table} (id, origin) VALUES (?, 'primary')", (key,))
    conn.commit()
    conn.close()
    waited = wait_for(replica, f"SELECT 1 FROM {table} WHERE id = ?", (key,))
    assert waited < 10
    # the replica's copy is its own: its data folder holds a database of its own
    assert any((replica.workdir / "data").rglob("data"))


def test_write_sent_to_the_replica_is_forwarded_to_the_primary(
    sqld_pair: tuple[Sqld, Sqld], table: str
) -> None:
    """INSERT through the replica's URL commits on the primary (read back there at once)."""
    primary, replica = sqld_pair
    key = uuid.uuid4().hex
    conn = conn_to(replica)
    conn.execute(f"INSERT INTO {table} (id, origin) VALUES (?, 'replica')", (key,))
    conn.commit()
    conn.close()
    check = conn_to(primary)
    row = check.execute(f"SELECT origin FROM {table} WHERE id = ?", (key,)).fetchone()
    check.close()
    assert row == ("replica",)


def test_replica_lag_is_measured(sqld_pair: tuple[Sqld, Sqld]) -> None:
    """measure_sqld_lag: 30 writes on the primary, each polled on the replica; p50/p99 printed."""
    primary, replica = sqld_pair
    stats = measure_sqld_lag(
        lambda: conn_to(primary), lambda: conn_to(replica), table="repl_lag_probe", samples=30
    )
    print(f"sqld replica lag: p50 {stats.p50 * 1000:.1f} ms, p99 {stats.p99 * 1000:.1f} ms")
    assert len(stats.samples) == 30
    assert stats.p99 < 5.0  # generous: a replica that stopped following would time out at 10 s


def test_embedded_replica_lag_is_exported(sqld: Sqld, tmp_path: Path) -> None:
    """replication_status(settings, db) reports the embedded replica's lag as plain numbers."""
    settings = settings_for("replica", tmp_path, sqld, sync_interval=0.2)
    closed = replication_status(settings)["embedded_replica"]
    assert closed == {"open": False, "lag_seconds": None, "sync_failures": None,
                      "sync_interval": 0.2}
    with Database(settings) as db:
        db.replica.sync()
        info = replication_status(settings, db)["embedded_replica"]
        assert info["open"] and info["last_sync_ok"] and 0 <= info["lag_seconds"] < 5
        assert isinstance(info["sync_failures"], int)
    assert replication_status(settings_for("remote", tmp_path, sqld))["litestream"] is None


class Load:
    """The writer child and its acknowledgement log."""

    def __init__(self, url: str, mode: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WRITER), url, mode],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        assert ready and self.proc.stdout.readline() == b"ready\n", self.stderr()

    def stderr(self) -> str:
        """The child's error output (after killing it)."""
        self.proc.kill()
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")

    def stop(self) -> list[int]:
        """Kill the writer and return every acknowledged transaction id."""
        self.proc.kill()
        out, _ = self.proc.communicate(timeout=30)
        return [int(x) for x in out.decode().split()]


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Sqld, Sqld]]:
    """A primary and a replica of this test's own (the test kills the primary)."""
    with primary_and_replica(tmp_path) as both:
        yield both


def kill_under_load(primary: Sqld, mode: str, kills: int) -> tuple[list[int], dict[int, int]]:
    """Write through Hrana, SIGKILL + restart the primary ``kills`` times; acks and row counts."""
    rng = random.Random(SEED)
    load = Load(primary.url, mode)
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(0.3, 1.0))
            primary.kill()
            time.sleep(rng.uniform(0.05, 0.3))
            primary.start()  # same data folder and ports
    finally:
        time.sleep(0.3)  # a few commits after the last restart
        acked = load.stop()
    conn = conn_to(primary)
    counts = dict(conn.execute("SELECT txn, count(*) FROM load_log GROUP BY txn").fetchall())
    conn.close()
    return acked, {int(k): int(v) for k, v in counts.items()}


def test_primary_sigkilled_under_write_load_loses_no_acknowledged_write(
    pair: tuple[Sqld, Sqld],
) -> None:
    """4 SIGKILLs of the primary under load: every acked txn whole, none partial, sqld serves,
    and the replica follows the restarted primary."""
    primary, replica = pair
    acked, counts = kill_under_load(primary, "ack", KILLS)
    assert len(acked) > 20, "the writer barely wrote"
    missing = [t for t in acked if counts.get(t) != ROWS]
    partial = {t: n for t, n in counts.items() if n != ROWS}
    assert not missing, f"acknowledged transactions lost: {missing[:10]}"
    assert not partial, f"partial transactions: {partial}"
    conn = conn_to(primary)
    conn.execute("INSERT INTO load_log (txn, seq) VALUES (?, 0)", (10**9,))
    conn.commit()
    conn.close()
    wait_for(replica, "SELECT 1 FROM load_log WHERE txn = ?", (10**9,), timeout=20)
    print(f"{KILLS} kills: {len(acked)} acknowledged txns, {len(counts)} in the database")


def test_kill_check_catches_acknowledging_before_commit(tmp_path: Path) -> None:
    """Sensitivity: acknowledging before the commit request is caught by the same check."""
    primary = start_sqld(tmp_path, name="solo")
    try:
        attempts = 0
        caught = False
        while not caught and attempts < 5:
            attempts += 1
            acked, counts = kill_under_load(primary, "ack-early", 2)
            caught = any(counts.get(t) != ROWS for t in acked)
        assert caught, "acking before COMMIT never lost an acknowledged txn in 5 attempts"
        print(f"ack-early caught on attempt {attempts}")
    finally:
        primary.stop()


def test_use_case_writes_through_the_replica_url(
    sqld_pair: tuple[Sqld, Sqld], tmp_path: Path
) -> None:
    """Our engine in remote mode pointed at the replica: writes are forwarded, reads served."""
    primary, replica = sqld_pair
    with Database(settings_for("remote", tmp_path, replica)) as db:
        key = uuid.uuid4().hex
        with UnitOfWork(db, write=True) as uow:
            uow.execute("CREATE TABLE IF NOT EXISTS repl_uow (id TEXT PRIMARY KEY)")
            uow.execute("INSERT INTO repl_uow (id) VALUES (?)", (key,))
            uow.commit()
    wait_for(primary, "SELECT 1 FROM repl_uow WHERE id = ?", (key,), timeout=1)
