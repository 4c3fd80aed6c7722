"""Branches: a copy of an environment's database that never shares a write with its source.

One entry point, :func:`create_branch` (``afdb branch create NAME --from ENV``), three backends
chosen by the source profile's settings:

* **embedded** (a local file, or an embedded replica's file): a consistent online snapshot through
  the engine (:func:`autoforge_data.ops.snapshot.snapshot_to`), optionally emptied
  (``schema_only``) or anonymized (:mod:`autoforge_data.ops.anonymize`), checked with the libSQL
  engine, then renamed to ``<branches>/<name>.db`` (0600, folder 0700). ``at`` restores the
  newest verified backup taken at or before that time instead (:mod:`autoforge_data.ops.backup`).
  A profile uses it with ``AFDB_DATABASE_URL=<branches>/<name>.db`` (printed as ``use``).
* **sqld** (``AFDB_SQLD_ADMIN_URL`` set): the admin API's namespace fork
  (:func:`autoforge_data.ops.sqld_admin.create_namespace_branch`); the branch is the namespace
  ``<name>``.
* **Turso Cloud** (``AFDB_TURSO_ORG`` and ``AFDB_TURSO_API_TOKEN`` set): a database created
  with a seed from the source, at ``at`` if given
  (:func:`autoforge_data.ops.turso.create_database_branch`).

Every branch gets a metadata record ``<branches>/<name>.json`` (written atomically): source
profile, time, migration head, embedding models, git commit, options, where it is and how to use
it. ``branch list`` reads the records; ``branch delete`` removes a branch we recorded, never a
source. Names are checked by :func:`autoforge_data.ops.names.check_name` before any I/O.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from autoforge_data.db import migrate
from autoforge_data.db.engine import Database
from autoforge_data.errors import AfdbError, ConfigError, Conflict, InvalidInput, NotFound
from autoforge_data.fsutil import atomic_write, ensure_private_dir, fsync_dir
from autoforge_data.ops.backup_restore import ensure_closed
from autoforge_data.ops.names import check_name, child_path
from autoforge_data.settings import Mode, Settings

Backend = Literal["auto", "embedded", "sqld", "turso"]
BACKENDS: tuple[str, ...] = ("auto", "embedded", "sqld", "turso")


@dataclass(frozen=True)
class BranchOptions:
    """What to branch and how; :meth:`validated` checks it before any I/O."""

    name: str
    source_env: str | None = None  # a label for the record (the source's profile by default)
    at: datetime | None = None
    schema_only: bool = False
    anonymize: bool = False
    drop_content: bool = False
    replace: bool = False
    backend: Backend = "auto"
    branches_dir: Path | None = None  # default: <source data_dir>/branches
    source_namespace: str | None = None  # sqld: default the first label of the source URL's host
    source_database: str | None = None  # Turso: default the database name in the source URL

    def validated(self) -> BranchOptions:
        """The options if they make sense together; InvalidInput otherwise."""
        check_name(self.name, "branch name")
        if self.backend not in BACKENDS:
            raise InvalidInput(
                f"unknown branch backend {self.backend!r}", hint="auto, embedded, sqld or turso"
            )
        if self.drop_content and not self.anonymize:
            raise InvalidInput("--drop-content needs --anonymize", hint="add --anonymize")
        if self.schema_only and (self.anonymize or self.at is not None):
            raise InvalidInput(
                "--schema-only copies no rows: --anonymize and --at do not apply",
                hint="drop --anonymize/--at, or drop --schema-only",
            )
        if self.at is not None:
            if self.at.tzinfo is None:
                raise InvalidInput("--at needs a time zone", hint="e.g. 2026-11-27T12:00:00Z")
            if self.at > datetime.now(UTC):
                raise InvalidInput("--at is in the future", hint="give a past time, in UTC")
        return self


def parse_timestamp(text: str) -> datetime:
    """An ISO 8601 time (``Z`` or an offset; no zone means UTC) as an aware UTC datetime."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"invalid timestamp {text[:40]!r}", hint="use ISO 8601, e.g. 2026-11-27T12:00:00Z"
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)


@dataclass
class BranchRecord:
    """The metadata record of a branch (``<branches>/<name>.json``)."""

    name: str
    kind: str  # embedded, sqld or turso
    source_env: str
    source: str  # where it came from (no credentials)
    created_at: str
    location: str  # a file path, a namespace, or a Turso hostname
    use: str  # how a profile points at it
    at: str | None = None
    migration: str | None = None
    models: list[str] = field(default_factory=list)
    git_commit: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    size_bytes: int | None = None
    row_counts: dict[str, int] = field(default_factory=dict)
    seconds: float | None = None
    status: str = "ok"  # list: ok, missing (file/namespace/database gone), unrecorded

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def branches_dir(settings: Settings) -> Path:
    """The folder that holds branch files and records: ``<data_dir>/branches``."""
    return settings.data_dir.absolute() / "branches"


def create_branch(source: Settings | Database, options: BranchOptions) -> BranchRecord:
    """Create branch ``options.name`` of ``source`` (a profile's settings or an open database)."""
    opts = options.validated()
    settings = source.settings if isinstance(source, Database) else source
    folder = Path(opts.branches_dir or branches_dir(settings)).absolute()
    opts = replace(opts, source_env=opts.source_env or settings.env, branches_dir=folder)
    record_path = child_path(folder, opts.name, ".json")
    if record_path.exists() and not opts.replace:
        raise Conflict(f"branch {opts.name!r} exists", hint="pick another name, or --replace it")
    backend = choose_backend(settings, opts.backend)
    if backend != "embedded" and (opts.schema_only or opts.anonymize):
        raise InvalidInput(
            f"--schema-only and --anonymize work on a local copy, not on a {backend} fork",
            hint="branch an embedded replica's file instead: --backend embedded on a profile "
            "with AFDB_SYNC_URL",
        )
    started = datetime.now(UTC)
    if backend == "embedded":
        record = _create_embedded(source, opts)
    elif backend == "sqld":
        from autoforge_data.ops.sqld_admin import create_namespace_branch

        record = create_namespace_branch(settings, opts)
    else:
        from autoforge_data.ops.turso import create_database_branch

        record = create_database_branch(settings, opts)
    record.created_at = started.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    record.git_commit = git_commit(Path.cwd())
    record.options = {
        "schema_only": opts.schema_only,
        "anonymize": opts.anonymize,
        "drop_content": opts.drop_content,
        "at": record.at,
    }
    write_record(record_path, record)
    return record


def choose_backend(settings: Settings, wanted: str = "auto") -> str:
    """embedded, sqld or turso, from the source's mode and which admin API is configured."""
    target = settings.target
    if wanted == "auto":
        if target.mode is Mode.EMBEDDED:
            wanted = "embedded"
        elif settings.sqld_admin_url:
            wanted = "sqld"
        elif settings.turso_org and settings.turso_api_token is not None:
            wanted = "turso"
        elif target.mode is Mode.REPLICA:
            wanted = "embedded"  # a snapshot of the replica's local file
        else:
            raise ConfigError(
                "a remote database is branched through its server's admin API, none is set",
                hint="set AFDB_SQLD_ADMIN_URL (sqld) or AFDB_TURSO_ORG + AFDB_TURSO_API_TOKEN",
            )
    if wanted == "embedded" and target.path is None:
        raise ConfigError(
            "--backend embedded needs a local database file", hint="use sqld or turso"
        )
    if wanted in ("sqld", "turso") and target.url is None:
        raise ConfigError(f"--backend {wanted} needs a server URL in the source profile")
    return wanted


# --- embedded: snapshot, clean, check, rename ---


def _create_embedded(source: Settings | Database, opts: BranchOptions) -> BranchRecord:
    assert opts.branches_dir is not None
    dest = child_path(opts.branches_dir, opts.name, ".db")
    if dest.exists() and not opts.replace:
        raise Conflict(f"{dest} exists", hint="pick another name, or --replace it")
    if dest.exists():
        ensure_closed(dest)  # replacing a file an app has open would strand its WAL
    own = not isinstance(source, Database)
    db = Database(source) if isinstance(source, Settings) else source
    try:
        _refuse_source(db, dest)
        # anonymizing a schema newer than this code could miss a table of personal data
        check = migrate.check_not_newer if opts.anonymize else migrate.current_revision
        if check(db) is None:
            raise AfdbError(f"the {db.settings.env} database has no schema", hint="run: afdb init")
        return _snapshot_branch(db, dest, opts)
    finally:
        if own:
            db.close()


def _refuse_source(db: Database, dest: Path) -> None:
    path = db.target.path
    if path is not None and os.path.realpath(path) == os.path.realpath(dest):
        raise InvalidInput("a branch cannot replace its own source", hint="pick another name")


def _snapshot_branch(db: Database, dest: Path, opts: BranchOptions) -> BranchRecord:
    from autoforge_data.ops.snapshot import integrity_check, snapshot_to

    ensure_private_dir(dest.parent)
    remove_stale_partials(dest.parent)
    partial = dest.with_name(f".{dest.name}.{os.getpid()}-{secrets.token_hex(6)}.partial")
    key = db.settings.encryption_key
    try:
        origin = db.target.describe()
        if opts.at is not None:
            seconds, backup = _restore_backup_at(db.settings, opts.at, partial)
            origin = f"{backup} of {origin}"
        else:
            seconds = snapshot_to(db, partial).seconds
        _clean(partial, db.settings, opts)
        integrity_check(partial, encryption_key=key.get_secret_value() if key else None)
        migration, models, counts = _describe(partial, key.get_secret_value() if key else None)
        os.replace(partial, dest)
        fsync_dir(dest.parent)
    finally:
        for leftover in (partial, *_sidecars(partial)):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
    for stale in _sidecars(dest):  # a replaced branch's WAL must not be applied to the new file
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    return BranchRecord(
        name=opts.name,
        kind="embedded",
        source_env=opts.source_env or db.settings.env,
        source=origin,
        created_at="",
        location=str(dest),
        use=f"AFDB_DATABASE_URL={_shown_path(dest)}",
        at=stamp(opts.at),
        migration=migration,
        models=models,
        size_bytes=dest.stat().st_size,
        row_counts=counts,
        seconds=seconds,
    )


# a half-made branch file (``.<name>.db.<pid>-<hex>.partial``) or a half-written metadata
# record (``atomic_write``'s ``.<name>.json.<pid>-<random>.tmp``); group 1 is the writer's pid
_PARTIAL = re.compile(
    r"^\.+[a-z0-9._-]+\.db\.(\d+)-[0-9a-f]+\.partial"
    r"|^\.[a-z0-9._-]+\.json\.(\d+)-[a-z0-9_]+\.tmp$"
)


def remove_stale_partials(folder: Path) -> list[str]:
    """Delete half-made branch files and records of processes that died (SIGKILL leaves them)."""
    removed = []
    for path in folder.iterdir():
        m = _PARTIAL.match(path.name)
        if m and not path.is_symlink() and not _alive(int(m.group(1) or m.group(2))):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path.name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sidecars(path: Path) -> tuple[Path, ...]:
    return tuple(Path(f"{path}{s}") for s in ("-wal", "-shm", "-journal"))


def _clean(partial: Path, source: Settings, opts: BranchOptions) -> None:
    """Empty or anonymize the branch file, then compact it into one file."""
    if not (opts.schema_only or opts.anonymize):
        return
    from autoforge_data.ops import anonymize
    from autoforge_data.vector.libsql_index import repair_vector_meta

    db = Database(_file_settings(source, partial))
    try:
        with db.writes.connection() as conn:
            if opts.schema_only:
                anonymize.empty_rows(conn)
            else:
                anonymize.anonymize(conn, drop_content=opts.drop_content)
            anonymize.compact(conn)
        repair_vector_meta(db)  # VACUUM duplicates libSQL's vector index registry row
        with db.writes.connection() as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            conn.execute("PRAGMA journal_mode = DELETE").fetchall()
    finally:
        db.close()


def _file_settings(source: Settings, path: Path) -> Settings:
    """Settings that open one branch file with the libSQL engine (and the source's key)."""
    return Settings.load(
        source.env,
        base_dir=path.parent,
        data_dir=path.parent,
        database_url=str(path),
        sync_url=None,
        sync_interval=None,
        mode=None,
        db_driver="libsql",
        encryption_key=source.encryption_key,
    )


def _describe(path: Path, key: str | None) -> tuple[str | None, list[str], dict[str, int]]:
    from autoforge_data.ops.snapshot import _open_libsql, describe

    with _open_libsql(path, key) as conn:
        return describe(conn)


def _restore_backup_at(settings: Settings, at: datetime, dest: Path) -> tuple[float, str]:
    """Decode the newest verified backup taken at or before ``at`` into ``dest``.

    Returns the seconds taken and which backup it was.

    The backup passes every check of ``afdb backup verify`` (HMAC, sha256, libSQL integrity,
    row counts) on its way (:func:`~autoforge_data.ops.backup_verify.fetch_validated`).
    """
    from autoforge_data.ops.backup import list_backups, work_dir
    from autoforge_data.ops.backup_verify import fetch_validated
    from autoforge_data.ops.targets import open_target

    start = time.perf_counter()
    entries = [e for e in list_backups(settings) if e.manifest is not None]
    older = [e for e in entries if e.created_at and parse_timestamp(e.created_at) <= at]
    verified = [e for e in older if e.verified]
    if not verified:
        raise NotFound(
            f"no verified backup of {settings.env} at or before {stamp(at)} "
            f"({len(older)} unverified, {len(entries)} in all)",
            hint="afdb backup verify NAME (or afdb backup create), or branch without --at",
        )
    with work_dir(settings) as tmp:
        fetched = fetch_validated(settings, open_target(settings), verified[-1].name, tmp)
        shutil.move(fetched.path, dest)
    os.chmod(dest, 0o600)
    chosen = verified[-1]
    return time.perf_counter() - start, f"backup {chosen.name} ({chosen.created_at})"


def _shown_path(path: Path) -> str:
    """The path relative to the working directory when it is inside it (shorter to paste)."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def stamp(when: datetime | None) -> str | None:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ") if when is not None else None


# --- shared by the sqld and Turso backends (sqld_admin.py, turso.py) ---


def refuse_unrecorded(opts: BranchOptions, name: str) -> None:
    """--replace only ever replaces a branch we recorded (never a namespace we did not make)."""
    assert opts.branches_dir is not None
    if not child_path(opts.branches_dir, name, ".json").exists():
        raise Conflict(
            f"{name!r} exists and is not a branch recorded here",
            hint="pick another name; afdb never deletes a database it did not branch",
        )


def turso_client(settings: Settings) -> Any:
    from autoforge_data.ops.turso import TursoPlatform

    return TursoPlatform(settings.turso_api_url, settings.turso_org, settings.turso_api_token)


# --- records: write, list, delete ---


def write_record(path: Path, record: BranchRecord) -> None:
    """Write a branch's record atomically (0600)."""
    with atomic_write(path) as fh:
        fh.write(json.dumps(record.to_json(), indent=2, sort_keys=True).encode() + b"\n")


def read_record(path: Path) -> BranchRecord:
    """Read one record; Corrupt-looking files raise InvalidInput."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        known = set(BranchRecord.__dataclass_fields__)
        return BranchRecord(**{k: v for k, v in raw.items() if k in known})
    except (OSError, ValueError, TypeError) as exc:
        raise InvalidInput(
            f"branch record {path.name} is unreadable ({type(exc).__name__})",
            hint="delete the file if the branch is gone",
        ) from None


def list_branches(settings: Settings, *, folder: Path | None = None) -> list[BranchRecord]:
    """Every recorded branch (and branch files without a record), oldest first."""
    folder = Path(folder or branches_dir(settings))
    if not folder.is_dir():
        return []
    out: list[BranchRecord] = []
    seen: set[str] = set()
    for path in sorted(folder.glob("*.json")):
        if _safe_stem(path.stem) and not path.is_symlink():
            record = read_record(path)
            if record.kind == "embedded":
                record.status = "ok" if Path(record.location).is_file() else "missing"
            out.append(record)
            seen.add(path.stem)
    for path in sorted(folder.glob("*.db")):
        if _safe_stem(path.stem) and path.stem not in seen:
            out.append(_unrecorded(path))
    return sorted(out, key=lambda r: (r.created_at, r.name))


def _safe_stem(stem: str) -> bool:
    try:
        check_name(stem)
    except InvalidInput:
        return False
    return True


def _unrecorded(path: Path) -> BranchRecord:
    """A branch file whose record is missing (e.g. a crash between rename and record)."""
    stamp = datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return BranchRecord(
        name=path.stem,
        kind="embedded",
        source_env="?",
        source="?",
        created_at=stamp,
        location=str(path),
        use=f"AFDB_DATABASE_URL={_shown_path(path)}",
        size_bytes=path.stat().st_size,
        status="unrecorded",
    )


def check_remote(settings: Settings, records: list[BranchRecord]) -> None:
    """Mark sqld/Turso branches whose namespace or database no longer exists as missing."""
    remote = [r for r in records if r.kind in ("sqld", "turso")]
    if any(r.kind == "sqld" for r in remote) and settings.sqld_admin_url:
        from autoforge_data.ops.sqld_admin import SqldAdmin

        with SqldAdmin(settings.sqld_admin_url) as admin:
            for r in remote:
                if r.kind == "sqld" and not admin.exists(r.name):
                    r.status = "missing"
    if any(r.kind == "turso" for r in remote) and settings.turso_org:
        with turso_client(settings) as api:
            names = {d.name for d in api.list_databases()}
        for r in remote:
            if r.kind == "turso" and r.name not in names:
                r.status = "missing"


def delete_branch(settings: Settings, name: str, *, folder: Path | None = None) -> BranchRecord:
    """Delete a branch (file, namespace or database) and its record; never a source."""
    check_name(name, "branch name")
    folder = Path(folder or branches_dir(settings))
    record_path = child_path(folder, name, ".json")
    db_path = child_path(folder, name, ".db")
    if record_path.exists():
        record = read_record(record_path)
    elif db_path.exists():
        record = _unrecorded(db_path)
    else:
        raise NotFound(f"no branch named {name!r} in {folder}", hint="see: afdb branch list")
    _refuse_current(settings, record)
    if record.kind == "embedded":
        if db_path.exists():
            ensure_closed(db_path)
        for path in (db_path, *_sidecars(db_path)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    elif record.kind == "sqld":
        _delete_sqld(settings, name)
    elif record.kind == "turso":
        with turso_client(settings) as api, contextlib.suppress(NotFound):
            api.delete(name)
    with contextlib.suppress(FileNotFoundError):
        record_path.unlink()
    if folder.exists():
        fsync_dir(folder)
    return record


def _delete_sqld(settings: Settings, name: str) -> None:
    from autoforge_data.ops.sqld_admin import SqldAdmin

    if not settings.sqld_admin_url:
        raise ConfigError(
            f"branch {name!r} is an sqld namespace: AFDB_SQLD_ADMIN_URL is needed to delete it",
            hint="set AFDB_SQLD_ADMIN_URL to the sqld's --admin-listen-addr",
        )
    with SqldAdmin(settings.sqld_admin_url) as admin, contextlib.suppress(NotFound):
        admin.delete(name)


def _refuse_current(settings: Settings, record: BranchRecord) -> None:
    """The profile's own database is never deleted as a branch."""
    from autoforge_data.ops.sqld_admin import namespace_of_url

    target = settings.target
    same_file = (
        target.path is not None
        and record.kind == "embedded"
        and (os.path.realpath(record.location) == os.path.realpath(target.path))
    )
    same_ns = (
        record.kind == "sqld"
        and target.url is not None
        and (namespace_of_url(target.url) == record.name)
    )
    if same_file or same_ns:
        raise InvalidInput(
            f"branch {record.name!r} is the {settings.env} profile's own database",
            hint="switch profile (or AFDB_DATABASE_URL) before deleting it",
        )


def git_commit(cwd: Path) -> str | None:
    """The commit checked out in ``cwd`` if it is a git work tree, else None."""
    git = shutil.which("git")
    if git is None:
        return None
    try:
        proc = subprocess.run(  # noqa: S603 - fixed argv, no user input
            [git, "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    out = proc.stdout.strip()
    return out if proc.returncode == 0 and len(out) in (40, 64) else None
