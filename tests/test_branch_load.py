"""Branch under write load: each branch holds a prefix of the acknowledged writes; no write leaks.

A child process (tests/crash_writer.py, mode ``uow``) writes 50-row transactions to the prod
database and acknowledges each id on a pipe only after COMMIT returned. While it writes, we
branch prod three times. For every branch:

* every transaction in it is whole (50 rows) and was acknowledged, or was the one in flight;
* every transaction acknowledged before the branch started is in it;
* its transactions are a prefix 1..n (the writer's ids only grow);
* after the branch, the source keeps getting transactions the branch never sees, and a row
  written into the branch never shows up in the source.

Sensitivity arm: a plain copy of the main file while the writer runs (what the seed did) must
miss acknowledged transactions (they sit in the WAL), so the same check fails for it.

Crashes: a worker forked from one warm process creates anonymized branches in a loop and is
SIGKILLed at a random moment, 8 times; every file with a final name must pass the libSQL
integrity check and hold no prod text, and half-made files are cleaned up by the next run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoforge_data.db import migrate
from autoforge_data.db.engine import Database
from autoforge_data.ops.branch import BranchOptions, create_branch
from autoforge_data.ops.snapshot import _open_libsql
from autoforge_data.settings import Settings

WRITER = Path(__file__).resolve().parent / "crash_writer.py"
ROWS_PER_TXN = 50


class AckLog:
    """Reads the writer's acknowledgement pipe in a thread; ids in the order they came."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.ids: list[int] = []
        self.first: int | None = None
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode().strip()
            if line.startswith("ready "):
                self.first = int(line.split()[1])
            elif line:
                with self.lock:
                    self.ids.append(int(line))

    def acked(self) -> set[int]:
        """Every id acknowledged so far."""
        with self.lock:
            return set(self.ids)

    def wait_for(self, count: int, timeout: float = 60.0) -> None:
        """Wait until at least ``count`` ids were acknowledged."""
        deadline = time.monotonic() + timeout
        while len(self.acked()) < count:
            if self.proc.poll() is not None:
                raise RuntimeError(f"writer exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(self.acked())} acknowledgements")
            time.sleep(0.01)


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[AckLog]:
    """A migrated prod database and a writer child process acknowledging its commits."""
    with Database(Settings.load("prod", base_dir=tmp_path, data_dir=tmp_path / "data")) as db:
        migrate.upgrade(db)
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(tmp_path), "uow"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=tmp_path,
    )
    assert proc.stdin is not None
    proc.stdin.write(b"go\n")
    proc.stdin.flush()
    log = AckLog(proc)
    try:
        yield log
    finally:
        proc.kill()
        proc.wait(timeout=10)


def txns(path: Path) -> dict[int, int]:
    """Rows per transaction id in a database file (read with the libSQL engine)."""
    with _open_libsql(path) as conn:
        rows = conn.execute("SELECT txn, count(*) FROM crash_log GROUP BY txn").fetchall()
    return {int(t): int(n) for t, n in rows}


def prefix_violations(found: dict[int, int], before: set[int], after: set[int]) -> list[str]:
    """What makes ``found`` not a whole prefix of the acknowledged writes (empty when it is)."""
    problems = []
    torn = sorted(t for t, n in found.items() if t > 0 and n != ROWS_PER_TXN)
    if torn:
        problems.append(f"partial transactions {torn[:5]}")
    missing = sorted(before - set(found))
    if missing:
        problems.append(f"{len(missing)} acknowledged transactions missing, e.g. {missing[:5]}")
    in_flight = max(after, default=0) + 1
    unacked = sorted(t for t in found if t > 0 and t not in after and t != in_flight)
    if unacked:
        problems.append(f"never acknowledged: {unacked[:5]}")
    ids = sorted(t for t in found if t > 0)
    if ids and ids != list(range(ids[0], ids[-1] + 1)):
        problems.append("not a contiguous prefix")
    return problems


def test_branches_under_write_load_hold_a_prefix_and_share_no_writes(
    writer: AckLog, tmp_path: Path
) -> None:
    """Three branches taken while a writer commits: each a whole prefix, then fully separate."""
    prod = Settings.load("prod", base_dir=tmp_path, data_dir=tmp_path / "data")
    branches: list[tuple[Path, set[int], set[int]]] = []
    writer.wait_for(20)
    for i in range(3):
        before = writer.acked()
        record = create_branch(prod, BranchOptions(f"load-{i}"))
        after = writer.acked()
        branches.append((Path(record.location), before, after))
        writer.wait_for(len(after) + 10)  # the source moves on after each branch
    writer.proc.kill()
    writer.proc.wait(timeout=10)
    source = prod.target.path
    assert source is not None
    in_source = txns(source)
    for path, before, after in branches:
        found = txns(path)
        assert found, "the branch holds no transactions at all"
        assert prefix_violations(found, before, after) == []
        assert max(in_source) > max(found)  # later source writes never reached the branch
    _assert_no_leak(prod, branches[0][0], tmp_path)


def _assert_no_leak(prod: Settings, branch: Path, tmp: Path) -> None:
    """A row written into the branch stays there; one written into the source stays there."""
    dev = Settings.load("dev", base_dir=tmp, database_url=str(branch))
    for settings, marker in ((dev, -1), (prod, -2)):
        with Database(settings) as db, db.writes.connection() as conn:
            conn.execute(
                "INSERT INTO crash_log (txn, seq, payload) VALUES (?, 0, 'marker')", (marker,)
            )
    source = prod.target.path
    assert source is not None
    assert -1 in txns(branch) and -1 not in txns(source)
    assert -2 in txns(source) and -2 not in txns(branch)


def test_sensitivity_a_plain_file_copy_misses_acknowledged_writes(
    writer: AckLog, tmp_path: Path
) -> None:
    """Sensitivity arm: a copy of the live main file loses acknowledged writes (in the WAL)."""
    prod = Settings.load("prod", base_dir=tmp_path, data_dir=tmp_path / "data")
    source = prod.target.path
    assert source is not None
    writer.wait_for(20)
    with Database(prod) as db, db.writes.connection() as conn:  # crash_log into the main file
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    writer.wait_for(len(writer.acked()) + 10)
    failures = []
    for i in range(3):
        before = writer.acked()
        copy = tmp_path / f"copy-{i}.db"
        shutil.copyfile(source, copy)
        after = writer.acked()
        try:
            problems = prefix_violations(txns(copy), before, after)
        except Exception as exc:  # an unreadable copy fails the check too
            problems = [f"unreadable: {type(exc).__name__}"]
        failures.append(problems)
        writer.wait_for(len(after) + 5)
    assert any(failures), "a plain copy of a live WAL database kept every acknowledged write"


def test_the_ack_log_check_accepts_a_whole_prefix_only() -> None:
    """The checker itself: a torn, missing or unacknowledged transaction is reported."""
    whole = {1: 50, 2: 50, 3: 50}
    assert prefix_violations(whole, {1, 2}, {1, 2}) == []  # 3 was in flight
    assert prefix_violations({1: 50, 2: 49}, {1}, {1, 2}) != []
    assert prefix_violations({1: 50}, {1, 2}, {1, 2}) != []
    assert prefix_violations({1: 50, 2: 50, 3: 50, 4: 50}, {1}, {1, 2}) != []
    assert prefix_violations({1: 50, 3: 50}, {1}, {1, 2, 3}) != []


FORKER = """
import os
import sys
from pathlib import Path
from autoforge_data.ops.branch import BranchOptions, create_branch
from autoforge_data.settings import Settings

base = Path(sys.argv[1])
prod = Settings.load("prod", base_dir=base, data_dir=base / "data")
print("ready", flush=True)
for line in sys.stdin:
    first = int(line)
    pid = os.fork()  # the imports are paid once; each round's worker is a fresh fork
    if pid == 0:
        i = first
        while True:
            create_branch(prod, BranchOptions(f"k{i}", anonymize=True, drop_content=True))
            print(f"done k{i}", flush=True)
            i += 1
    print(f"pid {pid}", flush=True)
    os.waitpid(pid, 0)
    print("reaped", flush=True)
"""


def test_sigkill_during_branch_creation_never_leaves_a_bad_final_file(tmp_path: Path) -> None:
    """SIGKILL at random moments of `create` (8 rounds): every final-named file is whole, clean."""
    import random

    from autoforge_data.ops.branch import list_branches, remove_stale_partials
    from autoforge_data.ops.snapshot import integrity_check
    from autoforge_data.services import prompts as svc

    prod = Settings.load("prod", base_dir=tmp_path, data_dir=tmp_path / "data")
    with Database(prod) as db:
        migrate.upgrade(db)
        user = svc.create_user(db, "victim.private@corp.example", "victim")
        svc.import_prompts(db, user.id, [(f"t{i}", "secret words " * 40) for i in range(1000)])
    folder = tmp_path / "data" / "branches"
    rng = random.Random(7)
    killed_mid_create = 0
    rounds: list[tuple[int, list[str]]] = []  # creates finished, files left: for the messages
    forker = subprocess.Popen(
        [sys.executable, "-c", FORKER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=tmp_path,
    )
    assert forker.stdin is not None
    assert forker.stdout is not None
    try:
        assert forker.stdout.readline() == b"ready\n"
        for round_ in range(8):
            forker.stdin.write(f"{round_ * 100}\n".encode())
            forker.stdin.flush()
            pid = int(forker.stdout.readline().split()[1])
            time.sleep(rng.uniform(0.05, 2.5))
            os.kill(pid, signal.SIGKILL)
            done = 0
            while (line := forker.stdout.readline()) not in (b"reaped\n", b""):
                done += line.startswith(b"done")
            # a half-made file left behind is the proof that this kill landed inside a create
            left = [p.name for p in folder.iterdir()] if folder.is_dir() else []
            killed_mid_create += any(name.startswith(".") for name in left)
            rounds.append((done, left))
            for path in folder.glob("*.db"):
                integrity_check(path)
                assert b"victim" not in path.read_bytes()
                assert b"secret words" not in path.read_bytes()
    finally:
        forker.kill()
        forker.wait(timeout=10)
    remove_stale_partials(folder)
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert all(r.status in ("ok", "unrecorded") for r in list_branches(prod))
    assert list(folder.glob("*.db")), f"no create finished (final names unchecked): {rounds}"
    assert killed_mid_create > 0, f"no kill landed inside a create: {rounds}"
