"""Backups under real faults: SIGKILL of the backup process, many times, while a child writes.

Every backup with a final name must have a valid manifest, pass verify and hold a prefix of the
acknowledged writes (at least every write acknowledged before the backup started); no
half-written file ever has a final name. The backup children are forked from a pre-imported
zygote, so 50 kills (``AFDB_BACKUP_KILLS``) take about 15 s.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from autoforge_data.ops import backup_format as fmt
from autoforge_data.ops.backup import DATA, MANIFEST, list_backups
from autoforge_data.ops.backup_verify import VerifyOptions, fetch_validated, verify_backup
from autoforge_data.ops.snapshot import _open_libsql, integrity_check
from autoforge_data.ops.targets import open_target
from autoforge_data.settings import Settings
from conftest import settings_for
from test_backup import make_live

CHILD = Path(__file__).with_name("backup_child.py")
KILLS = int(os.environ.get("AFDB_BACKUP_KILLS", "50"))


class Writer:
    """The writing child and its acknowledgement log, read by a thread."""

    def __init__(self, base: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(base), "write"], stdout=subprocess.PIPE
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline() == b"ready\n"
        self.acked = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.acked = int(line)

    def stop(self) -> None:
        """SIGKILL the writer."""
        self.proc.kill()
        self.proc.wait()


class Zygote:
    """The forking parent of the backup children (see backup_child.py)."""

    def __init__(self, base: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(base), "zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.out, self.inp = self.proc.stdout, self.proc.stdin
        assert self.out.readline() == b"ready\n"

    def fork(self, tag: str) -> int:
        """Start a backup child; returns its pid."""
        self.inp.write(tag.encode() + b"\n")
        self.inp.flush()
        return int(self.out.readline())

    def stop(self) -> None:
        """End the zygote."""
        self.proc.kill()
        self.proc.wait()


@pytest.mark.slow
def test_sigkill_during_backups_under_write_load(tmp_path: Path) -> None:
    """KILLS backup processes killed at random moments while ~200 writes/s are acknowledged."""
    settings = settings_for("embedded", tmp_path)
    make_live(settings)
    writer = Writer(tmp_path)
    zygote = Zygote(tmp_path)
    rng = random.Random(5)
    floor: dict[str, int] = {}  # tag -> writes acknowledged before that child started
    try:
        for i in range(KILLS):
            floor[f"k{i}"] = writer.acked
            pid = zygote.fork(f"k{i}")
            time.sleep(rng.uniform(0.0, 0.4))
            os.kill(pid, signal.SIGKILL)
        final_acked = writer.acked
    finally:
        zygote.stop()
        writer.stop()
    check_every_final_name(settings, tmp_path, floor, final_acked)


def check_every_final_name(
    settings: Settings, tmp_path: Path, floor: dict[str, int], final_acked: int
) -> None:
    """Manifest'd backups verify and hold an ack prefix; every final data file decodes whole."""
    target = open_target(settings)
    keys = target.list_keys()
    entries = list_backups(settings)
    assert entries, "no backup finished: the kill delays are too short for this machine"
    for entry in entries:
        assert entry.error is None, entry
        assert verify_backup(settings, VerifyOptions(name=entry.name)).ok
        work = tmp_path / "check" / entry.name
        work.mkdir(parents=True)
        fetched = fetch_validated(settings, target, entry.name, work)
        with _open_libsql(fetched.path) as conn:
            ids = [int(r[0]) for r in conn.execute("SELECT id FROM acks ORDER BY id").fetchall()]
        assert ids == list(range(1, len(ids) + 1)), "not a prefix of the acknowledged writes"
        tag = entry.name.rsplit("-", 1)[0]
        assert floor[tag] <= len(ids) <= final_acked + 1
    orphans = [k for k in keys if k.endswith(DATA) and k[: -len(DATA)] + MANIFEST not in keys]
    for key in orphans:  # killed between the data's rename and the manifest's: still whole
        out = tmp_path / "check" / (key + ".db")
        with target.reader(key) as src, open(out, "wb") as dst:
            fmt.decode(src, dst, compression="zstd", secret=None)
        integrity_check(out)
    leftovers = [p for p in Path(target.location("x")).parent.iterdir() if p.name.startswith(".")]
    print(
        f"{KILLS} kills: {len(entries)} complete backups, {len(orphans)} data without manifest, "
        f"{len(leftovers)} temp files left by kills, {final_acked} writes acknowledged"
    )
