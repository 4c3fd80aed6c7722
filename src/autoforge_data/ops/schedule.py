"""Scheduled backups: a loop with jitter, one leader at a time (flock), prune after each run.

:class:`BackupScheduler` runs in a thread (the service's lifespan starts and stops it) or in
the foreground (``afdb backup schedule --every 1h``). Several schedulers may run, on one or
many processes of a host: only the one holding ``<data dir>/backup-scheduler.lock`` (an
exclusive ``flock``, released by the kernel if its holder dies) makes backups; the others stay
on standby and try to take the lock at each tick, so two schedulers never overlap.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from autoforge_data.db.engine import Database
from autoforge_data.errors import AfdbError, InvalidInput
from autoforge_data.ops.backup import (
    BackupInfo,
    BackupOptions,
    RetentionPolicy,
    create_backup,
    key_dir,
    prune_backups,
)
from autoforge_data.settings import Settings

log = logging.getLogger(__name__)
LOCK_FILE = "backup-scheduler.{env}.lock"  # one leader per profile and host


@dataclass(frozen=True)
class ScheduleOptions:
    """How often, how much jitter, what to keep."""

    every: float  # seconds between backups
    jitter: float = 0.1  # each wait is every * (1 +- jitter)
    initial_delay: float = 0.0
    retention: RetentionPolicy | None = None
    backup: BackupOptions = field(default_factory=BackupOptions)

    def check(self) -> None:
        """Validate before starting."""
        if not self.every > 0:
            raise InvalidInput("the backup interval must be positive", hint="e.g. --every 1h")
        if not 0 <= self.jitter < 1:
            raise InvalidInput("jitter must be in [0, 1)", hint="e.g. 0.1 for ±10%")
        if self.retention is not None:
            self.retention.check()


def parse_interval(text: str) -> float:
    """'90', '30s', '15m', '1h', '1d' → seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    raw = text.strip().lower()
    try:
        unit = units.get(raw[-1:], 0)
        value = float(raw[:-1]) * unit if unit else float(raw)
    except ValueError:
        raise InvalidInput(f"invalid interval {text!r}", hint="e.g. 30s, 15m, 1h, 1d") from None
    if not value > 0:
        raise InvalidInput(f"invalid interval {text!r}", hint="must be positive")
    return value


class BackupScheduler:
    """Makes a backup every ``options.every`` seconds while it holds the scheduler lock."""

    def __init__(
        self,
        settings: Settings,
        options: ScheduleOptions,
        *,
        on_result: Callable[[BackupInfo | None, AfdbError | None], None] | None = None,
    ) -> None:
        options.check()
        options.backup.check(settings)
        self.settings = settings
        self.options = options
        self.on_result = on_result
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_fh: IO[str] | None = None
        self.runs = 0

    @property
    def is_leader(self) -> bool:
        """True while this scheduler holds the lock."""
        return self._lock_fh is not None

    def try_lead(self) -> bool:
        """Take the scheduler lock if it is free (kept until :meth:`stop`)."""
        if self._lock_fh is not None:
            return True
        folder = key_dir(self.settings)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = folder / LOCK_FILE.format(env=self.settings.env)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        fh = os.fdopen(fd, "r+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return False
        fh.truncate(0)
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._lock_fh = fh
        return True

    def run_once(self) -> BackupInfo | None:
        """One tick: if leader, back up (then prune when a retention is set)."""
        if not self.try_lead():
            log.info("backup scheduler on standby: another scheduler holds the lock")
            return None
        info: BackupInfo | None = None
        error: AfdbError | None = None
        try:
            with Database(self.settings) as db:
                info = create_backup(db, self.options.backup)
            if self.options.retention is not None:
                prune_backups(self.settings, self.options.retention, url=self.options.backup.url)
        except AfdbError as exc:
            error = exc
            log.error("scheduled backup failed: %s", exc.one_line())
        self.runs += 1
        if self.on_result is not None:
            self.on_result(info, error)
        return info

    def next_wait(self) -> float:
        """The next wait: ``every`` ± jitter."""
        spread = self.options.every * self.options.jitter
        return max(0.0, self.options.every + random.uniform(-spread, spread))  # noqa: S311

    def run_forever(self) -> None:
        """Loop until :meth:`stop` (the CLI runs this in the foreground)."""
        wait = self.options.initial_delay
        while not self._stop.wait(wait):
            self.run_once()
            wait = self.next_wait()
        self._release()

    def start(self) -> None:
        """Run the loop in a daemon thread."""
        self._thread = threading.Thread(target=self.run_forever, name="afdb-backup", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the loop to end, wait for a running backup to finish, release the lock."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._release()

    def _release(self) -> None:
        fh, self._lock_fh = self._lock_fh, None
        if fh is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            fh.close()
