"""Scheduled backups (leader lock, retention), Redis RDB backups on a real redis-server, the CLI."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import redis

from autoforge_data import cli
from autoforge_data.errors import Corrupt, InvalidInput, Unavailable
from autoforge_data.ops import redis_backup
from autoforge_data.ops.backup import RetentionPolicy, backup_status, list_backups
from autoforge_data.ops.redis_backup import RedisBackupOptions, backup_redis, validate_rdb
from autoforge_data.ops.schedule import BackupScheduler, ScheduleOptions, parse_interval
from conftest import settings_for
from servers import running, start_redis
from test_backup import make_live

PASSWORD = "rdb-test-pass-81f3"


def test_one_scheduler_leads_and_retention_applies(tmp_path: Path) -> None:
    """Two schedulers: one holds the lock and backs up, the other stands by; prune keeps 2."""
    settings = settings_for("embedded", tmp_path)
    make_live(settings, prompts=3)
    options = ScheduleOptions(every=0.2, jitter=0.2, retention=RetentionPolicy(keep_last=2))
    first, second = BackupScheduler(settings, options), BackupScheduler(settings, options)
    assert first.try_lead()
    assert not second.try_lead()
    assert second.run_once() is None
    assert list_backups(settings) == []
    first.start()
    deadline = time.monotonic() + 30
    while first.runs < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    first.stop()
    assert first.runs >= 3
    assert len(list_backups(settings)) == 2
    status = backup_status(settings)
    assert status["last_result"] == "ok" and status["count"] is not None
    assert second.try_lead(), "the lock is released when the leader stops"
    second.stop()


def test_schedule_options_are_checked() -> None:
    """Intervals parse with units; nonsense is refused before anything starts."""
    assert (
        parse_interval("1h") == 3600 and parse_interval("90") == 90 and parse_interval("15m") == 900
    )
    for bad in ("", "0", "-1h", "soon", "1x"):
        with pytest.raises(InvalidInput):
            parse_interval(bad)
    with pytest.raises(InvalidInput):
        ScheduleOptions(every=10, jitter=1.5).check()


def test_redis_rdb_backup_restores_into_a_new_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An RDB taken over the replication protocol loads into a fresh redis-server."""
    source = start_redis(tmp_path, args=["--requirepass", PASSWORD, "--save", "3600 1"])
    with running(source):
        client = redis.Redis(port=source.port, password=PASSWORD)
        client.mset({f"k{i}": f"v{i}" for i in range(500)})
        settings = settings_for("embedded", tmp_path, redis_password=PASSWORD)
        seen: list[list[str]] = []
        real_run = redis_backup._run

        def spy(argv: list[str], env: dict[str, str], timeout: float) -> None:
            seen.append(argv)
            real_run(argv, env, timeout)

        dest = tmp_path / "rdb"
        dest.mkdir()
        monkeypatch.setattr(redis_backup, "_run", spy)
        info = backup_redis(settings, RedisBackupOptions(url=source.url, dest=dest))
    assert PASSWORD not in " ".join(seen[0]), "the password must never be on a command line"
    assert info.rdb_version >= 9 and info.path.parent == dest
    assert os.stat(info.path).st_mode & 0o777 == 0o600
    assert [p.name for p in dest.iterdir()] == [info.path.name]
    restored_dir = tmp_path / "restored"
    restored_dir.mkdir()
    shutil.copy(info.path, restored_dir / "dump.rdb")
    copy = start_redis(
        tmp_path, name="restored", args=["--dir", str(restored_dir), "--dbfilename", "dump.rdb"]
    )
    with running(copy):
        client = redis.Redis(port=copy.port)
        assert client.dbsize() == 500
        assert client.get("k499") == b"v499"


def test_redis_backup_refusals(tmp_path: Path) -> None:
    """Wrong password: Unavailable and no file; credentials in the URL refused; damaged RDB."""
    source = start_redis(tmp_path, args=["--requirepass", PASSWORD])
    dest = tmp_path / "rdb"
    dest.mkdir()
    with running(source):
        wrong = settings_for("embedded", tmp_path, redis_password="not-it")
        with pytest.raises(Unavailable) as err:
            backup_redis(wrong, RedisBackupOptions(url=source.url, dest=dest))
        assert "not-it" not in err.value.one_line()
        assert list(dest.iterdir()) == []
        with pytest.raises(Exception, match="credentials"):
            backup_redis(
                wrong, RedisBackupOptions(url=f"redis://:x@127.0.0.1:{source.port}", dest=dest)
            )
        ok = settings_for("embedded", tmp_path, redis_password=PASSWORD)
        with pytest.raises(InvalidInput):
            backup_redis(ok, RedisBackupOptions(url=source.url, dest=dest / "-o.rdb"))
        good = backup_redis(ok, RedisBackupOptions(url=source.url, dest=dest / "one.rdb"))
    cut = tmp_path / "cut.rdb"
    cut.write_bytes(good.path.read_bytes()[:-5])
    with pytest.raises(Corrupt):
        validate_rdb(cut)
    cut.write_bytes(b"NOTREDIS0011")
    with pytest.raises(Corrupt):
        validate_rdb(cut)


def test_cli_create_verify_restore(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI round trip; failures are one line with exit code 2."""
    settings = settings_for("embedded", tmp_path)
    make_live(settings, prompts=3)
    os.environ["AFDB_DATA_DIR"] = str(tmp_path / "data")
    try:
        assert cli.run(["backup", "create", "--name", "c1"]) == 0
        assert cli.run(["backup", "verify"]) == 0
        assert "backup c1 ok" in capsys.readouterr().out
        assert cli.run(["backup", "restore", "c1", "--yes"]) == 0
        with pytest.raises(SystemExit) as exit_:
            cli.run(["backup", "create", "--name", "../x"])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err
        assert cli.run(["backup", "prune", "--keep-last", "1"]) == 0
    finally:
        del os.environ["AFDB_DATA_DIR"]
