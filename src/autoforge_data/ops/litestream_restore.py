"""Restore a Litestream replica into a NEW file, verified with the libSQL engine first.

:func:`restore_from_replica` runs ``litestream restore`` into a temporary file beside the target,
checks it (``PRAGMA integrity_check`` through libSQL, row counts) and only then gives it its final
name with a hard link, so an existing file is never replaced and a damaged restore never gets a
name. The live database is never touched. :func:`verify_replica` is the same as a drill into a
private temp folder (``afdb replicate --verify-every``).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from autoforge_data.errors import Conflict, Corrupt, InvalidInput, NotFound
from autoforge_data.fsutil import atomic_write, ensure_private_dir, fsync_dir
from autoforge_data.ops.litestream import ReplicationPlan, child_env, litestream_binary
from autoforge_data.settings import Settings


@dataclass(frozen=True)
class RestoreOptions:
    """A restore from the Litestream replica into a new file; :meth:`check` runs before I/O."""

    plan: ReplicationPlan
    target: Path
    timestamp: datetime | None = None
    timeout: float = 600.0

    def check(self) -> None:
        """Refuse an existing target (or its WAL/SHM), the live database, or a bad time."""
        target = self.target
        if os.path.realpath(target) == os.path.realpath(self.plan.db_path):
            raise InvalidInput(
                "refusing to restore over the live database",
                hint="restore to a new file (--to PATH), check it, then swap it in yourself",
            )
        for path in (target, Path(f"{target}-wal"), Path(f"{target}-shm")):
            if path.exists() or path.is_symlink():
                raise Conflict(
                    f"{path} already exists", hint="choose a new --to path; nothing is overwritten"
                )
        if self.timestamp is not None and self.timestamp > datetime.now(UTC):
            raise InvalidInput("the timestamp is in the future", hint="use a past UTC time")
        if self.timeout <= 0:
            raise InvalidInput("timeout must be positive", hint="seconds > 0")


@dataclass
class RestoreReport:
    """What a restore produced and how it was verified."""

    path: Path
    integrity: str
    row_counts: dict[str, int]
    seconds: float
    timestamp: str | None


def parse_timestamp(text: str) -> datetime:
    """An ISO 8601 time (``2026-11-27T15:04:05Z``); no zone means UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"invalid timestamp {text!r}", hint="use ISO 8601 UTC, e.g. 2026-11-27T15:04:05Z"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def default_restore_target(db_path: Path) -> Path:
    """``<db>.restored-<UTC time>.db`` beside the database."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return db_path.with_name(f"{db_path.stem}.restored-{stamp}{db_path.suffix or '.db'}")


def restore_from_replica(
    options: RestoreOptions, settings: Settings, env: dict[str, str] | None = None
) -> RestoreReport:
    """Restore the replica into ``options.target`` (new), verified with libSQL before naming it."""
    options.check()
    start = time.monotonic()
    target = options.target.absolute()
    ensure_private_dir(target.parent)
    with tempfile.TemporaryDirectory(prefix=".afdb-restore-", dir=target.parent) as tmp:
        os.chmod(tmp, 0o700)
        work = Path(tmp)
        config = work / "litestream.yml"
        with atomic_write(config) as fh:
            fh.write(json.dumps(options.plan.config(settings)).encode())
        out = work / "restored.db"
        _run_restore(options, config, out, env if env is not None else child_env(settings))
        counts = verify_database(out)
        os.chmod(out, 0o600)
        _fsync_file(out)
        try:
            os.link(out, target)  # never replaces: fails if the target appeared meanwhile
        except FileExistsError:
            raise Conflict(
                f"{target} appeared during the restore", hint="choose a new path"
            ) from None
        fsync_dir(target.parent)
    stamp = options.timestamp.isoformat() if options.timestamp else None
    return RestoreReport(target, "ok", counts, time.monotonic() - start, stamp)


def _run_restore(options: RestoreOptions, config: Path, out: Path, env: dict[str, str]) -> None:
    argv = [
        litestream_binary(),
        "restore",
        "-no-expand-env",
        "-config",
        str(config),
        "-o",
        str(out),
    ]
    if options.timestamp is not None:
        argv += ["-timestamp", options.timestamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")]
    argv.append(str(options.plan.db_path))
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv, no shell, no secret in it
            argv, capture_output=True, env=env, timeout=options.timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise Corrupt(
            f"litestream restore did not finish within {options.timeout:g}s",
            hint="check the replica's reachability",
        ) from None
    if done.returncode != 0 or not out.exists():
        detail = _last_error_line(done.stderr or done.stdout)
        if "no matching backup" in detail.lower() or "no snapshot" in detail.lower():
            raise NotFound(
                f"the replica has nothing to restore: {detail}",
                hint="is afdb replicate running for this database? is --timestamp too early?",
            )
        raise Corrupt(f"litestream restore failed: {detail}", hint="check the replica URL")


def _last_error_line(output: bytes) -> str:
    lines = [ln.strip() for ln in output.decode(errors="replace").splitlines() if ln.strip()]
    return (lines[-1] if lines else "no output")[:300]


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def verify_database(path: Path) -> dict[str, int]:
    """``PRAGMA integrity_check`` through libSQL (raises Corrupt), then rows per table."""
    from autoforge_data.ops import snapshot

    try:
        snapshot.integrity_check(path)
    except Corrupt as exc:
        raise Corrupt(
            f"the restored database failed the libSQL integrity check: {exc.message}",
            hint="nothing was written; try an earlier --timestamp (the replica may hold a "
            "damaged increment, see README: Litestream)",
        ) from None
    return snapshot.row_counts(path)


def verify_replica(
    plan: ReplicationPlan, settings: Settings, env: dict[str, str]
) -> dict[str, int]:
    """A restore drill: restore the latest state into a private temp file, check it, delete it."""
    ensure_private_dir(plan.state_path.parent)
    with tempfile.TemporaryDirectory(prefix="verify-", dir=plan.state_path.parent) as tmp:
        report = restore_from_replica(RestoreOptions(plan, Path(tmp) / "check.db"), settings, env)
    return report.row_counts
