"""The embedded engine: PRAGMAs, permissions, driver choice and refusal, error mapping."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import libsql_experimental
import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert, select

from autoforge_data.db import migrate
from autoforge_data.db.engine import Database
from autoforge_data.db.types import F32Vector, pack_f32, unpack_f32
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.errors import Busy, ConfigError, Corrupt, InvalidInput
from autoforge_data.services import prompts as svc
from conftest import settings_for, unique_email


def _pragma(db: Database, name: str) -> object:
    with UnitOfWork(db) as uow:
        return uow.fetchone(f"PRAGMA {name}")[0]


def test_pragmas_per_profile(tmp_path: Path) -> None:
    """WAL, foreign keys and busy timeout always; synchronous NORMAL in dev and FULL in prod."""
    for profile, level in (("dev", 1), ("prod", 2)):
        s = settings_for("embedded", tmp_path / profile) if profile == "dev" else None
        if s is None:
            from autoforge_data.settings import Settings

            s = Settings.load(profile, base_dir=tmp_path, data_dir=tmp_path / profile)
        with Database(s) as db:
            assert _pragma(db, "journal_mode") == "wal"
            assert _pragma(db, "foreign_keys") == 1
            assert _pragma(db, "busy_timeout") == 5000
            assert _pragma(db, "synchronous") == level


def test_private_permissions(tmp_path: Path) -> None:
    """The data folder is 0700 and the database file 0600 (WAL files inherit it)."""
    s = settings_for("embedded", tmp_path)
    with Database(s) as db:
        migrate.upgrade(db)
        svc.create_user(db, unique_email(), "x")
        path = db.target.path
        assert path is not None
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        for f in (path, Path(f"{path}-wal")):
            assert stat.S_IMODE(os.stat(f).st_mode) == 0o600


def test_file_with_libsql_vector_index_is_refused_by_sqlite3(tmp_path: Path) -> None:
    """A file holding a libSQL vector index is never opened with stdlib sqlite3."""
    s = settings_for("embedded", tmp_path)
    path = s.target.path
    assert path is not None
    path.parent.mkdir(parents=True)
    conn = libsql_experimental.connect(str(path))
    conn.execute("CREATE TABLE v (id INTEGER PRIMARY KEY, e F32_BLOB(3))")
    conn.execute("CREATE INDEX v_idx ON v (libsql_vector_idx(e))")
    conn.commit()
    conn.close()
    with pytest.raises(ConfigError, match="libSQL vector index") as info:
        Database(s)
    assert "AFDB_DB_DRIVER=libsql" in info.value.one_line()
    with Database(settings_for("embedded", tmp_path, db_driver="libsql")) as db:
        assert db.driver == "libsql"
        with UnitOfWork(db) as uow:
            assert uow.fetchone("SELECT count(*) FROM v")[0] == 0


def test_two_drivers_on_one_file_refused(tmp_path: Path) -> None:
    """One process never opens one file with two SQLite libraries."""
    with (
        Database(settings_for("embedded", tmp_path)),
        pytest.raises(ConfigError, match="already open"),
    ):
        Database(settings_for("embedded", tmp_path, db_driver="libsql"))


def test_libsql_driver_contract_and_encryption(tmp_path: Path) -> None:
    """The libSQL driver runs the use cases; an encrypted file needs the right key."""
    with Database(settings_for("embedded", tmp_path, encryption_key="k-one")) as db:
        assert db.driver == "libsql"
        migrate.upgrade(db)
        user = svc.create_user(db, unique_email(), "enc")
        p = svc.create_prompt(db, user.id, "T", "secret text")
        assert svc.edit_prompt(db, p.id, content="v2").current_version == 2
        with pytest.raises(InvalidInput):  # CHECK constraint, mapped from libSQL's ValueError
            with UnitOfWork(db, write=True) as uow:
                uow.execute("UPDATE prompts SET status = 'x' WHERE id = ?", (p.id,))
    with Database(settings_for("embedded", tmp_path, encryption_key="k-two")) as db:
        with pytest.raises(Corrupt):
            svc.get_prompt(db, p.id)
    raw = (tmp_path / "data" / "dev.db").read_bytes()
    assert b"secret text" not in raw


def test_second_writer_waits_then_busy(tmp_path: Path) -> None:
    """A writer blocked by another one waits the busy timeout, then gets Busy (not a crash)."""
    s = settings_for("embedded", tmp_path, busy_timeout_ms=200)
    with Database(s) as db:
        migrate.upgrade(db)
        holding = threading.Event()
        release = threading.Event()

        def hold() -> None:
            with UnitOfWork(db, write=True):
                holding.set()
                release.wait(5)

        t = threading.Thread(target=hold)
        t.start()
        holding.wait(5)
        try:
            with pytest.raises(Busy), UnitOfWork(db, write=True):
                pass
        finally:
            release.set()
            t.join()
        svc.create_user(db, unique_email(), "after")  # the pool recovered


def test_vector_type_checks_before_sql(tmp_path: Path) -> None:
    """F32Vector binds float32 LE bytes and rejects wrong dimension, NaN and inf before SQL."""
    assert unpack_f32(pack_f32([1.0, 2.5, -3.0], 3)).tolist() == [1.0, 2.5, -3.0]
    for bad in ([1.0, 2.0], [1.0, float("nan"), 0.0], [float("inf"), 0.0, 0.0], b"\x00" * 8):
        with pytest.raises(InvalidInput):
            pack_f32(bad, 3)  # type: ignore[arg-type]
    md = MetaData()
    t = Table("vecs", md, Column("id", Integer, primary_key=True), Column("v", F32Vector(3)))
    with Database(settings_for("embedded", tmp_path)) as db:
        md.create_all(db.engine)
        with db.engine.begin() as conn:
            conn.execute(insert(t), [{"v": [0.5, 1.0, 2.0]}])
            with pytest.raises(InvalidInput):
                conn.execute(insert(t), [{"v": [0.5, 1.0]}])
            got = conn.execute(select(t.c.v)).scalar_one()
            ddl = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name='vecs'").scalar()
        assert list(got) == [0.5, 1.0, 2.0]
        assert "F32_BLOB(3)" in ddl


def test_rollback_by_default(tmp_path: Path) -> None:
    """A unit of work without commit() leaves nothing behind; after-commit hooks do not run."""
    with Database(settings_for("embedded", tmp_path)) as db:
        migrate.upgrade(db)
        ran: list[int] = []
        with UnitOfWork(db, write=True) as uow:
            uow.execute("INSERT INTO users (id, email, username) VALUES ('A', 'a@x.io', 'a')")
            uow.after_commit(lambda: ran.append(1))
        assert ran == []
        with UnitOfWork(db) as uow:
            assert uow.fetchone("SELECT count(*) FROM users")[0] == 0
        with UnitOfWork(db, write=True) as uow:
            uow.execute("INSERT INTO users (id, email, username) VALUES ('A', 'a@x.io', 'a')")
            uow.after_commit(lambda: ran.append(1))
            uow.commit()
        assert ran == [1]


def test_litestream_owns_checkpoints_when_replicating(tmp_path: Path) -> None:
    """With AFDB_REPLICATE_URL the app never checkpoints (Litestream does); without, SQLite does."""
    for url, expected in ((None, 1000), (f"file://{tmp_path}/replica", 0)):
        settings = settings_for("embedded", tmp_path / str(expected), replicate_url=url)
        with Database(settings) as database, database.writes.connection() as conn:
            cur = conn.cursor()
            cur.execute("PRAGMA wal_autocheckpoint")
            assert cur.fetchone()[0] == expected
