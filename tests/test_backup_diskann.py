"""A database with libSQL's DiskANN index survives backup → verify → restore with its recall.

The snapshot of such a file is a locked copy of the main file and WAL (no VACUUM INTO, which
would rebuild the index): the restored index is the same graph, so recall@10 against exact
search stays ≥ 0.95 and the index's meta row is not duplicated.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from autoforge_data.db import migrate
from autoforge_data.db.engine import Database
from autoforge_data.ops.backup import BackupOptions, create_backup
from autoforge_data.ops.backup_restore import RestoreOptions, restore_backup
from autoforge_data.ops.backup_verify import VerifyOptions, verify_backup
from autoforge_data.ops.snapshot import integrity_check
from autoforge_data.vector.base import Filter
from autoforge_data.vector.libsql_index import LibsqlIndex
from conftest import settings_for
from test_libsql_index import clustered, fill, recall

N = 600


def test_diskann_survives_backup_verify_restore(tmp_path: Path) -> None:
    """recall@10 ≥ 0.95 after the round trip; integrity ok; verify used the libsql index."""
    settings = settings_for("embedded", tmp_path, db_driver="libsql", index_backend="libsql")
    queries = clustered(30, seed=2)
    with Database(settings) as db:
        migrate.upgrade(db)
        corpus = fill(db, clustered(N, seed=1))
        info = create_backup(db, BackupOptions(name="ann"))
    assert info.manifest.method == "locked-copy"
    assert info.manifest.row_counts[corpus.model.table] == N
    report = verify_backup(settings, VerifyOptions(name="ann"))
    assert report.ok, report.error
    assert any("libsql index" in note for note in report.notes), report.notes
    assert report.vector_hits == 10
    with Database(settings) as db:  # change the live database, so the restore has work to do
        with db.writes.connection() as conn:
            conn.execute(f"DELETE FROM {corpus.model.table} WHERE rowid % 2 = 0")
    restore_backup(settings, RestoreOptions(name="ann", yes=True))
    assert settings.target.path is not None
    integrity_check(settings.target.path)
    with Database(settings) as db:
        restored = replace(corpus, db=db)
        index = LibsqlIndex(db, corpus.model, create=False)
        r, _ = recall(restored, index, queries, Filter())
        meta = db.reads.checkout()
        try:
            rows = meta.execute("SELECT count(*) FROM libsql_vector_meta_shadow").fetchone()[0]
        finally:
            db.reads.checkin(meta)
    assert r >= 0.95, r
    assert rows == 1, "the index registry row was duplicated (what VACUUM INTO does)"
    assert np.isfinite(r)
