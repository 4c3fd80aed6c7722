"""The test harness itself: sqld primary/replica pair, sqld namespaces, redis-server fixtures."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import redis

from autoforge_data.db import hrana
from servers import Redis, Sqld, start_sqld


def test_sqld_replica_follows_primary(sqld_pair: tuple[Sqld, Sqld]) -> None:
    """A write on the primary shows on the sqld replica; a write to the replica is forwarded."""
    primary, replica = sqld_pair
    primary.sql("CREATE TABLE IF NOT EXISTS pair_t (v TEXT)")
    primary.sql("INSERT INTO pair_t VALUES ('from-primary')")
    conn = hrana.connect(replica.url, timeout=5)
    try:
        deadline = time.monotonic() + 5
        while True:
            rows = conn.execute("SELECT v FROM pair_t WHERE v = 'from-primary'").fetchall()
            if rows or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert rows == [("from-primary",)]
        conn.execute("INSERT INTO pair_t VALUES ('via-replica')")
        conn.commit()
    finally:
        conn.close()
    assert primary.sql("SELECT v FROM pair_t WHERE v = 'via-replica'") == [["via-replica"]]


def test_sqld_namespaces(tmp_path: Path) -> None:
    """With namespaces, the admin API creates databases and each one is isolated."""
    server = start_sqld(tmp_path, namespaces=True)
    try:
        for ns in ("alpha", "beta"):
            r = httpx.post(f"{server.admin_url}/v1/namespaces/{ns}/create", json={}, timeout=10)
            assert r.status_code == 200, r.text
        a = hrana.connect(server.url, namespace="alpha")
        b = hrana.connect(server.url, namespace="beta")
        try:
            a.execute("CREATE TABLE t (v)")
            a.execute("INSERT INTO t VALUES (1)")
            assert a.execute("SELECT count(*) FROM t").fetchall() == [(1,)]
            tables = b.execute("SELECT name FROM sqlite_master WHERE name = 't'").fetchall()
            assert tables == []
        finally:
            a.close()
            b.close()
    finally:
        server.stop()


def test_redis_fixture_is_private_and_stoppable(redis_server: Redis) -> None:
    """The redis fixture runs on its own port (never 6379) and can be killed and restarted."""
    assert redis_server.port != 6379
    client = redis.Redis(port=redis_server.port, socket_timeout=1)
    client.set("k", "v")
    assert client.get("k") == b"v"
    redis_server.kill()
    assert not redis_server.alive
    redis_server.start()
    assert client.ping()
