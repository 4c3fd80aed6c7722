"""Embedded replica of a real sqld: read-your-writes, lag, and a primary that dies and returns."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from autoforge_data.db import migrate
from autoforge_data.db.engine import Database
from autoforge_data.errors import Unavailable
from autoforge_data.services import prompts as svc
from conftest import Ticker, settings_for, unique_email
from servers import Sqld


def test_read_your_writes_and_lag(tmp_path: Path, fresh_sqld: Sqld) -> None:
    """A write through the replica is readable right after; the lag is a small number."""
    with Database(settings_for("replica", tmp_path, fresh_sqld)) as db:
        migrate.upgrade(db)
        user = svc.create_user(db, unique_email(), "r")
        for i in range(20):
            p = svc.create_prompt(db, user.id, f"T{i}", "C")
            assert svc.get_prompt(db, p.id) == p  # read from the local file, right after
        lag = db.replica.lag_seconds()
        assert lag is not None and 0 <= lag < 2


def test_writes_by_others_arrive_by_background_sync(tmp_path: Path, fresh_sqld: Sqld) -> None:
    """A write made directly on the primary shows up locally within the sync interval."""
    with Database(settings_for("replica", tmp_path, fresh_sqld, sync_interval=0.2)) as db:
        migrate.upgrade(db)
        with Database(settings_for("remote", tmp_path / "other", fresh_sqld)) as other:
            user = svc.create_user(other, unique_email(), "o")
        deadline = time.monotonic() + 3
        while True:
            try:
                assert svc.get_user(db, user.id) == user
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def test_primary_killed_then_back(tmp_path: Path, fresh_sqld: Sqld) -> None:
    """Primary down: local reads work, writes fail within 2 s clearly; primary back: writes work."""
    settings = settings_for("replica", tmp_path, fresh_sqld, sync_interval=0.2,
                            connect_timeout=0.5, db_timeout=1.5)
    with Database(settings) as db:
        migrate.upgrade(db)
        user = svc.create_user(db, unique_email(), "k")
        p = svc.create_prompt(db, user.id, "before", "C")
        fresh_sqld.kill()
        assert svc.get_prompt(db, p.id) == p
        t0 = time.monotonic()
        with pytest.raises(Unavailable) as info:
            svc.create_prompt(db, user.id, "during", "C")
        assert time.monotonic() - t0 < 2.0
        assert "unreachable" in info.value.one_line()
        assert svc.list_prompts(db, user.id).items[0].id == p.id  # reads still local
        fresh_sqld.start()
        q = svc.create_prompt(db, user.id, "after", "C")
        assert svc.get_prompt(db, q.id) == q


def test_hung_primary_never_freezes_the_replica(tmp_path: Path, fresh_sqld: Sqld) -> None:
    """Primary hung (SIGSTOP): local reads work, a write fails in time, other threads run."""
    settings = settings_for("replica", tmp_path, fresh_sqld, sync_interval=0.2,
                            connect_timeout=0.3, db_timeout=1.0)
    with Database(settings) as db:
        migrate.upgrade(db)
        user = svc.create_user(db, unique_email(), "hung")
        ticker = Ticker().start()
        fresh_sqld.pause()
        try:
            time.sleep(0.5)  # let the background sync hit the hung primary
            before = ticker.ticks
            t0 = time.monotonic()
            assert svc.get_user(db, user.id) == user
            with pytest.raises(Unavailable):
                svc.create_user(db, unique_email(), "during")
            assert time.monotonic() - t0 < 2.0
            assert ticker.ticks - before > 100
        finally:
            fresh_sqld.resume()
            ticker.stop()
        svc.create_user(db, unique_email(), "after")
