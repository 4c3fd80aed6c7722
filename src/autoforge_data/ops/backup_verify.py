"""Verify = a restore drill: fetch, check, decode into a temp file, then prove it works.

Every check restore relies on lives here, in the order it runs (cheapest first, nothing
trusted before it is checked): manifest parses and its HMAC matches → stored size and sha256
match while streaming → decrypt (authenticated chunks) and decompress → database sha256 and
size match → ``PRAGMA integrity_check`` with the libSQL engine → rows per table equal the
manifest → migration head known to this code → no unexpected trigger or view → a vector search
and a keyword search return results (a database without embeddings: keyword only, reported).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, cast

import numpy as np

from autoforge_data.db.engine import Database
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.errors import AfdbError, Corrupt, SchemaError
from autoforge_data.ops import backup_format as fmt
from autoforge_data.ops.backup import (
    DATA,
    VERIFIED,
    check_backup_name,
    encryption_secret,
    hmac_key,
    latest_name,
    read_manifest,
    utc_now,
    work_dir,
)
from autoforge_data.ops.snapshot import _open_libsql, describe, integrity_check
from autoforge_data.ops.targets import BackupTarget, open_target
from autoforge_data.settings import Settings

ALLOWED_TRIGGERS: dict[str, str] = {
    "trg_users_touch": "users",
    "trg_prompts_touch": "prompts",
    "trg_prompt_versions_no_update": "prompt_versions",
    "trg_prompt_versions_no_delete": "prompt_versions",
    "trg_prompts_insert_keys": "prompts",
    "trg_prompts_filter_journal": "prompts",
}
_ALLOWED_TRIGGER_PATTERNS = (
    (re.compile(r"^trg_prompts_fts_[a-z]+$"), re.compile(r"^prompts$")),
    (
        re.compile(r"^trg_(emb_[a-z0-9_]+)_(journal|vecguard)_(insert|update|delete)$"),
        re.compile(r"^emb_[a-z0-9_]+$"),
    ),
)


@dataclass(frozen=True)
class VerifyOptions:
    """Which backup to drill (default: the newest) and where backups are."""

    name: str | None = None
    url: str | None = None
    search: bool = True  # run the vector + keyword search drill
    record: bool = True  # write <name>.verified.json with the result
    inspect: Callable[[Path], None] | None = None  # called with the restored file (tests, bench)

    def check(self) -> None:
        """Validate before any I/O."""
        if self.name is not None:
            check_backup_name(self.name)


@dataclass
class VerifyReport:
    """What a drill checked and found."""

    name: str
    ok: bool
    sha256: str = ""
    migration: str | None = None
    row_counts: dict[str, int] = field(default_factory=dict)
    vector_hits: int | None = None  # None: no embeddings to search
    keyword_hits: int | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """As a JSON object."""
        return asdict(self)


@dataclass(frozen=True)
class Fetched:
    """A backup decoded into a local database file that passed every file-level check."""

    manifest: fmt.Manifest
    path: Path


def fetch_validated(settings: Settings, target: BackupTarget, name: str, folder: Path) -> Fetched:
    """Download, authenticate, decode and integrity-check a backup into ``folder``."""
    manifest = read_manifest(target, name)
    manifest.check(hmac_key(settings))
    secret = encryption_secret(settings) if manifest.encrypted else None
    if manifest.encrypted and secret is None:
        raise Corrupt(
            f"backup {name!r} is encrypted and AFDB_BACKUP_ENCRYPTION_KEY is not set",
            hint="set the key the backup was made with",
        )
    out = folder / f"{name}.db"
    with target.reader(name + DATA) as src, open(out, "wb") as dst:
        counted = _HashingReader(src)
        raw = fmt.decode(
            cast(IO[bytes], counted), dst, compression=manifest.compression, secret=secret
        )
        counted.drain()
    if counted.size != manifest.size_bytes or counted.hexdigest() != manifest.sha256:
        raise Corrupt(f"backup {name!r}: the stored data does not match its manifest's sha256")
    if raw.raw_size != manifest.raw_size_bytes or raw.raw_sha256 != manifest.raw_sha256:
        raise Corrupt(f"backup {name!r}: the database does not match its manifest's sha256")
    at_rest = _at_rest_key(settings, manifest)
    integrity_check(out, encryption_key=at_rest)
    check_contents(out, manifest, at_rest)
    return Fetched(manifest, out)


def _at_rest_key(settings: Settings, manifest: fmt.Manifest) -> str | None:
    if not manifest.db_encrypted:
        return None
    key = settings.encryption_key
    if key is None:
        raise Corrupt(
            f"backup {manifest.name!r} holds a libSQL-encrypted database and "
            "AFDB_ENCRYPTION_KEY is not set",
            hint="set the database encryption key it was made with",
        )
    return key.get_secret_value()


class _HashingReader:
    """Counts and hashes every byte read through it."""

    def __init__(self, inner: IO[bytes]) -> None:
        self._inner = inner
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        """Read from the inner stream, hashing what comes back."""
        data = self._inner.read(n)
        self._hash.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        """Hash whatever the decoder did not read (appended garbage must fail the digest)."""
        while self.read(fmt.CHUNK):
            pass

    def hexdigest(self) -> str:
        """sha256 of everything read."""
        return self._hash.hexdigest()


def check_contents(path: Path, manifest: fmt.Manifest, key: str | None) -> None:
    """Rows equal the manifest, migration known to this code, only expected triggers/views."""
    from autoforge_data.db.migrate import code_head

    with _open_libsql(path, key) as conn:
        migration, _models, counts = describe(conn)
        objects = conn.execute(
            "SELECT type, name, tbl_name FROM sqlite_master WHERE type IN ('trigger', 'view')"
        ).fetchall()
    if counts != manifest.row_counts:
        diff = sorted(set(counts.items()) ^ set(manifest.row_counts.items()))[:4]
        raise Corrupt(f"backup {manifest.name!r}: row counts differ from the manifest: {diff}")
    if migration != manifest.migration:
        raise Corrupt(f"backup {manifest.name!r}: migration {migration} != manifest's")
    check_migration(migration, code_head())
    unexpected = [f"{t} {n}" for t, n, tbl in objects if not _allowed(str(t), str(n), str(tbl))]
    if unexpected:
        raise Corrupt(
            f"backup {manifest.name!r} holds unexpected schema objects: "
            f"{', '.join(unexpected[:5])}"[:300],
            hint="a trigger or view that our migrations did not create could run code on restore",
        )


def check_migration(revision: str | None, head: str) -> None:
    """Refuse a database migrated by a newer version of the code."""
    if revision is None:
        return
    from alembic.script import ScriptDirectory
    from alembic.util.exc import CommandError

    from autoforge_data.db.migrate import alembic_config

    try:
        ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    except CommandError:
        raise SchemaError(
            f"the backup is at migration {revision}, newer than this code (head {head})",
            hint="restore it with the newer autoforge-data that made it",
        ) from None


def _allowed(kind: str, name: str, table: str) -> bool:
    if kind != "trigger":
        return False  # our migrations create no views
    if ALLOWED_TRIGGERS.get(name) == table:
        return True
    for pattern, table_pattern in _ALLOWED_TRIGGER_PATTERNS:
        match = pattern.match(name)
        if match and table_pattern.match(table):
            return not match.groups() or match.group(1) == table
    return False


# --- the drill -----------------------------------------------------------------------------------


def verify_backup(settings: Settings, options: VerifyOptions | None = None) -> VerifyReport:
    """Run the restore drill on a backup; the report says ok or what failed (no raise for it)."""
    options = options or VerifyOptions()
    options.check()
    target = open_target(settings, options.url)
    name = options.name or latest_name(settings, options.url)
    start = time.perf_counter()
    report = VerifyReport(name=name, ok=False)
    try:
        with work_dir(settings) as tmp:
            fetched = fetch_validated(settings, target, name, tmp)
            report.sha256 = fetched.manifest.sha256
            report.migration = fetched.manifest.migration
            report.row_counts = fetched.manifest.row_counts
            if options.search:
                search_drill(settings, fetched, tmp, report)
            if options.inspect is not None:
                options.inspect(fetched.path)
        report.ok = True
    except AfdbError as exc:
        report.error = exc.one_line()
    report.seconds = time.perf_counter() - start
    if options.record:
        _record(target, report)
    return report


def _record(target: BackupTarget, report: VerifyReport) -> None:
    body = {"verified_at": utc_now(), **report.to_json()}
    with contextlib.suppress(AfdbError, OSError), target.writer(report.name + VERIFIED) as fh:
        fh.write(json.dumps(body, indent=2).encode())


def drill_settings(settings: Settings, path: Path, folder: Path) -> Settings:
    """Settings that open a restored file on its own with the libSQL engine."""
    return Settings.load(
        settings.env,
        base_dir=folder,
        data_dir=folder,
        database_url=str(path),
        sync_url=None,
        sync_interval=None,
        mode=None,
        db_driver="libsql",
        encryption_key=settings.encryption_key,
        backup_url=None,
        redis_url=None,
    )


def search_drill(settings: Settings, fetched: Fetched, folder: Path, report: VerifyReport) -> None:
    """A vector search (with a stored vector) and a keyword search must return results."""
    with Database(drill_settings(settings, fetched.path, folder)) as db:
        report.keyword_hits = _keyword_drill(db, report)
        report.vector_hits = _vector_drill(db, folder, report)
    if report.keyword_hits == 0:
        raise Corrupt(f"backup {report.name!r}: keyword search found nothing")
    if report.vector_hits == 0:
        raise Corrupt(f"backup {report.name!r}: vector search found nothing")


def _keyword_drill(db: Database, report: VerifyReport) -> int | None:
    from autoforge_data.services.search import fts_query, query_terms

    with UnitOfWork(db) as uow:
        row = uow.fetchone("SELECT title || ' ' || content FROM prompts ORDER BY rowid LIMIT 1")
        if row is None:
            report.notes.append("no prompts: search drill skipped")
            return None
        query = fts_query(query_terms(str(row[0]))[:3])
        if query is None:
            report.notes.append("first prompt has no words: keyword drill skipped")
            return None
        hits = uow.fetchall(
            "SELECT rowid FROM prompts_fts WHERE prompts_fts MATCH ? LIMIT 10", (query,)
        )
    return len(hits)


def _vector_drill(db: Database, folder: Path, report: VerifyReport) -> int | None:
    from autoforge_data.errors import NotFound
    from autoforge_data.services.search import SearchContext, search
    from autoforge_data.vector.store import active_model

    try:
        model = active_model(db)
    except NotFound:
        report.notes.append("no active embedding model: keyword search only")
        return None
    with UnitOfWork(db) as uow:
        row = uow.fetchone(f'SELECT embedding FROM "{model.table}" LIMIT 1')
        has_index = uow.fetchone(
            "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?",
            (f"idx_{model.table}",),
        )
    if row is None:
        report.notes.append(f"model {model.name} has no vectors: keyword search only")
        return None
    kind = "libsql" if has_index else "exact"
    vector = np.frombuffer(bytes(row[0]), dtype=np.float32)
    with SearchContext.open(db, kind=kind, data_dir=folder, embedder=_NoEmbedder(model)) as ctx:
        hits = search(ctx, vector=vector, k=10, mode="vector")
    report.notes.append(f"vector search: {kind} index of {model.name}")
    return len(hits)


class _NoEmbedder:
    """Stands in for the model's embedder: the drill searches with a stored vector."""

    metric: Literal["cosine", "l2"] = "cosine"
    normalized = True

    def __init__(self, model: Any) -> None:
        self.name = model.name
        self.dimension = model.dimension

    def embed(self, texts: Any) -> Any:
        """Never called by a vector search."""
        raise Corrupt("the verify drill does not embed text")
