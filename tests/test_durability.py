"""Durability: synchronous=FULL (staging, prod) keeps every acknowledged commit through a power cut.

Power cuts are simulated by an APSW VFS that drops every write not yet fsynced
(``tests/durability_vfs.py``); the writer runs with the engine's own PRAGMAs, commits one row per
transaction and acknowledges a commit only after COMMIT returned. After each cut the database is
reopened from the surviving image only. The sensitivity arm runs the same harness with NORMAL
(profile dev), which in WAL mode fsyncs only at checkpoints and must lose acknowledged commits.
The full measurement (25 cuts per setting and commit throughput) is ``bench/durability.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from autoforge_data.db.engine import Database
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.settings import Settings
from durability_vfs import PowerCut, PowerLossVFS, SimVFSFile, run_power_cuts

SEED = 20250605
CUTS = 25  # ~0.3 s per setting: the simulated disk is memory


def profile(tmp_path: Path, env: str) -> Settings:
    """The settings of a profile, with no override of ``synchronous``."""
    return Settings.load(env, base_dir=tmp_path, data_dir=tmp_path / "data")


def test_power_cut_keeps_exactly_the_synced_writes() -> None:
    """The simulated disk: a cut keeps synced bytes, drops unsynced ones, then refuses all I/O."""
    vfs = PowerLossVFS()
    try:
        handle = SimVFSFile(vfs, "/f", delete_on_close=False)
        handle.xWrite(b"synced", 0)
        handle.xSync(0)
        handle.xWrite(b"SYNCED-NOT", 0)
        handle.xTruncate(4)
        assert handle.xRead(100, 0) == b"SYNC"  # reads see the page cache
        vfs.disk.arm(1)
        with pytest.raises(PowerCut):
            handle.xSync(0)
        with pytest.raises(PowerCut):
            handle.xWrite(b"late", 0)
        assert vfs.disk.image == {"/f": b"synced"}
    finally:
        vfs.close()


@pytest.mark.parametrize("keep", [0.0, 0.5], ids=["unsynced-dropped", "unsynced-half-kept"])
def test_full_loses_no_acknowledged_commit_in_power_cuts(tmp_path: Path, keep: float) -> None:
    """Prod's FULL through power cuts: no acknowledged commit lost, integrity ok, none partial."""
    result = run_power_cuts(profile(tmp_path, "prod"), cuts=CUTS, seed=SEED, keep=keep)
    print(f"FULL keep={keep}: {result.acked} acknowledged, {result.lost} lost in {CUTS} cuts")
    assert result.setting == "FULL"
    assert result.acked > CUTS * 50, "too few commits between cuts to mean anything"
    assert result.lost == 0, [c.lost for c in result.cuts]
    assert result.ok, [(c.integrity, c.consistent) for c in result.cuts]


def test_normal_loses_acknowledged_commits_in_power_cuts(tmp_path: Path) -> None:
    """Sensitivity: dev's NORMAL, same harness and cuts, loses acknowledged commits (intact)."""
    result = run_power_cuts(profile(tmp_path, "dev"), cuts=CUTS, seed=SEED)
    print(f"NORMAL: {result.acked} acknowledged, {result.lost} lost in {CUTS} cuts")
    assert result.setting == "NORMAL"
    assert result.lost > 0, "the harness did not drop unsynced writes"
    assert sum(1 for c in result.cuts if c.lost) >= CUTS // 2
    assert result.ok, [(c.integrity, c.consistent) for c in result.cuts]


@pytest.mark.parametrize(
    ("env", "override", "expected"),
    [
        ("dev", None, 1),
        ("staging", None, 2),
        ("prod", None, 2),
        ("prod", "NORMAL", 1),
        ("dev", "FULL", 2),
    ],
)
def test_engine_applies_the_profiles_synchronous_level(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: str, override: str | None, expected: int
) -> None:
    """Connections run synchronous FULL in staging/prod, NORMAL in dev, or AFDB_SYNCHRONOUS."""
    if override is not None:
        monkeypatch.setenv("AFDB_SYNCHRONOUS", override)
    db = Database(profile(tmp_path, env))
    try:
        with UnitOfWork(db, write=True) as uow:
            in_write = uow.fetchone("PRAGMA synchronous")[0]
            uow.commit()
        with UnitOfWork(db) as uow:
            in_read = uow.fetchone("PRAGMA synchronous")[0]
            journal = uow.fetchone("PRAGMA journal_mode")[0]
        with db.engine.connect() as conn:
            in_engine = conn.exec_driver_sql("PRAGMA synchronous").scalar_one()
    finally:
        db.close()
    assert (in_write, in_read, in_engine) == (expected, expected, expected)
    assert journal == "wal"
