"""Index snapshots on disk: written whole or not at all, checked before use.

Layout under ``<data_dir>/<profile>.index/<model-slug>/``::

    CURRENT                 the name of the snapshot in use (replaced atomically: the commit point)
    .lock                   flock: shared while a snapshot is read, exclusive while one is written
    snap-<seq>-<token>/     meta.json, nums.npy and either vectors.npy or, with an ANN index,
                            ann.faiss (the graph with the vectors it stores: each held once)

A new snapshot is written to a temporary folder (files 0600, fsynced), renamed, and only then named
in CURRENT; older snapshots are deleted afterwards. A crash at any point leaves the previous
snapshot in use. ``meta.json`` records the model, dimension, database, journal position and the
size and CRC-32 of every file; any mismatch makes :func:`read_snapshot` raise :class:`Corrupt`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from autoforge_data.errors import Corrupt
from autoforge_data.fsutil import atomic_write, ensure_private_dir, fsync_dir
from autoforge_data.vector.base import Nums
from autoforge_data.vector.store import ModelRow

FORMAT = 2  # 1: usearch graph + vectors.npy (read as "not a known format": rebuilt)
ANN_FILE = "ann.faiss"
T = TypeVar("T")


@dataclass
class Snapshot:
    """A verified snapshot: vectors (None when the ANN file holds them) are a copy-on-write
    memory map of the file; nums of -1 are rows that were tombstones in the saved graph."""

    folder: Path
    info: dict[str, Any]
    nums: Nums
    vectors: np.ndarray | None
    ann: Any  # whatever the caller's ``load_ann`` returned (None without an ANN file)

    @property
    def seq(self) -> int:
        """The journal position the snapshot includes."""
        return int(self.info["seq"])


def index_dir(data_dir: Path, profile: str, model: ModelRow) -> Path:
    """The snapshot folder of one model: ``<data_dir>/<profile>.index/<model-slug>``."""
    slug = model.table.removeprefix("emb_")  # validated by the store: [a-z0-9_]
    return Path(data_dir) / f"{profile}.index" / slug


@contextlib.contextmanager
def _locked(root: Path, kind: int) -> Iterator[None]:
    ensure_private_dir(root)
    fd = os.open(root / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, kind)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(8 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_write(path) as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


def write_snapshot(
    root: Path,
    info: dict[str, Any],
    nums: Nums,
    vectors: np.ndarray | None,
    save_ann: Callable[[Path], None] | None = None,
) -> Path:
    """Write a snapshot and make it current; returns its folder. ``info`` must hold ``seq``;
    give ``vectors`` or ``save_ann`` (whose file then holds them)."""
    if (vectors is None) == (save_ann is None):
        raise ValueError("a snapshot holds either vectors.npy or an ANN file with the vectors")
    with _locked(root, fcntl.LOCK_EX):
        token = secrets.token_hex(4)
        tmp = ensure_private_dir(root / f".tmp-{token}")
        try:
            _save_npy(tmp / "nums.npy", np.asarray(nums, dtype=np.int64))
            if vectors is not None:
                _save_npy(tmp / "vectors.npy", np.asarray(vectors, dtype=np.float32))
            if save_ann is not None:
                ann = tmp / ANN_FILE
                save_ann(ann)
                os.chmod(ann, 0o600)
                with open(ann, "rb") as fh:
                    os.fsync(fh.fileno())
            files = {
                p.name: {"size": p.stat().st_size, "crc32": _crc(p)} for p in sorted(tmp.iterdir())
            }
            meta = {
                **info,
                "format": FORMAT,
                "count": len(nums),
                "files": files,
                "written_at": time.time(),
            }
            with atomic_write(tmp / "meta.json") as fh:
                fh.write(json.dumps(meta, indent=1, sort_keys=True).encode())
            name = f"snap-{int(info['seq']):012d}-{token}"
            os.replace(tmp, root / name)
            fsync_dir(root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        with atomic_write(root / "CURRENT") as fh:
            fh.write(name.encode())
        for old in root.iterdir():
            if old.is_dir() and old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        return root / name


def read_snapshot(
    root: Path, expect: dict[str, Any], load_ann: Callable[[Path, int], T] | None = None
) -> Snapshot | None:
    """The current snapshot, verified against ``expect`` (model, dimension, ...); None if none.

    ``load_ann(path, count)`` loads the ANN file while the snapshot is locked against deletion.
    Raises :class:`Corrupt` naming what is wrong: damaged files, another model or database.
    """
    if not (root / "CURRENT").is_file():
        return None
    with _locked(root, fcntl.LOCK_SH):
        name = (root / "CURRENT").read_text(encoding="utf-8").strip()
        folder = root / name
        if not name.startswith("snap-") or not folder.is_dir():
            raise Corrupt(f"snapshot {name!r} named in {root / 'CURRENT'} is missing")
        info = _read_meta(folder)
        for key, value in expect.items():
            if info.get(key) != value:
                raise Corrupt(f"snapshot is for {key}={info.get(key)!r}, not {value!r}")
        _check_files(folder, info)
        count = int(info["count"])
        vectors = None
        try:
            nums = np.load(folder / "nums.npy", allow_pickle=False)
            if "vectors.npy" in info["files"]:
                vectors = np.load(folder / "vectors.npy", mmap_mode="c", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise Corrupt(f"snapshot arrays unreadable: {exc}") from None
        if nums.shape != (count,) or nums.dtype != np.int64:
            raise Corrupt(f"snapshot nums have shape {nums.shape} and type {nums.dtype}")
        if vectors is not None and (
            vectors.shape != (count, int(info["dimension"])) or vectors.dtype != np.float32
        ):
            raise Corrupt(f"snapshot vectors have shape {vectors.shape}, type {vectors.dtype}")
        ann = None
        if load_ann is not None and ANN_FILE in info["files"]:
            ann = load_ann(folder / ANN_FILE, count)
        return Snapshot(folder, info, nums, vectors, ann)


def _read_meta(folder: Path) -> dict[str, Any]:
    try:
        info = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise Corrupt(f"snapshot meta.json unreadable: {exc}") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise Corrupt("snapshot meta.json is not a known format")
    for key in ("seq", "count", "dimension", "files"):
        if key not in info:
            raise Corrupt(f"snapshot meta.json lacks {key!r}")
    return info


def _check_files(folder: Path, info: dict[str, Any]) -> None:
    files = info["files"]
    if (
        not isinstance(files, dict)
        or "nums.npy" not in files
        or ("vectors.npy" in files) == (ANN_FILE in files)
    ):
        raise Corrupt("snapshot meta.json lists no vectors (or two copies)")
    for fname, want in files.items():
        path = folder / str(fname)
        try:
            size = path.stat().st_size
        except OSError:
            raise Corrupt(f"snapshot file {fname} is missing") from None
        if size != want.get("size") or _crc(path) != want.get("crc32"):
            raise Corrupt(f"snapshot file {fname} is damaged (size or CRC-32 differs)")
