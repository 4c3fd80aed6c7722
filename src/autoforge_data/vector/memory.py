"""The ``memory`` vector index: a faiss HNSW graph that holds the vectors, the filter mirror,
snapshots on disk and the journal replay (see :mod:`autoforge_data.vector.index`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, cast

import numpy as np

from autoforge_data.db.engine import Database
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.errors import ConfigError, Corrupt
from autoforge_data.vector.ann import Ann, IndexOptions
from autoforge_data.vector.index import ExactIndex
from autoforge_data.vector.mirror import Rows, meta_rows
from autoforge_data.vector.snapshot import read_snapshot, write_snapshot
from autoforge_data.vector.store import ModelRow

log = logging.getLogger(__name__)


class MemoryIndex(ExactIndex):
    """faiss HNSW holding the vectors + filter mirror, persisted as a snapshot; the default."""

    name = "memory"

    def __init__(
        self,
        db: Database,
        model: ModelRow,
        *,
        folder: Path | None = None,
        options: IndexOptions | None = None,
    ) -> None:
        super().__init__(db, model, options=options)
        self.folder = folder

    def _wants_ann(self, rows: Rows) -> bool:
        return rows.live >= self.opts.small

    def _build_ann(self, rows: Rows) -> Ann:
        ann = super()._build_ann(rows)
        self._enable_codes(rows)
        return ann

    def _enable_codes(self, rows: Rows) -> None:
        """Sign-bit codes for filtered searches (cosine only: a code holds a direction, not
        the length an L2 distance also needs)."""
        if self.opts.use_codes and self.model.metric == "cosine":
            rows.enable_codes()

    def _expect(self) -> dict[str, Any]:
        return {
            "model": self.model.name,
            "dimension": self.dimension,
            "metric": self.model.metric,
            "database": self.db.target.describe(),
        }

    def open(self) -> MemoryIndex:
        """Load the snapshot and replay the journal; rebuild (and save) if that is not possible."""
        if self.folder is not None:
            try:
                if self._load():
                    return self
            except (Corrupt, OSError, ValueError) as exc:
                log.warning("index snapshot in %s not used (%s): rebuilding", self.folder, exc)
        self.rebuild()
        return self

    def rebuild(self) -> None:
        """Build from libSQL (see :meth:`ExactIndex.rebuild`) and save a snapshot."""
        super().rebuild()
        if self.folder is not None:
            self.save()

    def _load(self) -> bool:
        assert self.folder is not None
        start = time.perf_counter()
        dim, metric = self.dimension, self.model.metric

        def load_ann(path: Path, count: int) -> Ann:
            return Ann.load(path, count, dim, metric, self.opts)

        snap = read_snapshot(self.folder, self._expect(), load_ann)
        if snap is None:
            return False
        self._check_journal_covers(snap.seq)
        ann = cast(Ann | None, snap.ann)
        vectors = snap.vectors if ann is None else ann.matrix()
        if vectors is None:
            raise Corrupt("snapshot holds no vectors")
        rows = Rows(dim, metric, snap.nums, vectors)
        if ann is not None:
            rows.adopt(ann)
            self._enable_codes(rows)
        keys = list(self._rows.keys)
        rows.track(keys)
        rows.set_meta(meta_rows(self.db, keys=keys), keys)
        if ann is None and self._wants_ann(rows):
            ann = self._build_ann(rows)
        with self._lock:
            self._rows, self._ann, self._seq = rows, ann, snap.seq
        self._refresh_checked()
        self._timings["load_s"] = round(time.perf_counter() - start, 3)
        return True

    def _check_journal_covers(self, seq: int) -> None:
        """Corrupt if entries after ``seq`` were pruned, or the snapshot is of another database."""
        with UnitOfWork(self.db, snapshot=True) as uow:
            low, _ = uow.fetchone("SELECT min(seq), max(seq) FROM vector_journal")
            counter = uow.fetchone("SELECT seq FROM sqlite_sequence WHERE name = 'vector_journal'")
        last = int(counter[0]) if counter is not None else 0
        if seq > last:
            raise Corrupt(f"snapshot is at journal {seq}, the database only at {last}")
        if (low is not None and int(low) > seq + 1) or (low is None and last > seq):
            raise Corrupt(f"snapshot is at journal {seq}; entries after it were pruned")

    def _refresh_checked(self) -> None:
        """Replay the journal, then compare the vector count with libSQL's (when nobody wrote)."""
        with UnitOfWork(self.db, snapshot=True) as uow:
            count = int(uow.fetchone(f"SELECT count(*) FROM {self.store.table}")[0])
            head = int(uow.fetchone("SELECT coalesce(max(seq), 0) FROM vector_journal")[0])
        self.refresh()
        if self._seq == head and self._rows.live != count:
            raise Corrupt(f"snapshot + journal give {self._rows.live} vectors, libSQL has {count}")

    def save(self, folder: Path | None = None) -> Path:
        """Write a snapshot of the current state (consistent copy taken under the lock)."""
        target = folder or self.folder
        if target is None:
            raise ConfigError("this index has no snapshot folder", hint="pass data_dir")
        vecs: np.ndarray | None = None
        blob: np.ndarray | None = None
        with self._lock:  # with a graph: its file holds the vectors, nums mark tombstones -1
            if self._ann is not None:
                nums, blob = self._rows.saved_nums().copy(), self._ann.serialize()
            else:
                nums, vecs = (a.copy() for a in self._rows.live_arrays())
            seq, unsaved = self._seq, self._unsaved
        info = {**self._expect(), "seq": seq}
        save_ann = None
        if blob is not None:
            data = blob

            def save_ann(path: Path) -> None:
                data.tofile(str(path))

        path = write_snapshot(target, info, nums, vecs, save_ann)
        with self._lock:
            self._unsaved -= unsaved
        return path

    def _autosave(self) -> None:
        if self.folder is not None:
            try:
                self.save()
            except Exception as exc:  # a full disk or any save failure must not break searches
                log.warning("index snapshot not saved: %s", exc)

    def close(self) -> None:
        """Save a snapshot if anything changed since the last one, then release the memory."""
        if self.folder is not None and self._unsaved and not self._closed:
            self._autosave()
        super().close()

    def _apply_vectors(self, touched: list[int], vectors: dict[int, np.ndarray]) -> None:
        if self._ann is not None and len(touched) > self._rows.live // 4:
            # Many changes at once (a re-embedding): a fresh build after them is faster than
            # adding them to the graph one by one, and searches better.
            self._rows.detach()
            self._ann = None
        super()._apply_vectors(touched, vectors)

    def _housekeep(self, changed: int) -> None:
        """Build the graph once the rows are many enough; rebuild it when tombstones (changed
        or deleted vectors) are an eighth of it."""
        rows = self._rows
        if self._ann is None:
            if self._wants_ann(rows):
                self._ann = self._build_ann(rows)
            elif rows.dead > max(1024, rows.n // 8):
                rows.compact()
        elif rows.dead > max(1_000, rows.n // 8):
            self._ann = self._build_ann(rows)
