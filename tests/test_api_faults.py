"""API calls against a hung sqld (SIGSTOP): they fail with 503 within the configured timeout, no
worker thread stays busy, health/live still answers, and everything works again after SIGCONT."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from api_helpers import api_client, prepare
from autoforge_data.db.engine import Database
from conftest import settings_for
from servers import Sqld

V1 = "/api/v1"
TIMEOUT = 1.0  # AFDB_DB_TIMEOUT for the test


def _timed(client: TestClient, method: str, url: str, **kw: Any) -> tuple[int, float, str]:
    t0 = time.monotonic()
    r = client.request(method, url, **kw)
    return r.status_code, time.monotonic() - t0, r.text


def _idle(client: TestClient, within: float) -> bool:
    """True once no worker thread holds the app's limiter (no blocking call still running)."""
    limiter = client.app.state.limiter  # type: ignore[attr-defined]
    deadline = time.monotonic() + within
    while limiter.borrowed_tokens and time.monotonic() < deadline:
        time.sleep(0.02)
    return limiter.borrowed_tokens == 0


def _calls(owner: str, prompt: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("GET", f"{V1}/users/{owner}", {}),
        ("GET", f"{V1}/prompts/{prompt}", {}),
        ("POST", f"{V1}/prompts", {"json": {"owner_id": owner, "title": "t", "content": "c"}}),
        ("GET", f"{V1}/search", {"params": {"q": "hung server", "mode": "keyword"}}),
        ("PATCH", f"{V1}/prompts/{prompt}", {"json": {"content": "edited"}}),
    ]


def _session(tmp: Path, server: Sqld, timeout: float) -> tuple[Database, Any]:
    settings = settings_for(
        "remote", tmp, server, db_timeout=timeout, connect_timeout=0.5, pool_size=4
    )
    db = Database(settings)
    prepare(db)
    return db, settings


def test_hung_sqld_fails_fast_and_recovers(tmp_path: Path, fresh_sqld: Sqld) -> None:
    """Every kind of call is a 503 within ~timeout while sqld is stopped, also concurrently."""
    db, settings = _session(tmp_path, fresh_sqld, TIMEOUT)
    try:
        with api_client(settings, db) as client:
            owner = client.post(f"{V1}/users", json={"email": "h@ex.io", "username": "h"}).json()
            prompt = client.post(
                f"{V1}/prompts", json={"owner_id": owner["id"], "title": "t", "content": "c"}
            ).json()
            calls = _calls(owner["id"], prompt["id"])
            fresh_sqld.pause()
            try:
                for method, url, kw in calls:
                    status, took, text = _timed(client, method, url, **kw)
                    assert status == 503, (url, text)
                    assert took < 2 * TIMEOUT + 1.0, (url, took)
                    assert fresh_sqld.url not in text
                results: list[tuple[int, float, str]] = []
                threads = [
                    threading.Thread(
                        target=lambda c=call: results.append(_timed(client, c[0], c[1], **c[2]))
                    )
                    for call in calls[:4]
                ]
                t0 = time.monotonic()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(timeout=10 * TIMEOUT)
                assert all(not t.is_alive() for t in threads), "a request hangs"
                assert [r[0] for r in results] == [503] * 4
                assert time.monotonic() - t0 < 3 * TIMEOUT + 1.0
                assert _idle(client, 3 * TIMEOUT), "a worker thread is still stuck"
                live = _timed(client, "GET", "/health/live")
                assert live[0] == 200 and live[1] < 0.5
            finally:
                fresh_sqld.resume()
            for method, url, kw in calls:
                status, _, text = _timed(client, method, url, **kw)
                assert status in (200, 201), (url, text)
    finally:
        db.close()


def test_the_configured_timeout_is_what_bounds_a_call(tmp_path: Path, fresh_sqld: Sqld) -> None:
    """Sensitivity: with a 3 s timeout the same hung call takes about 3 s, not 1 s."""
    db, settings = _session(tmp_path, fresh_sqld, 3.0)
    try:
        with api_client(settings, db) as client:
            owner = client.post(f"{V1}/users", json={"email": "s@ex.io", "username": "s"}).json()
            fresh_sqld.pause()
            try:
                status, took, _ = _timed(client, "GET", f"{V1}/users/{owner['id']}")
            finally:
                fresh_sqld.resume()
            assert status == 503
            assert 2.5 < took < 7.5
    finally:
        db.close()
