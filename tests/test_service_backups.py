"""The service backs itself up with AFDB_BACKUP_EVERY: a verified backup, status and an event."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from autoforge_data.api.app import create_app
from autoforge_data.api.scheduler import schedule_options
from autoforge_data.db import migrate
from autoforge_data.db.engine import Database
from autoforge_data.events import Event
from autoforge_data.ops.backup import backup_status, list_backups
from autoforge_data.ops.backup_verify import VerifyOptions, verify_backup
from conftest import settings_for


def test_the_app_backs_itself_up_and_says_so(tmp_path: Path) -> None:
    """Every AFDB_BACKUP_EVERY seconds a backup lands, backup_status and backup.finished follow."""
    settings = settings_for("embedded", tmp_path, backup_every=0.5, backup_keep_last=2)
    with Database(settings) as db:
        migrate.upgrade(db)
    seen: list[Event] = []
    with TestClient(create_app(settings)) as client:
        client.app.state.events.subscribe(seen.append)  # type: ignore[attr-defined]
        deadline = time.monotonic() + 30
        while len(list_backups(settings)) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
    backups = list_backups(settings)
    status = backup_status(settings)
    assert status["last_result"] == "ok"
    assert status["age_seconds"] is not None and status["age_seconds"] < 60
    finished = [e for e in seen if e.kind == "backup.finished"]
    assert finished and all(e.data.get("ok") for e in finished)
    assert 1 <= len(backups) <= 3  # keep_last=2 prunes after each run
    report = verify_backup(settings, VerifyOptions())
    assert report.ok, report.error
    assert report.name == backups[-1].name


def test_no_schedule_without_an_interval_or_for_a_remote_database(tmp_path: Path) -> None:
    """No interval: no scheduler; a remote database is backed up by its server, not by us."""
    assert schedule_options(settings_for("embedded", tmp_path)) is None
    remote = settings_for(
        "embedded", tmp_path, database_url="http://127.0.0.1:9/", backup_every=60.0
    )
    assert schedule_options(remote) is None
    options = schedule_options(settings_for("embedded", tmp_path, backup_every=60.0))
    assert options is not None and options.initial_delay == 60.0
