"""The HTTP app skeleton: liveness, readiness against the real database, JSON errors."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from autoforge_data.api.app import create_app
from autoforge_data.db import migrate
from autoforge_data.db.engine import Database
from conftest import settings_for
from servers import Sqld


def test_live_and_ready(tmp_path: Path) -> None:
    """/health/live is 200 always; /health/ready is 200 once the schema is at head."""
    settings = settings_for("embedded", tmp_path)
    db = Database(settings)
    try:
        app = create_app(settings, db=db)
        with TestClient(app) as client:
            assert client.get("/health/live").json() == {"status": "ok"}
            assert client.get("/").json()["links"]["ready"] == "/health/ready"
            r = client.get("/health/ready")
            assert r.status_code == 503
            assert r.json()["checks"]["database"]["reason"] == "schema_behind"
            migrate.upgrade(db)
            r = client.get("/health/ready")
            assert r.status_code == 200
            body = r.json()
            assert body["checks"]["database"]["migration"] == migrate.code_head()
            assert str(tmp_path) not in r.text
    finally:
        db.close()


def _wait_ready(client: TestClient, timeout: float = 30.0) -> None:
    """Wait until /health/ready answers 200."""
    import time

    deadline = time.monotonic() + timeout
    while client.get("/health/ready").status_code != 200:
        assert time.monotonic() < deadline, "never ready"
        time.sleep(0.1)


def test_ready_is_503_fast_when_the_server_is_gone(tmp_path: Path, fresh_sqld: Sqld) -> None:
    """With sqld dead, /health/ready answers 503 within about a second; live stays 200."""
    import time

    settings = settings_for("remote", tmp_path, fresh_sqld, connect_timeout=0.5, db_timeout=0.8)
    db = Database(settings)
    try:
        migrate.upgrade(db)
        with TestClient(create_app(settings, db=db)) as client:
            _wait_ready(client)  # the first probes may time out while the model loads
            fresh_sqld.kill()
            t0 = time.monotonic()
            r = client.get("/health/ready")
            assert r.status_code == 503
            assert time.monotonic() - t0 < 1.0
            assert fresh_sqld.url not in r.text
            assert client.get("/health/live").status_code == 200
    finally:
        db.close()
