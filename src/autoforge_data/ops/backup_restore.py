"""Restore: validate a backup completely, then swap it in atomically, keeping the previous file.

Nothing touches the live database until the backup has passed every check of the verify drill
(:func:`~autoforge_data.ops.backup_verify.fetch_validated`: HMAC, digests, authenticated
decryption, libSQL integrity check, row counts, migration head, triggers/views) and the caller
confirmed. Then:

1. refuse if the live file is open, in this process (the engine's registry) or another one
   (``/proc/*/fd``): a process holding the old file would keep writing to it;
2. fold the live WAL into the file (TRUNCATE checkpoint) so the previous file is complete on its
   own, and refuse if a WAL remains;
3. hard-link the live file to ``<db>.pre-restore-<UTC time>`` (the rollback copy);
4. ``rename`` the validated file over the live name and fsync the folder; the old ``-shm`` is
   removed (an index of the previous file's WAL must never describe the new file).

``rollback_restore`` puts the newest pre-restore file back the same way.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from autoforge_data.db.engine import Database, _open_files, _open_lock
from autoforge_data.errors import Busy, ConfigError, InvalidInput, NotFound
from autoforge_data.fsutil import fsync_dir
from autoforge_data.ops import backup_format as fmt
from autoforge_data.ops.backup import check_backup_name, latest_name, work_dir
from autoforge_data.ops.backup_verify import fetch_validated
from autoforge_data.ops.targets import open_target
from autoforge_data.settings import Mode, Settings

PRE_RESTORE = ".pre-restore-"


@dataclass(frozen=True)
class RestorePlan:
    """What a restore is about to do (shown to the user for confirmation)."""

    name: str
    created_at: str
    migration: str | None
    rows: int
    live_path: Path


@dataclass(frozen=True)
class RestoreOptions:
    """Which backup to restore (default: the newest) and how to confirm."""

    name: str | None = None
    url: str | None = None
    yes: bool = False  # skip the confirmation
    confirm: Callable[[RestorePlan], bool] | None = None  # asked unless ``yes``

    def check(self, settings: Settings) -> None:
        """Validate before any I/O: a name, an embedded database, a way to confirm."""
        if self.name is not None:
            check_backup_name(self.name)
        if settings.target.mode is not Mode.EMBEDDED:
            raise ConfigError(
                f"restore needs an embedded database, not {settings.target.mode.value}",
                hint="restore into a local file, then load it into the server (or use the "
                "server's own point-in-time restore / namespace fork)",
            )
        if not self.yes and self.confirm is None:
            raise InvalidInput("restore needs confirmation", hint="pass --yes to skip the question")


@dataclass(frozen=True)
class RestoreReport:
    """A finished restore."""

    name: str
    live_path: Path
    previous_path: Path | None
    seconds: float
    manifest: fmt.Manifest


def restore_backup(settings: Settings, options: RestoreOptions) -> RestoreReport:
    """Validate the backup, confirm, then swap it in (see the module docstring)."""
    options.check(settings)
    live = settings.target.path
    assert live is not None
    target = open_target(settings, options.url)
    name = options.name or latest_name(settings, options.url)
    start = time.perf_counter()
    with work_dir(settings) as tmp:
        fetched = fetch_validated(settings, target, name, tmp)
        m = fetched.manifest
        plan = RestorePlan(name, m.created_at, m.migration, sum(m.row_counts.values()), live)
        if not options.yes and options.confirm is not None and not options.confirm(plan):
            raise InvalidInput("restore cancelled; the live database is unchanged")
        previous = swap_in(settings, fetched.path, live)
    return RestoreReport(name, live, previous, time.perf_counter() - start, m)


def swap_in(settings: Settings, new_file: Path, live: Path) -> Path | None:
    """Replace ``live`` with ``new_file`` (same file system); returns the rollback copy's path."""
    ensure_closed(live)
    previous: Path | None = None
    if live.exists():
        _checkpoint(settings)
        ensure_closed(live)
        wal = Path(f"{live}-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise Busy(f"{live.name} still has a write-ahead log", hint="stop every writer, retry")
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        previous = live.with_name(f"{live.name}{PRE_RESTORE}{stamp}")
        os.link(live, previous)
    staged = live.with_name(f".{live.name}.restore-{os.getpid()}")
    os.replace(new_file, staged)  # same folder as live: the final rename is atomic
    os.chmod(staged, 0o600)
    for side in (Path(f"{live}-wal"), Path(f"{live}-shm")):
        with contextlib.suppress(FileNotFoundError):
            side.unlink()
    os.replace(staged, live)
    fsync_dir(live.parent)
    return previous


def _checkpoint(settings: Settings) -> None:
    """Fold the WAL into the live file with its own driver, then close every connection."""
    with Database(settings) as db, db.writes.connection() as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def ensure_closed(path: Path) -> None:
    """Refuse when the file is open in this process or in another one we can see."""
    real = os.path.realpath(path)
    with _open_lock:
        mine = real in _open_files
    if mine:
        raise Busy(
            f"{path.name} is open in this process",
            hint="close the database (stop the service's scheduler/app) before restoring",
        )
    holders = _holders(real)
    if holders:
        raise Busy(
            f"{path.name} is open by process {', '.join(map(str, holders[:5]))}",
            hint="stop the service, schedulers and other writers, then restore",
        )


def _holders(real: str) -> list[int]:
    """Other processes with a descriptor open on the file (Linux /proc; own user's only)."""
    found = []
    targets = {real, f"{real}-wal"}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in targets:
                        found.append(int(entry.name))
                        break
    return found


def rollback_restore(settings: Settings) -> Path:
    """Put the newest pre-restore copy back (the restored file is kept as a pre-restore too)."""
    live = settings.target.path
    if settings.target.mode is not Mode.EMBEDDED or live is None:
        raise ConfigError("rollback needs an embedded database")
    copies = sorted(live.parent.glob(f"{live.name}{PRE_RESTORE}*"))
    if not copies:
        raise NotFound(f"no previous file of {live.name} to roll back to")
    chosen = copies[-1]
    with work_dir(settings) as tmp:
        staged = tmp / "rollback.db"
        os.link(chosen, staged)
        swap_in(settings, staged, live)
    chosen.unlink()
    return chosen
