"""Child processes of tests/test_backup_faults.py (killed with SIGKILL by the test).

``backup_child.py BASE write``: opens ``BASE/data/dev.db`` through our engine, prints
``ready``, then commits one row per transaction into ``acks`` (~200 a second), printing each id
with one ``os.write`` only after COMMIT returned (the acknowledgement log).

``backup_child.py BASE zygote``: imports everything, prints ``ready``, then for each TAG line
on stdin forks a child that makes backups named ``TAG-<n>`` one after another until the test
kills it, and prints the child's pid.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

from autoforge_data.db.engine import Database
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.ops.backup import BackupOptions, create_backup
from autoforge_data.settings import Settings

WRITES_PER_S = 200


def settings(base: Path) -> Settings:
    """The test's database and default backup folder."""
    return Settings.load("dev", base_dir=base, data_dir=base / "data")


def write(base: Path) -> None:
    """One acknowledged INSERT per transaction, paced at WRITES_PER_S."""
    db = Database(settings(base))
    with UnitOfWork(db, write=True) as uow:
        uow.execute("CREATE TABLE IF NOT EXISTS acks (id INTEGER PRIMARY KEY, at REAL NOT NULL)")
        uow.commit()
    os.write(1, b"ready\n")
    n = 0
    start = time.monotonic()
    while True:
        n += 1
        with UnitOfWork(db, write=True) as uow:
            uow.execute("INSERT INTO acks (id, at) VALUES (?, ?)", (n, time.time()))
            uow.commit()
        os.write(1, f"{n}\n".encode())
        delay = start + n / WRITES_PER_S - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def backup(base: Path, tag: str) -> None:
    """Back up in a loop until killed (runs in a child forked by the zygote)."""
    with Database(settings(base)) as db:
        n = 0
        while True:
            create_backup(db, BackupOptions(name=f"{tag}-{n}"))
            n += 1


def zygote(base: Path) -> None:
    """Import once, then fork one backup child per tag read from stdin; print its pid.

    Forking an already-imported process makes a kill cycle cost milliseconds instead of the
    seconds an interpreter start takes; the zygote has no threads, so forking it is safe.
    """
    import zstandard  # noqa: F401 - everything a backup needs is imported before forking

    from autoforge_data.ops import backup_verify  # noqa: F401

    os.write(1, b"ready\n")
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            try:
                backup(base, line.strip())
            finally:
                os._exit(1)
        os.write(1, f"{pid}\n".encode())
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass


if __name__ == "__main__":
    base_dir, mode = Path(sys.argv[1]), sys.argv[2]
    if mode == "write":
        write(base_dir)
    else:
        zygote(base_dir)
