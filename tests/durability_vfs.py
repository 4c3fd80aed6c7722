"""Simulated power loss for SQLite: an APSW VFS whose files lose every write that was not synced.

Used by ``tests/test_durability.py`` and ``bench/durability.py``.

The model. Each file has three views:

* ``data``: what reads see (the OS page cache). Every ``xWrite``/``xTruncate`` lands here at once.
* ``durable``: what is on the platter. ``xSync`` moves the file's pending writes here.
* ``pending``: writes and truncates since the file's last ``xSync``, in order.

A **power cut** is armed to happen just before the N-th write/sync/truncate call from now. At that
moment the disk image is frozen: each file's ``durable`` content, plus (``keep`` > 0) a random
subset of its pending writes, which models a drive that persisted some unsynced writes in any
order. From then on every write/sync/truncate raises ``SQLITE_IOERR``, so the interrupted COMMIT
never returns and is never acknowledged. The run then "reboots": a fresh disk holds only the frozen
image, a new connection opens it (WAL recovery) and the test counts acknowledged commits lost.

What the model is. ``keep=0`` is the worst case a correct disk allows: nothing that was not
fsynced survives (a real machine may also have flushed some dirty pages before the cut, e.g. the
kernel's writeback after ~30 s, so real losses under NORMAL can be smaller). ``keep>0`` is a disk
that persisted an arbitrary subset of the unsynced writes, in any order. Not modelled: writes torn
inside a sector (SQLite's WAL checksums exist for that, but the harness never produces one) and
directory entries: creating and deleting a file are durable at once (kinder than a real disk).

Shared memory. APSW's Python VFS has no ``xShm*`` methods, so WAL runs with
``PRAGMA locking_mode=EXCLUSIVE``: SQLite then keeps the WAL index in heap memory instead of a
``-shm`` file. That memory dies with the process, which is exactly what a power cut does to the
real ``-shm`` (a memory-mapped file that SQLite never syncs and rebuilds from the WAL on recovery).
Everything else is the engine's own configuration: the harness applies
:func:`autoforge_data.db.engine._apply_pragmas` (WAL, ``synchronous`` from the settings,
foreign keys, busy timeout) to the APSW connection, and the files report what the unix VFS reports
on Linux (4096-byte sectors, POWERSAFE_OVERWRITE), so SQLite takes the same decisions about what to
write and fsync as under stdlib ``sqlite3`` in the app. (APSW bundles SQLite 3.54, the stdlib
module here links 3.40; WAL's sync points for NORMAL and FULL are the same in both.)
"""

from __future__ import annotations

import contextlib
import itertools
import random
from dataclasses import dataclass, field
from typing import Any

import apsw

from autoforge_data.db.engine import _apply_pragmas
from autoforge_data.settings import Settings

DB_NAME = "/powerloss/app.db"
_names = itertools.count()


class PowerCut(apsw.IOError):  # type: ignore[misc]
    """Raised by every write, sync and truncate after the power was cut."""


@dataclass
class SimFile:
    """One file of the simulated disk."""

    data: bytearray = field(default_factory=bytearray)
    durable: bytearray = field(default_factory=bytearray)
    pending: list[tuple[int, bytes | None]] = field(default_factory=list)  # (offset, data|None)

    def survivor(self, keep: float, rng: random.Random) -> bytes:
        """The content after a power cut: durable, plus each pending write with chance ``keep``."""
        image = bytearray(self.durable)
        for offset, chunk in self.pending:
            if keep <= 0 or rng.random() >= keep:
                continue
            _apply(image, offset, chunk)
        return bytes(image)


def _apply(buf: bytearray, offset: int, chunk: bytes | None) -> None:
    """Apply one write (``chunk``) or truncate (``chunk is None``: ``offset`` is the new size)."""
    if chunk is None:
        del buf[offset:]
        return
    end = offset + len(chunk)
    if len(buf) < end:
        buf.extend(bytes(end - len(buf)))
    buf[offset:end] = chunk


class Disk:
    """The simulated disk: files by name, an I/O call counter and the armed power cut."""

    def __init__(self, image: dict[str, bytes] | None = None) -> None:
        self.files: dict[str, SimFile] = {}
        for name, content in (image or {}).items():
            self.files[name] = SimFile(bytearray(content), bytearray(content))
        self.calls = 0
        self.syncs = 0
        self.cut_at: int | None = None
        self.dead = False
        self.image: dict[str, bytes] | None = None

    def arm(self, after_calls: int) -> None:
        """Cut the power just before the ``after_calls``-th write/sync/truncate from now."""
        self.cut_at = self.calls + after_calls

    def io(self, keep: float, rng: random.Random) -> None:
        """Count one write/sync/truncate call; cut the power if this is the armed one."""
        if self.dead:
            raise PowerCut("power is off")
        self.calls += 1
        if self.cut_at is not None and self.calls >= self.cut_at:
            self.image = {n: f.survivor(keep, rng) for n, f in self.files.items()}
            self.dead = True
            raise PowerCut("power cut")


class SimVFSFile:
    """A file of :class:`Disk`; implements the methods SQLite calls on an ``sqlite3_file``."""

    def __init__(self, vfs: PowerLossVFS, name: str, delete_on_close: bool) -> None:
        self.vfs = vfs
        self.name = name
        self.file = vfs.disk.files.setdefault(name, SimFile())
        self.delete_on_close = delete_on_close

    def xRead(self, amount: int, offset: int) -> bytes:
        return bytes(self.file.data[offset : offset + amount])  # short read: APSW zero-fills

    def xWrite(self, data: bytes, offset: int) -> None:
        self.vfs.io()
        chunk = bytes(data)
        _apply(self.file.data, offset, chunk)
        self.file.pending.append((offset, chunk))

    def xTruncate(self, newsize: int) -> None:
        self.vfs.io()
        _apply(self.file.data, newsize, None)
        self.file.pending.append((newsize, None))

    def xSync(self, flags: int) -> None:
        self.vfs.io()
        self.vfs.disk.syncs += 1
        for offset, chunk in self.file.pending:
            _apply(self.file.durable, offset, chunk)
        self.file.pending.clear()

    def xFileSize(self) -> int:
        return len(self.file.data)

    def xLock(self, level: int) -> None:
        pass  # one connection, locking_mode=EXCLUSIVE

    def xUnlock(self, level: int) -> None:
        pass

    def xCheckReservedLock(self) -> bool:
        return False

    def xFileControl(self, op: int, ptr: int) -> bool:
        return False

    def xSectorSize(self) -> int:
        return 4096

    def xDeviceCharacteristics(self) -> int:
        # What the unix VFS reports on Linux; true here too (a write never disturbs other bytes).
        return int(apsw.SQLITE_IOCAP_POWERSAFE_OVERWRITE)

    def xClose(self) -> None:
        if self.delete_on_close:
            self.vfs.disk.files.pop(self.name, None)


class PowerLossVFS(apsw.VFS):  # type: ignore[misc]
    """A VFS over a :class:`Disk`; swap ``disk`` to "reboot" onto the surviving image."""

    def __init__(self, *, keep: float = 0.0, seed: int = 0) -> None:
        self.vfs_name = f"powerloss{next(_names)}"
        self.disk = Disk()
        self.keep = keep
        self.rng = random.Random(seed)
        super().__init__(self.vfs_name, base="")

    def io(self) -> None:
        """Count one I/O call on the current disk (may cut the power)."""
        self.disk.io(self.keep, self.rng)

    def xOpen(self, name: Any, flags: list[int]) -> SimVFSFile:
        if name is None:
            path = f"/powerloss/tmp{next(_names)}"
        else:
            path = name if isinstance(name, str) else name.filename()
        flags[1] = flags[0]
        return SimVFSFile(self, path, bool(flags[0] & apsw.SQLITE_OPEN_DELETEONCLOSE))

    def xAccess(self, pathname: str, flags: int) -> bool:
        return pathname in self.disk.files

    def xDelete(self, filename: str, syncdir: bool) -> None:
        self.io()  # a delete is an I/O call too: the power can go right there
        self.disk.files.pop(filename, None)

    def xFullPathname(self, name: str) -> str:
        return name

    def close(self) -> None:
        """Unregister the VFS."""
        self.unregister()


# -- the workload ---------------------------------------------------------------------------------

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS ledger (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tally (k INTEGER PRIMARY KEY CHECK (k = 1), n INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO tally (k, n) VALUES (1, 0)",
)
INSERT = "INSERT INTO ledger (id, payload) VALUES (?, ?)"


def connect(vfs: PowerLossVFS, settings: Settings) -> apsw.Connection:
    """An APSW connection on the simulated disk with the engine's PRAGMAs (WAL, synchronous...)."""
    conn = apsw.Connection(DB_NAME, vfs=vfs.vfs_name)
    conn.execute("PRAGMA locking_mode = EXCLUSIVE")  # WAL without shared memory (see above)
    _apply_pragmas(conn, settings)
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    sync = conn.execute("PRAGMA synchronous").fetchone()[0]
    assert mode == "wal", mode
    assert sync == {"NORMAL": 1, "FULL": 2, "EXTRA": 3}[settings.synchronous_level], sync
    return conn


@dataclass
class Cut:
    """One power cut: what was acknowledged, what survived."""

    acked: int  # commits acknowledged in this round
    lost: int  # acknowledged commits (of any round) missing after this cut
    kept_unacked: int  # commits on disk that were never acknowledged (COMMIT interrupted)
    integrity: str
    consistent: bool  # tally.n == count(ledger): no commit half-applied
    syncs: int


@dataclass
class Result:
    """All cuts of one run."""

    setting: str
    cuts: list[Cut]

    @property
    def acked(self) -> int:
        """Acknowledged commits over all cuts."""
        return sum(c.acked for c in self.cuts)

    @property
    def lost(self) -> int:
        """Acknowledged commits lost over all cuts."""
        return sum(c.lost for c in self.cuts)

    @property
    def ok(self) -> bool:
        """Every cut left an intact, consistent database."""
        return all(c.integrity == "ok" and c.consistent for c in self.cuts)


def run_power_cuts(
    settings: Settings,
    *,
    cuts: int,
    seed: int,
    max_calls: int = 10_000,
    rows_per_commit: int = 1,
    keep: float = 0.0,
) -> Result:
    """Write acknowledged commits, cut the power at a random point, reboot, count the losses.

    Each round cuts the power just before a random write/sync/truncate call (uniform in
    1..``max_calls`` from the round's start), so a cut lands in a COMMIT's WAL writes, its fsync,
    or a checkpoint in proportion to the I/O each does. The same database continues across
    rounds (recovered each time), as a real server's would.
    """
    rng = random.Random(seed)
    vfs = PowerLossVFS(keep=keep, seed=seed + 1)
    payload = "x" * 100
    acked: set[int] = set()  # ids of acknowledged rows not yet counted as lost
    next_id = 1
    results: list[Cut] = []
    try:
        conn = connect(vfs, settings)
        for statement in SCHEMA:
            conn.execute(statement)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # schema on the platter before round 1
        for _ in range(cuts):
            vfs.disk.arm(rng.randint(1, max_calls))
            round_start, round_acked = next_id, 0
            while True:
                ids = range(next_id, next_id + rows_per_commit)
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.executemany(INSERT, [(i, payload) for i in ids])
                    conn.execute("UPDATE tally SET n = n + ? WHERE k = 1", (rows_per_commit,))
                    conn.execute("COMMIT")
                except apsw.Error:
                    if not vfs.disk.dead:
                        raise
                    break
                acked.update(ids)  # the acknowledgement: only after COMMIT returned
                round_acked += 1
                next_id += rows_per_commit
            syncs = vfs.disk.syncs
            with contextlib.suppress(apsw.Error):
                conn.close()
            assert vfs.disk.image is not None
            vfs.disk = Disk(vfs.disk.image)  # reboot onto what survived
            conn = connect(vfs, settings)
            integrity = "\n".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check"))
            present = {r[0] for r in conn.execute("SELECT id FROM ledger")}
            tally = conn.execute("SELECT n FROM tally").fetchone()[0]
            missing = acked - present
            acked -= missing  # each lost commit is counted once; ids are never reused
            unacked = [i for i in present if i >= round_start and i not in acked]
            next_id = max(next_id, max(present, default=0) + 1)
            results.append(
                Cut(
                    acked=round_acked,
                    lost=len(missing) // rows_per_commit,
                    kept_unacked=len(unacked) // rows_per_commit,
                    integrity=integrity,
                    consistent=tally == len(present),
                    syncs=syncs,
                )
            )
        with contextlib.suppress(apsw.Error):
            conn.close()
    finally:
        vfs.close()
    return Result(settings.synchronous_level, results)
