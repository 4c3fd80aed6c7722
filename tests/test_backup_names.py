"""Names that become files (ops/names.py) and online snapshots (ops/snapshot.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autoforge_data.db import migrate
from autoforge_data.db.engine import Database
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.errors import ConfigError, Corrupt, InvalidInput
from autoforge_data.ops.names import check_name, child_path
from autoforge_data.ops.snapshot import integrity_check, row_counts, snapshot_to
from conftest import settings_for

HOSTILE = [
    "../../etc/passwd",
    "%2e%2e/",
    "%2e%2e",
    "\uff0e\uff0e\uff0fetc",  # fullwidth dots and solidus
    "a\uff0eb",
    "nul\x00byte",
    "-o/tmp/x",
    "-rf",
    "x" * 300,
    "a/b",
    "a\\b",
    "..",
    ".",
    ".hidden",
    "",
    "Upper",
    "caf\u00e9",
    "a b",
    "a\nb",
]


@pytest.mark.parametrize("name", HOSTILE, ids=lambda n: repr(n)[:30])
def test_hostile_names_are_rejected(name: str, tmp_path: Path) -> None:
    """Traversal, encodings, non-ASCII, NUL, option injection and over-long names never pass."""
    folder = tmp_path / "backups"
    folder.mkdir()
    with pytest.raises(InvalidInput) as err:
        child_path(folder, name, ".db")
    assert err.value.hint
    assert list(folder.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backups"]


@pytest.mark.parametrize("name", ["prod-2026-11-27", "a", "b.1_x-y", "0" * 63])
def test_good_names_pass(name: str, tmp_path: Path) -> None:
    """Plain names come back unchanged and map to a file inside the folder."""
    assert check_name(name) == name
    assert child_path(tmp_path, name, ".db") == tmp_path / f"{name}.db"


def test_planted_symlinks_are_refused(tmp_path: Path) -> None:
    """A symlink at the target, or a folder that is a symlink, is refused."""
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = tmp_path / "backups"
    folder.mkdir()
    (folder / "x.db").symlink_to(outside / "x.db")
    with pytest.raises(InvalidInput):
        child_path(folder, "x", ".db")
    linked = tmp_path / "linked"
    linked.symlink_to(outside)
    with pytest.raises(InvalidInput):
        child_path(linked, "y", ".db")
    assert list(outside.iterdir()) == []


def _fill(db: Database, n: int) -> None:
    with UnitOfWork(db, write=True) as uow:
        uow.executemany(
            "INSERT INTO users (id, email, username) VALUES (?, ?, ?)",
            [(f"U{i:025d}", f"u{i}@example.com", f"u{i}") for i in range(n)],
        )
        uow.commit()


@pytest.mark.parametrize("driver", ["sqlite3", "libsql"])
def test_snapshot_is_a_private_consistent_copy(tmp_path: Path, driver: str) -> None:
    """Both methods: 0600, no temp leftovers, integrity ok with libSQL, counts as the source."""
    with Database(settings_for("embedded", tmp_path, db_driver=driver)) as db:
        migrate.upgrade(db)
        _fill(db, 50)
        info = snapshot_to(db, tmp_path / "snaps" / "one.db")
    assert info.method == ("sqlite3-backup-api" if driver == "sqlite3" else "locked-copy")
    assert info.row_counts["users"] == 50
    assert info.migration == migrate.code_head()
    assert os.stat(info.path).st_mode & 0o777 == 0o600
    assert [p.name for p in (tmp_path / "snaps").iterdir()] == ["one.db"]
    integrity_check(info.path)
    assert row_counts(info.path) == info.row_counts


def test_snapshot_of_a_remote_database_says_what_to_do(tmp_path: Path, sqld: object) -> None:
    """Remote mode has no file to snapshot: a ConfigError naming the alternatives."""
    with Database(settings_for("remote", tmp_path, sqld)) as db:  # type: ignore[arg-type]
        with pytest.raises(ConfigError) as err:
            snapshot_to(db, tmp_path / "x.db")
    assert "fork" in (err.value.hint or "")
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("content", [b"", b"hello, not a database" * 10, b"SQLite format 3\x00"])
def test_integrity_check_rejects_non_databases(tmp_path: Path, content: bytes) -> None:
    """Empty, foreign and truncated files are Corrupt."""
    path = tmp_path / "bad.db"
    path.write_bytes(content)
    with pytest.raises(Corrupt):
        integrity_check(path)


def test_snapshot_of_an_embedded_replica_file(tmp_path: Path, sqld: object) -> None:
    """A replica's local file is snapshotted under the replica's lock (its sync waits)."""
    from autoforge_data.services import prompts as svc

    with Database(settings_for("replica", tmp_path, sqld)) as db:  # type: ignore[arg-type]
        migrate.upgrade(db)
        db.replica.sync()
        svc.create_user(db, f"r{os.getpid()}-{tmp_path.name[-6:]}@example.com", "replica")
        info = snapshot_to(db, tmp_path / "replica-snap.db")
        with UnitOfWork(db) as uow:
            users = int(uow.fetchone("SELECT count(*) FROM users")[0])
    assert info.method == "locked-copy"
    integrity_check(info.path)
    assert info.row_counts["users"] == users >= 1
