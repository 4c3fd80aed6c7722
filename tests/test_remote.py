"""Remote mode against a real sqld: a hung server never freezes the process; one round trip."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from autoforge_data.db import migrate
from autoforge_data.db.engine import Database
from autoforge_data.errors import AuthError, Unavailable
from autoforge_data.services import prompts as svc
from conftest import Ticker, mint_token, settings_for, unique_email
from servers import Sqld


def test_hung_server_fails_within_timeout_and_threads_run(tmp_path: Path, fresh_sqld: Sqld) -> None:
    """With sqld stopped (SIGSTOP), a call fails within the timeout and other threads run."""
    settings = settings_for("remote", tmp_path, fresh_sqld, db_timeout=1.0, connect_timeout=0.5)
    with Database(settings) as db:
        migrate.upgrade(db)
        user = svc.create_user(db, unique_email(), "h")
        ticker = Ticker().start()
        fresh_sqld.pause()
        try:
            before = ticker.ticks
            t0 = time.monotonic()
            with pytest.raises(Unavailable):
                svc.get_user(db, user.id)
            elapsed = time.monotonic() - t0
            assert elapsed < 1.0 + 0.7
            assert ticker.ticks - before > 100  # the other thread kept running meanwhile
        finally:
            fresh_sqld.resume()
            ticker.stop()
        assert svc.get_user(db, user.id) == user  # and it recovers


def test_create_prompt_is_one_round_trip(tmp_path: Path, sqld: Sqld) -> None:
    """The create-prompt use case sends BEGIN, two INSERTs and COMMIT in one HTTP request."""
    with Database(settings_for("remote", tmp_path, sqld, pool_size=1)) as db:
        migrate.upgrade(db)
        user = svc.create_user(db, unique_email(), "rt")
        conn = db.writes.checkout()
        before = conn.round_trips
        db.writes.checkin(conn)
        for i in range(5):
            svc.create_prompt(db, user.id, f"T{i}", "C")
        conn = db.writes.checkout()
        assert conn.round_trips - before == 5
        db.writes.checkin(conn)


def test_idle_connection_survives_stream_expiry(tmp_path: Path, sqld: Sqld) -> None:
    """A pooled connection idle longer than sqld's stream expiry (~10 s) still works."""
    with Database(settings_for("remote", tmp_path, sqld, pool_size=1)) as db:
        migrate.upgrade(db)
        user = svc.create_user(db, unique_email(), "idle")
        time.sleep(11)
        assert svc.get_user(db, user.id) == user


def test_tokens(tmp_path: Path, jwt_sqld: Sqld, jwt_keys: tuple[bytes, Path]) -> None:
    """A valid token works, a read-only one cannot write, an expired one is an AuthError."""
    private, _ = jwt_keys
    good = settings_for("remote", tmp_path, jwt_sqld, auth_token=mint_token(private))
    with Database(good) as db:
        migrate.upgrade(db)
        user = svc.create_user(db, unique_email(), "tok")
    ro = settings_for("remote", tmp_path, jwt_sqld, auth_token=mint_token(private, read_only=True))
    with Database(ro) as db:
        assert svc.get_user(db, user.id) == user
        with pytest.raises(Exception) as info:
            svc.create_user(db, unique_email(), "nope")
        assert info.value.__class__.__name__ in ("ReadOnly", "AuthError")
    expired = settings_for("remote", tmp_path, jwt_sqld, auth_token=mint_token(private, ttl=-120))
    with Database(expired) as db, pytest.raises(AuthError):
        svc.get_user(db, user.id)
