"""Health endpoints over real databases and real faults: a dead, a hung and a slow dependency."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from fastapi.testclient import TestClient

from autoforge_data.api import health
from autoforge_data.db.engine import Database
from conftest import settings_for
from obs_helpers import app_client, value
from servers import Redis, Sqld

CANARY = "canary-token-4f9a1c"  # a secret that must never reach a body


def _timed(client: TestClient, path: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    status = client.get(path).status_code
    return time.perf_counter() - t0, status


def test_ready_reports_every_component(tmp_path: Path) -> None:
    """Embedded: database, FTS, vector index and cache are ok, each with its numbers."""
    settings = settings_for("embedded", tmp_path)
    with Database(settings) as db, app_client(settings, db) as client:
        r = client.get("/health/ready")
        assert r.status_code == 200, r.text
        checks = r.json()["checks"]
        assert checks["database"]["status"] == "ok"
        assert checks["database"]["migration"] == health._code_head()
        assert checks["fts"]["status"] == "ok"
        assert checks["vector"] == {**checks["vector"], "status": "ok", "backend": "memory"}
        assert checks["vector"]["journal_lag"] >= 0
        assert checks["cache"] == {"status": "ok", "backend": "memory"}
        assert "replica" not in checks  # only in replica mode
        db_body = client.get("/health/database").json()
        assert set(db_body["checks"]) == {"database", "fts", "vector"}
        assert str(tmp_path) not in r.text + str(db_body)


def test_database_down_is_503_within_a_second_live_stays_200(
    tmp_path: Path, fresh_sqld: Sqld
) -> None:
    """SIGKILLed sqld: ready and database are 503 fast; live 200; no URL or token in bodies."""
    settings = settings_for(
        "remote", tmp_path, fresh_sqld, auth_token=CANARY, connect_timeout=0.5, db_timeout=0.8
    )
    with Database(settings) as db, app_client(settings, db) as client:
        assert client.get("/health/ready").status_code == 200
        fresh_sqld.kill()
        elapsed, status = _timed(client, "/health/ready")
        assert status == 503 and elapsed < 1.0
        body = client.get("/health/database")
        assert body.status_code == 503
        assert body.json()["checks"]["database"]["status"] == "fail"
        assert client.get("/health/live").status_code == 200
        text = client.get("/health/ready").text + body.text + client.get("/metrics").text
        assert fresh_sqld.url not in text and CANARY not in text and str(tmp_path) not in text


def test_hung_sqld_live_under_50ms_ready_503_within_a_second(
    tmp_path: Path, fresh_sqld: Sqld
) -> None:
    """SIGSTOPped sqld: /health/live stays fast; ready gives up after its timeout (503 < 1 s).

    The readiness answer (reason "timeout") is the sensitivity arm: the fault really stalls a
    round trip, and live does not care."""
    settings = settings_for("remote", tmp_path, fresh_sqld, db_timeout=3.0)
    with Database(settings) as db, app_client(settings, db) as client:
        assert client.get("/health/ready").status_code == 200
        fresh_sqld.pause()
        try:
            elapsed, status = _timed(client, "/health/ready")
            assert status == 503 and elapsed < 1.0
            checks = client.get("/health/ready").json()["checks"]
            assert checks["database"] == {"status": "fail", "reason": "timeout"}
            lives = [_timed(client, "/health/live") for _ in range(15)]
            assert all(s == 200 for _, s in lives)
            assert statistics.median(t for t, _ in lives) < 0.05, lives
        finally:
            fresh_sqld.resume()
        deadline = time.monotonic() + 10
        while client.get("/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "ready did not recover after SIGCONT"
            time.sleep(0.2)


def test_redis_down_is_200_degraded(tmp_path: Path, redis_server: Redis) -> None:
    """With Redis killed the app stays ready (200) and says the cache is degraded."""
    settings = settings_for("embedded", tmp_path, redis_url=redis_server.url)
    with Database(settings) as db, app_client(settings, db) as client:
        first = client.get("/health/ready").json()
        assert first["checks"]["cache"]["status"] == "ok"  # sensitivity: it was up
        assert first["checks"]["cache"]["backend"] == "redis"
        redis_server.kill()
        r = client.get("/health/ready")
        assert r.status_code == 200
        assert r.json()["status"] == "degraded"
        assert r.json()["checks"]["cache"]["status"] == "degraded"
        assert r.json()["checks"]["cache"]["reason"] == "unreachable"
        assert str(redis_server.port) not in r.text
        metrics = client.get("/metrics").text
        assert value(metrics, "afdb_ready") == 1.0
        assert value(metrics, "afdb_health_status", component="cache") == 0.5


def test_replica_reports_lag(tmp_path: Path, sqld: Sqld) -> None:
    """Replica mode: a replica component with the seconds since the last sync."""
    settings = settings_for("replica", tmp_path, sqld, sync_interval=0.5)
    with Database(settings) as db, app_client(settings, db) as client:
        checks = client.get("/health/ready").json()["checks"]
        assert checks["replica"]["status"] == "ok"
        assert 0 <= checks["replica"]["lag_s"] < health.REPLICA_LAG_DEGRADED
        lag = value(client.get("/metrics").text, "afdb_replica_lag_seconds")
        assert lag is not None and lag < health.REPLICA_LAG_DEGRADED


def test_replica_keeps_serving_when_the_primary_dies(tmp_path: Path, fresh_sqld: Sqld) -> None:
    """Replica mode, primary SIGKILLed: still ready (200, reads from the local file), the
    replica component says its syncs fail; before the kill it was ok (sensitivity)."""
    settings = settings_for("replica", tmp_path, fresh_sqld, sync_interval=0.3, connect_timeout=0.3)
    with Database(settings) as db, app_client(settings, db) as client:
        assert client.get("/health/ready").json()["checks"]["replica"]["status"] == "ok"
        fresh_sqld.kill()
        deadline = time.monotonic() + 10
        while True:
            r = client.get("/health/ready")
            replica = r.json()["checks"]["replica"]
            if replica["status"] != "ok" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.status_code == 200, r.text
        assert r.json()["checks"]["database"]["status"] == "ok"
        assert replica == {**replica, "status": "degraded", "reason": "sync_failing"}
        assert fresh_sqld.url not in r.text


def test_backup_component_rules() -> None:
    """Backup age against the schedule, a failed last backup, and no backup where one is due."""
    fresh = {"age_seconds": 60.0, "last_result": "ok", "last_error": "/secret/path boom"}
    ok = health.backup_component(fresh, 3600, expected=True)
    assert ok == {"age_s": 60.0, "schedule_s": 3600, "last_ok": True, "status": "ok"}
    late = health.backup_component({**fresh, "age_seconds": 6000.0}, 3600, expected=True)
    assert late["status"] == "degraded" and late["reason"] == "overdue"
    failed = health.backup_component({**fresh, "last_result": "error"}, 3600, expected=True)
    assert failed["reason"] == "last_backup_failed" and failed["last_ok"] is False
    assert "/secret/path" not in str(failed)  # the error text stays out of the body
    none = {"age_seconds": None, "last_result": None}
    assert health.backup_component(none, None, expected=True)["status"] == "degraded"
    assert health.backup_component(none, None, expected=False)["status"] == "ok"


def test_schema_behind_is_503_until_migrated(tmp_path: Path) -> None:
    """A database behind the code's migrations is not ready (the body says why); once
    migrated it is; live answers throughout, and / still gives JSON to non-browsers."""
    from autoforge_data.api.app import create_app
    from autoforge_data.db import migrate

    settings = settings_for("embedded", tmp_path)
    with Database(settings) as db, TestClient(create_app(settings, db=db)) as client:
        assert client.get("/health/live").json() == {"status": "ok"}
        assert client.get("/").json()["links"]["ready"] == "/health/ready"
        r = client.get("/health/ready")
        assert r.status_code == 503
        assert r.json()["checks"]["database"]["reason"] == "schema_behind"
        migrate.upgrade(db)
        r = client.get("/health/ready")
        assert r.status_code == 200, r.text
        assert r.json()["checks"]["database"]["migration"] == migrate.code_head()
        assert str(tmp_path) not in r.text
