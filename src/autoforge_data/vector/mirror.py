"""The in-memory side of an index: vectors, their nums and a mirror of what search filters on.

:class:`Rows` keeps one row per indexed prompt: its float32 vector (the exact re-rank and the
exact scans read it), its stable ``num``, and the filter columns copied from ``prompts`` (status
code, owner as a small integer, ``created_at`` in ms) and, for the metadata keys searches have
filtered on, the key's value as a small integer code (``json_extract`` done by SQL, so the mirror
compares values exactly as SQL's ``=`` does). Filters on those columns are numpy masks
(microseconds); selective ones (owner, metadata value, created range) are read from a sorted copy
of the column (binary search, rebuilt after a change), so a 1% filter never passes over all
rows. :func:`filter_sql` is the one place that turns a
:class:`~autoforge_data.vector.base.Filter` into a WHERE clause, shared with the keyword search
and the re-check of results, so every path reads a filter the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

import numpy as np

from autoforge_data.db.engine import Database
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.errors import InvalidInput
from autoforge_data.vector.base import FILTER_STATUSES, Filter, Nums, Vector, checked_meta_key
from autoforge_data.vector.codes import SignCodes
from autoforge_data.vector.store import ModelRow

STATUS_CODES = {name: code for code, name in enumerate(FILTER_STATUSES)}
NO_STATUS = -1  # a row whose prompt row was not (yet) seen: never matches a status filter
SQL_BATCH = 500  # nums per IN (...) list
META_PAGE = 5_000  # prompts per page when the whole filter mirror is read
NO_VALUE = -1  # code of a row without the metadata key (or not yet seen): never matches
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MetaValue = str | int | float | None  # what json_extract returns for a scalar (or JSON text)
MetaRow = tuple[int, str, str, int, tuple[MetaValue, ...]]  # num, status, owner, ms, key values


# --- time bounds ----------------------------------------------------------------------------------


def iso_to_ms(text: str) -> int:
    """Milliseconds since the epoch of an ISO-8601 time, rounded up; naive times are UTC."""
    try:
        stamp = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise InvalidInput(
            f"invalid time {text!r}", hint="use ISO-8601, e.g. 2026-01-31T12:00:00Z"
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    micros = (stamp - _EPOCH) // timedelta(microseconds=1)  # integers: no float rounding
    return -(-micros // 1000)


def ms_to_iso(ms: int) -> str:
    """The stored text form of a time (fixed width, sorts as it reads)."""
    stamp = _EPOCH + timedelta(milliseconds=ms)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def created_bounds(flt: Filter) -> tuple[int | None, int | None]:
    """The filter's created range in ms: [from, to), checked."""
    lo = None if flt.created_from is None else iso_to_ms(flt.created_from)
    hi = None if flt.created_to is None else iso_to_ms(flt.created_to)
    if lo is not None and hi is not None and lo >= hi:
        raise InvalidInput("created_from must be before created_to", hint="the range is [from, to)")
    return lo, hi


def parse_created(texts: Sequence[str]) -> np.ndarray:
    """Stored ``created_at`` texts as int64 ms (numpy parses the usual form in one pass)."""
    try:
        stamps = np.array([t.removesuffix("Z") for t in texts], dtype="datetime64[ms]")
        return stamps.astype(np.int64)
    except ValueError:  # an unusual but valid form somewhere: parse one by one
        return np.array([iso_to_ms(t) for t in texts], dtype=np.int64)


# --- filters as SQL -------------------------------------------------------------------------------


def filter_conditions(flt: Filter, alias: str = "p") -> tuple[list[str], list[Any]]:
    """The filter's conditions on ``prompts`` (as ``alias``), to be AND-ed, and their parameters.

    Created bounds are compared in the stored form (UTC, milliseconds, ``Z``), whatever offset
    the filter was written with. Metadata keys (validated by ``Filter``: letters, digits, ``_``)
    are inlined in the JSON path, so SQLite can use an expression index on
    ``json_extract(metadata, '$.<key>')`` (the libsql backend creates them for hot keys).
    """
    if alias not in ("p", "prompts"):
        raise InvalidInput(f"invalid table alias {alias!r}")
    parts: list[str] = []
    params: list[Any] = []
    if flt.status is not None:
        parts.append(f"{alias}.status IN ({','.join('?' * len(flt.status))})")
        params += list(flt.status)
    if flt.owner_id is not None:
        parts.append(f"{alias}.owner_id = ?")
        params.append(flt.owner_id)
    lo, hi = created_bounds(flt)
    if lo is not None:
        parts.append(f"{alias}.created_at >= ?")
        params.append(ms_to_iso(lo))
    if hi is not None:
        parts.append(f"{alias}.created_at < ?")
        params.append(ms_to_iso(hi))
    for key, value in flt.metadata.items():
        parts.append(f"json_extract({alias}.metadata, '$.{checked_meta_key(key)}') = ?")
        params.append(int(value) if isinstance(value, bool) else value)
    return parts, params


def filter_sql(flt: Filter, alias: str = "p") -> tuple[str, list[Any]]:
    """``AND ...`` conditions on ``prompts`` (as ``alias``) for a filter, and their parameters."""
    parts, params = filter_conditions(flt, alias)
    return "".join(f" AND {p}" for p in parts), params


def allowed_nums(db: Database, flt: Filter) -> Nums:
    """Nums of every prompt the filter allows, evaluated in SQL (used for metadata keys)."""
    where, params = filter_sql(flt)
    with UnitOfWork(db) as uow:
        rows = uow.fetchall(
            "SELECT k.num FROM prompt_keys k JOIN prompts p ON p.id = k.prompt_id "
            f"WHERE 1 = 1{where}",
            tuple(params),
        )
    return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))


# --- reads the indexes and the indexing pipeline share -------------------------------------------


def _batches(items: Sequence[Any], size: int = SQL_BATCH) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _meta_sql(keys: Sequence[str]) -> str:
    """The filter-column query, plus one ``json_extract`` per mirrored metadata key."""
    for key in keys:
        Filter(metadata={key: ""})  # validates the key: letters, digits, _ (inlined below)
    extra = "".join(f", json_extract(p.metadata, '$.{key}')" for key in keys)
    return (
        f"SELECT k.num, p.status, p.owner_id, p.created_at{extra} "
        "FROM prompt_keys k JOIN prompts p ON p.id = k.prompt_id"
    )


def meta_rows(
    db: Database, nums: Sequence[int] | None = None, keys: Sequence[str] = ()
) -> list[MetaRow]:
    """Filter columns (and the values of metadata ``keys``) of some prompts (all when ``nums``
    is None). All prompts are read in pages of num order, so the Python objects alive at once
    stay few (a 50k-prompt load otherwise leaves ~20 MB of freed heap behind)."""
    sql = _meta_sql(keys)
    out: list[MetaRow] = []
    with UnitOfWork(db) as uow:
        if nums is None:
            last = -1
            while page := uow.fetchall(
                f"{sql} WHERE k.num > ? ORDER BY k.num LIMIT ?", (last, META_PAGE)
            ):
                out += _meta_tuples(page)
                last = int(page[-1][0])
        else:
            for chunk in _batches(list(nums)):
                marks = ",".join("?" * len(chunk))
                out += _meta_tuples(uow.fetchall(f"{sql} WHERE k.num IN ({marks})", tuple(chunk)))
    return out


def _meta_tuples(raw: Sequence[Any]) -> list[MetaRow]:
    created = parse_created([str(r[3]) for r in raw]) if raw else np.empty(0, np.int64)
    return [
        (int(r[0]), str(r[1]), str(r[2]), int(c), tuple(r[4:]))
        for r, c in zip(raw, created.tolist(), strict=True)
    ]


def metadata_covered(db: Database) -> bool:
    """True if the filter journal trigger records metadata changes (migration 0004 and later):
    only then can a mirror of metadata values be kept current from the journal."""
    with UnitOfWork(db) as uow:
        row = uow.fetchone(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?",
            ("trg_prompts_filter_journal",),
        )
    return row is not None and "metadata" in str(row[0]).split(" ON ")[0]


def stored_versions(
    db: Database, model: ModelRow, prompt_ids: Sequence[str]
) -> dict[str, tuple[int, str]]:
    """(version, content hash) of the stored vector per prompt id, for one model."""
    table = model.table  # validated by VectorStore / table_for
    out: dict[str, tuple[int, str]] = {}
    with UnitOfWork(db) as uow:
        for chunk in _batches(list(prompt_ids)):
            marks = ",".join("?" * len(chunk))
            for r in uow.fetchall(
                f"SELECT prompt_id, version, content_hash FROM {table} "
                f"WHERE prompt_id IN ({marks})",
                tuple(chunk),
            ):
                out[str(r[0])] = (int(r[1]), str(r[2]))
    return out


def stored_vectors(db: Database, model: ModelRow, prompt_ids: Sequence[str]) -> dict[str, Vector]:
    """The stored vector per prompt id (to keep it when only the version number moved)."""
    out: dict[str, Vector] = {}
    with UnitOfWork(db) as uow:
        for chunk in _batches(list(prompt_ids)):
            marks = ",".join("?" * len(chunk))
            for r in uow.fetchall(
                f"SELECT prompt_id, embedding FROM {model.table} WHERE prompt_id IN ({marks})",
                tuple(chunk),
            ):
                out[str(r[0])] = np.frombuffer(r[1], dtype="<f4").astype(np.float32)
    return out


def fetch_vectors(db: Database, model: ModelRow, nums: Sequence[int]) -> dict[int, Vector]:
    """The stored vectors of some nums (absent nums have none)."""
    out: dict[int, Vector] = {}
    with UnitOfWork(db) as uow:
        for chunk in _batches(list(nums)):
            marks = ",".join("?" * len(chunk))
            for r in uow.fetchall(
                f"SELECT id, embedding FROM {model.table} WHERE id IN ({marks})", tuple(chunk)
            ):
                out[int(r[0])] = np.frombuffer(r[1], dtype="<f4")
    return out


def stale_count(db: Database, model: ModelRow) -> int:
    """How many prompts have no vector of this model, or one of an older version."""
    with UnitOfWork(db) as uow:
        row = uow.fetchone(
            f"SELECT count(*) FROM prompts p LEFT JOIN {model.table} e ON e.prompt_id = p.id "
            "WHERE e.id IS NULL OR e.version <> p.current_version"
        )
    return int(row[0])


# --- the rows ------------------------------------------------------------------------------------


class VectorOwner(Protocol):
    """Storage that owns the vectors of the rows (the ANN graph): row i is its vector i."""

    def add(self, vectors: np.ndarray) -> None:
        """Append vectors."""

    def matrix(self) -> np.ndarray:
        """The stored vectors as an (n, d) float32 view."""


class Rows:
    """Vectors, nums and filter columns aligned by row; deleted rows are tombstones until compacted.

    The vectors are a numpy matrix of their own, or (:meth:`adopt`) a view of the storage of an
    ANN graph that holds row i as its vector i: then they exist once in memory, a changed vector
    is a new row (the old one a tombstone, as the graph cannot change a vector in place), and
    :meth:`compact` or :meth:`detach` take a copy back. Nums of -1 (from a snapshot) are rows
    that were tombstones when it was saved.

    Not thread-safe: the owning index serialises access with its lock.
    """

    def __init__(self, dimension: int, metric: str, nums: Nums, vectors: np.ndarray) -> None:
        self.dimension = dimension
        self.metric = metric
        n = len(nums)
        self.n = n  # rows in use (live + tombstones)
        self.vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        self.owner_of_vecs: VectorOwner | None = None
        self.nums = np.array(nums, dtype=np.int64)
        self.alive = self.nums >= 0
        self.status = np.full(n, NO_STATUS, dtype=np.int8)
        self.owner = np.full(n, -1, dtype=np.int32)
        self.created = np.zeros(n, dtype=np.int64)
        self.sqnorm = self._sqnorms(self.vecs) if metric == "l2" else None
        # sign-bit codes of the rows (see codes.py), kept once enable_codes() is called
        self.coder: SignCodes | None = None
        self.codes: np.ndarray | None = None
        self.owners: dict[str, int] = {}
        # mirrored metadata keys: per key, a code per row and the code of each value seen
        self.keys: dict[str, tuple[np.ndarray, dict[MetaValue, int]]] = {}
        # per column: rows sorted by value and the sorted values (dropped on any change)
        self._sorted: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.dead = n - int(np.count_nonzero(self.alive))
        top = int(self.nums.max()) + 1 if n else 1
        self.pos = np.full(max(top, 1024), -1, dtype=np.int64)
        live_rows = np.flatnonzero(self.alive)
        self.pos[self.nums[live_rows]] = live_rows
        if metric == "cosine" and n:
            self.vecs = _unit_rows(self.vecs)

    @property
    def live(self) -> int:
        """Rows that are not deleted."""
        return self.n - self.dead

    @staticmethod
    def _sqnorms(vecs: np.ndarray) -> np.ndarray:
        return cast(np.ndarray, np.einsum("ij,ij->i", vecs, vecs).astype(np.float32))

    def row_of(self, num: int) -> int:
        """The row of a num, or -1."""
        return int(self.pos[num]) if 0 <= num < len(self.pos) else -1

    def rows_of(self, nums: Nums) -> Nums:
        """Rows of many nums (-1 where absent)."""
        out = np.full(len(nums), -1, dtype=np.int64)
        ok = (nums >= 0) & (nums < len(self.pos))
        out[ok] = self.pos[nums[ok]]
        return out

    def enable_codes(self) -> None:
        """Keep a sign-bit code of every row from now on (the memory index's shortlist for
        filtered searches), centred on the mean of the rows (tombstones included: a centre
        only needs to be typical)."""
        if self.coder is not None:
            return
        coder = SignCodes.around_mean(self.vecs[: self.n])
        codes = np.zeros((len(self.nums), coder.words), dtype=np.uint64)
        codes[: self.n] = coder.encode(self.vecs[: self.n])
        self.coder, self.codes = coder, codes

    def adopt(self, owner: VectorOwner) -> None:
        """Use ``owner``'s storage as the vectors (it holds rows 0..n-1 in order)."""
        view = owner.matrix()
        if view.shape != (self.n, self.dimension):
            raise ValueError(f"storage holds {view.shape}, the rows are {self.n}")
        self.owner_of_vecs = owner
        self.vecs = view

    def detach(self) -> None:
        """Take the vectors back into a matrix of our own (the owner may then go)."""
        if self.owner_of_vecs is None:
            return
        own = np.zeros((len(self.nums), self.dimension), dtype=np.float32)
        own[: self.n] = self.vecs[: self.n]
        self.vecs, self.owner_of_vecs = own, None

    def upsert(self, num: int, vector: Vector) -> bool:
        """Set the vector of ``num``; True if it is a new row."""
        vec = np.asarray(vector, dtype=np.float32)
        if self.metric == "cosine":
            vec = _unit_rows(vec[None, :])[0]
        row = self.row_of(num)
        new = row < 0
        owner = self.owner_of_vecs
        if owner is not None:  # the graph cannot change a vector: tombstone, then a new row
            if not new:
                self.delete(num)
            row = self._append(num)
            owner.add(vec[None, :])
            self.vecs = owner.matrix()
        else:
            if new:
                row = self._append(num)
            elif not self.vecs.flags.writeable:  # a read-only view of a snapshot: copy it
                self.vecs = np.array(self.vecs)
            self.vecs[row] = vec
        if self.sqnorm is not None:
            self.sqnorm[row] = float(vec @ vec)
        if self.coder is not None and self.codes is not None:
            self.codes[row] = self.coder.encode_one(vec)
        return new

    def _append(self, num: int) -> int:
        self._sorted.clear()
        if self.n == len(self.nums):
            self._grow(self.n + max(1024, self.n // 8))
        if num >= len(self.pos):
            grown = np.full(max(num + 1, len(self.pos) * 2), -1, dtype=np.int64)
            grown[: len(self.pos)] = self.pos
            self.pos = grown
        row = self.n
        self.n += 1
        self.nums[row] = num
        self.alive[row] = True
        self.status[row] = NO_STATUS
        self.owner[row] = -1
        self.created[row] = 0
        for codes, _ in self.keys.values():
            codes[row] = NO_VALUE
        self.pos[num] = row
        return row

    def _grow(self, capacity: int) -> None:
        def grown(arr: np.ndarray, fill: Any) -> np.ndarray:
            out = np.full((capacity, *arr.shape[1:]), fill, dtype=arr.dtype)
            out[: self.n] = arr[: self.n]
            return out

        if self.owner_of_vecs is None:
            self.vecs = grown(self.vecs, 0.0)
        self.nums = grown(self.nums, -1)
        self.alive = grown(self.alive, False)
        self.status = grown(self.status, NO_STATUS)
        self.owner = grown(self.owner, -1)
        self.created = grown(self.created, 0)
        if self.sqnorm is not None:
            self.sqnorm = grown(self.sqnorm, 0.0)
        if self.codes is not None:
            self.codes = grown(self.codes, 0)
        self.keys = {k: (grown(c, NO_VALUE), v) for k, (c, v) in self.keys.items()}

    def delete(self, num: int) -> bool:
        """Tombstone the row of ``num``; True if there was one."""
        row = self.row_of(num)
        if row < 0:
            return False
        self._sorted.clear()
        self.alive[row] = False
        self.pos[num] = -1
        self.dead += 1
        return True

    def compact(self) -> None:
        """Drop tombstones (rows move; nums do not); the vectors become a matrix of our own."""
        keep = np.flatnonzero(self.alive[: self.n])
        self.vecs = np.ascontiguousarray(self.vecs[keep])
        self.owner_of_vecs = None
        self._take(keep)

    def permute(self, order: np.ndarray) -> None:
        """Reorder the rows (new row j is old row ``order[j]``), all but the vectors: the caller
        permuted their owner the same way and adopts it again (see ``Ann.permute``)."""
        if self.dead or self.owner_of_vecs is not None:
            raise ValueError("only compacted rows with vectors of their own can be permuted")
        if len(order) != self.n:
            raise ValueError(f"order of {len(order)} rows for {self.n}")
        self._take(order)

    def _take(self, rows: np.ndarray) -> None:
        """Keep ``rows`` of every column but the vectors, in that order."""
        self._sorted.clear()
        for name in ("nums", "alive", "status", "owner", "created"):
            setattr(self, name, getattr(self, name)[rows].copy())
        if self.sqnorm is not None:
            self.sqnorm = self.sqnorm[rows].copy()
        if self.codes is not None:
            self.codes = self.codes[rows].copy()
        self.keys = {k: (c[rows].copy(), v) for k, (c, v) in self.keys.items()}
        self.n = len(rows)
        self.dead = 0
        self.pos[:] = -1
        self.pos[self.nums] = np.arange(self.n, dtype=np.int64)

    def live_arrays(self) -> tuple[Nums, np.ndarray]:
        """(nums, vectors) of the live rows, as they would be saved."""
        keep = self.alive[: self.n]
        if self.dead == 0:
            return self.nums[: self.n], self.vecs[: self.n]
        return self.nums[: self.n][keep], self.vecs[: self.n][keep]

    def saved_nums(self) -> Nums:
        """Every row's num, -1 for tombstones (saved with a graph that still holds them)."""
        return np.where(self.alive[: self.n], self.nums[: self.n], -1)

    def set_meta(self, rows: Iterable[MetaRow], keys: Sequence[str] = ()) -> None:
        """Copy filter columns for the nums that have a row (others are ignored); the values
        at the end of each row are those of metadata ``keys`` (mirrored ones are kept)."""
        columns = [(i, self.keys[k]) for i, k in enumerate(keys) if k in self.keys]
        self._sorted.clear()
        for num, status, owner, created, values in rows:
            row = self.row_of(num)
            if row < 0:
                continue
            self.status[row] = STATUS_CODES.get(status, NO_STATUS)
            self.owner[row] = self.owners.setdefault(owner, len(self.owners))
            self.created[row] = created
            for i, (codes, known) in columns:
                codes[row] = _code(known, values[i])

    def track(self, keys: Sequence[str]) -> None:
        """Start mirroring metadata ``keys`` (no value known yet: fill them with set_meta)."""
        for key in keys:
            if key not in self.keys:
                self.keys[key] = (np.full(len(self.nums), NO_VALUE, dtype=np.int32), {})

    def _rows_sorted(self, name: str, column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        got = self._sorted.get(name)
        if got is None:
            order = np.argsort(column[: self.n], kind="stable")
            got = self._sorted[name] = (order, column[: self.n][order])
        return got

    def _rows_between(self, name: str, column: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """Rows whose ``column`` value is in [lo, hi) (any order), from the sorted column."""
        order, values = self._rows_sorted(name, column)
        info = np.iinfo(values.dtype)  # bounds in the column's type: a list costs a cast of it
        bounds = np.array([min(max(v, info.min), info.max) for v in (lo, hi)], dtype=values.dtype)
        a, b = np.searchsorted(values, bounds)
        return order[a:b]

    def select(self, flt: Filter) -> np.ndarray | None:
        """The live rows ``flt`` allows, sorted, found through sorted columns (no pass over all
        rows once sorted); None when only status conditions (half the rows, say) narrow it, or
        when the narrowest condition keeps more than 1/16 of the rows: a mask is cheaper then
        (10% of 50k real rows: sorting and checking the 5,000-row list cost ~100 us more than
        the mask's two passes). Every mirrored condition is used; the smallest list is checked
        against the others row by row."""
        parts: list[np.ndarray] = []
        if flt.owner_id is not None:
            code = self.owners.get(flt.owner_id)
            if code is None:
                return np.empty(0, np.int64)
            parts.append(self._rows_between("owner", self.owner, code, code + 1))
        for key, value in flt.metadata.items():
            codes, known = self.keys[key]
            mcode = known.get(int(value) if isinstance(value, bool) else value)
            if mcode is None:
                return np.empty(0, np.int64)
            parts.append(self._rows_between(f"meta:{key}", codes, mcode, mcode + 1))
        lo, hi = created_bounds(flt)
        if lo is not None or hi is not None:
            first = np.iinfo(np.int64).min if lo is None else lo
            last = np.iinfo(np.int64).max if hi is None else hi
            parts.append(self._rows_between("created", self.created, first, last))
        if not parts or min(map(len, parts)) > self.n // 16:
            return None
        parts.sort(key=len)
        out = parts[0]
        if len(parts) > 1 or flt.status is not None:
            ok = self._allows(out, flt)
            out = out[ok]
        out = out[self.alive[out]]
        return np.sort(out)

    def _allows(self, rows: np.ndarray, flt: Filter) -> np.ndarray:
        """Which of ``rows`` satisfy every mirrored condition of ``flt`` (vectorised per row)."""
        ok = np.ones(len(rows), dtype=bool)
        if flt.status is not None:
            column = self.status[rows]
            sel = column == STATUS_CODES[flt.status[0]]
            for s in flt.status[1:]:
                sel |= column == STATUS_CODES[s]
            ok &= sel
        if flt.owner_id is not None:
            ok &= self.owner[rows] == self.owners.get(flt.owner_id, -2)
        for key, value in flt.metadata.items():
            codes, known = self.keys[key]
            ok &= codes[rows] == known.get(int(value) if isinstance(value, bool) else value, -2)
        lo, hi = created_bounds(flt)
        if lo is not None:
            ok &= self.created[rows] >= lo
        if hi is not None:
            ok &= self.created[rows] < hi
        return ok

    def mirrors(self, flt: Filter) -> bool:
        """True if every metadata key of the filter is mirrored (the mask needs no SQL)."""
        return all(key in self.keys for key in flt.metadata)

    def mask(self, flt: Filter, allowed: Nums | None = None) -> np.ndarray:
        """Bool per row (length ``n``): live and allowed by ``flt`` (``allowed``: nums from SQL,
        given when the filter has metadata keys that are not mirrored)."""
        n = self.n
        mask = self.alive[:n].copy()
        if allowed is not None:  # SQL evaluated the whole filter
            sel = np.zeros(n, dtype=bool)
            rows = self.rows_of(allowed)
            sel[rows[rows >= 0]] = True
            return mask & sel
        for key, value in flt.metadata.items():
            codes, known = self.keys[key]
            code = known.get(int(value) if isinstance(value, bool) else value)
            if code is None:  # no prompt has this value
                return np.zeros(n, dtype=bool)
            mask &= codes[:n] == code
        if flt.status is not None:
            column = self.status[:n]
            sel = column == STATUS_CODES[flt.status[0]]  # np.isin cost ~440 µs at 50k, this ~2 µs
            for s in flt.status[1:]:
                sel |= column == STATUS_CODES[s]
            mask &= sel
        if flt.owner_id is not None:
            code = self.owners.get(flt.owner_id)
            if code is None:
                return np.zeros(n, dtype=bool)
            mask &= self.owner[:n] == code
        lo, hi = created_bounds(flt)
        if lo is not None:
            mask &= self.created[:n] >= lo
        if hi is not None:
            mask &= self.created[:n] < hi
        return mask

    def memory_bytes(self) -> int:
        """Bytes held by the arrays."""
        arrays: list[np.ndarray] = [
            self.vecs,
            self.nums,
            self.alive,
            self.status,
            self.owner,
            self.created,
            self.pos,
        ]
        if self.sqnorm is not None:
            arrays.append(self.sqnorm)
        if self.codes is not None:
            arrays.append(self.codes)
        arrays += [codes for codes, _ in self.keys.values()]
        return sum(a.nbytes for a in arrays)


def _code(known: dict[MetaValue, int], value: MetaValue) -> int:
    """The code of a metadata value (new values get the next one). Python's ``==`` on str, int
    and float agrees with SQL's ``=`` on json_extract results (1 == 1.0, '1' != 1)."""
    if value is None:
        return NO_VALUE
    code = known.get(value)
    if code is None:
        code = known[value] = len(known)
    return code


def _unit_rows(vecs: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (zero rows stay zero); a copy only when a row needs scaling."""
    norms = np.sqrt(np.einsum("ij,ij->i", vecs, vecs))  # no (n, d) temporary, unlike norm()
    if np.allclose(norms, 1.0, atol=1e-4):
        return vecs
    safe = np.where(norms > 0, norms, 1.0).astype(np.float32)
    return (vecs / safe[:, None]).astype(np.float32)
