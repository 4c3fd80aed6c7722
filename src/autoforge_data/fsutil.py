"""Files that are never half-written, and private permissions (files 0600, folders 0700)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) as 0700 folders; tighten it if we created it."""
    missing = []
    probe = path.absolute()
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
        os.chmod(folder, 0o700)
    return path


def touch_private(path: Path) -> None:
    """Create an empty file with mode 0600 if it does not exist (SQLite keeps that mode)."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)


def fsync_dir(path: Path) -> None:
    """fsync a folder so a rename inside it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(target: Path, mode: str = "wb") -> Iterator[IO[bytes]]:
    """Write ``target`` all or nothing: temp file (0600) → fsync → rename → fsync(folder).

    The temp file is ``.<name>.<pid>-<random>.tmp``: the writer's pid lets a cleanup tell a
    dead writer's leftover (SIGKILL skips the ``finally``) from a write still in progress.
    """
    target = Path(target)
    ensure_private_dir(target.parent)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.{os.getpid()}-", suffix=".tmp", dir=target.parent
    )
    os.fchmod(fd, 0o600)
    ok = False
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
        ok = True
    finally:
        if not ok:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
