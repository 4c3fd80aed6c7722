"""Backups: create (online snapshot → compress → encrypt → target, signed manifest), list, prune.

The entry points are library functions with options objects, validated before any I/O:
:func:`create_backup`, :func:`list_backups`, :func:`prune_backups`, :func:`backup_status`;
verify and restore live in :mod:`.backup_verify` and :mod:`.backup_restore`. File format and
manifest: :mod:`.backup_format`; where backups go: :mod:`.targets`.

A backup named N is the objects ``N.afdb`` (data) and ``N.manifest.json`` (written last: a
manifest only ever names complete data), plus ``N.verified.json`` once a verify drill ran.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autoforge_data.db.engine import Database
from autoforge_data.errors import AfdbError, Corrupt, InvalidInput, NotFound
from autoforge_data.fsutil import atomic_write, ensure_private_dir
from autoforge_data.ops import backup_format as fmt
from autoforge_data.ops.names import check_name
from autoforge_data.ops.snapshot import describe_file, take_snapshot
from autoforge_data.ops.targets import BackupTarget, open_target
from autoforge_data.settings import Settings

DATA = ".afdb"
MANIFEST = ".manifest.json"
VERIFIED = ".verified.json"
MAX_NAME = 48  # + ".manifest.json" stays within a 63-character object name
STATUS_FILE = "backup-status.{env}.json"  # per profile: profiles may share a data folder
TMP_DIR = ".afdb-backup-tmp"
STALE_TEMP_SECONDS = 6 * 3600  # prune removes temp files of killed writers older than this


@dataclass(frozen=True)
class BackupOptions:
    """What :func:`create_backup` does; defaults are the recommended settings."""

    name: str | None = None  # default: <profile>-<UTC timestamp>
    url: str | None = None  # default: AFDB_BACKUP_URL, then backups/<profile>
    compression: str = "zstd"
    level: int = 1  # zstd 1: see the README's measurements (gzip 1 was 9x slower)
    encrypt: bool | None = None  # default: when AFDB_BACKUP_ENCRYPTION_KEY is set

    def check(self, settings: Settings) -> None:
        """Raise InvalidInput/ConfigError before any I/O."""
        if self.name is not None:
            check_backup_name(self.name)
        if self.compression not in fmt.COMPRESSIONS:
            raise InvalidInput(
                f"unknown compression {self.compression!r}", hint="zstd, gzip or none"
            )
        if self.compression == "zstd" and not -7 <= self.level <= 19:
            raise InvalidInput(f"zstd level {self.level} out of range", hint="-7..19 (1: default)")
        if self.compression == "gzip" and not 0 <= self.level <= 9:
            raise InvalidInput(f"gzip level {self.level} out of range", hint="0..9")
        if self.encrypt and settings.backup_encryption_key is None:
            raise InvalidInput(
                "encryption asked for but AFDB_BACKUP_ENCRYPTION_KEY is not set",
                hint="set AFDB_BACKUP_ENCRYPTION_KEY (a long random secret)",
            )


@dataclass(frozen=True)
class BackupInfo:
    """A finished backup: its manifest, where it is, and how long it took."""

    manifest: fmt.Manifest
    location: str
    seconds: float
    snapshot_seconds: float

    @property
    def mb_per_s(self) -> float:
        """Database megabytes backed up per second (end to end)."""
        return self.manifest.raw_size_bytes / 1e6 / max(self.seconds, 1e-9)


@dataclass
class BackupEntry:
    """One backup in a listing (``list --json`` prints these)."""

    name: str
    path: str
    created_at: str
    size_bytes: int
    raw_size_bytes: int
    encrypted: bool
    compression: str
    migration: str | None
    models: list[str]
    rows: int
    verified: bool
    verified_at: str | None = None
    verify_ok: bool | None = None
    error: str | None = None
    manifest: fmt.Manifest | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this entry."""
        body = asdict(self)
        body.pop("manifest")
        return body


def check_backup_name(name: str) -> str:
    """A backup name: a safe name of at most 48 characters."""
    check_name(name, "backup name")
    if len(name) > MAX_NAME:
        raise InvalidInput(
            f"the backup name is {len(name)} characters long (max {MAX_NAME})",
            hint="use a shorter name",
        )
    return name


def default_name(settings: Settings, now: dt.datetime | None = None) -> str:
    """``<profile>-YYYYmmdd-HHMMSS-ffffff`` in UTC."""
    now = now or dt.datetime.now(dt.UTC)
    return f"{settings.env}-{now.strftime('%Y%m%d-%H%M%S-%f')}"


def utc_now() -> str:
    """Now as ISO 8601 UTC with microseconds."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def hmac_key(settings: Settings) -> bytes:
    """The manifest signing key (see :func:`backup_format.load_hmac_key`)."""
    secret = settings.backup_hmac_key
    return fmt.load_hmac_key(secret.get_secret_value() if secret else None, key_dir(settings))


def key_dir(settings: Settings) -> Path:
    """The data folder: beside the database (where the generated HMAC key and status live)."""
    path = settings.target.path
    return Path(os.path.abspath(path.parent if path is not None else settings.data_dir))


def encryption_secret(settings: Settings) -> str | None:
    """AFDB_BACKUP_ENCRYPTION_KEY, if set."""
    key = settings.backup_encryption_key
    return key.get_secret_value() if key is not None else None


@contextlib.contextmanager
def work_dir(settings: Settings) -> Iterator[Path]:
    """A private temp folder beside the database (same disk; removed after, or by the next run)."""
    base = key_dir(settings) / TMP_DIR
    ensure_private_dir(base)
    _remove_stale_work_dirs(base)
    path = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _remove_stale_work_dirs(base: Path) -> None:
    """Remove temp folders of processes that died (SIGKILL leaves them behind)."""
    for child in base.iterdir():
        pid = child.name.split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(child, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- create --------------------------------------------------------------------------------------


def create_backup(db: Database, options: BackupOptions | None = None) -> BackupInfo:
    """Take an online snapshot of ``db`` and store it as a signed, compressed backup."""
    options = options or BackupOptions()
    settings = db.settings
    options.check(settings)
    name = options.name or default_name(settings)
    target = open_target(settings, options.url)
    key = hmac_key(settings)
    secret = encryption_secret(settings) if options.encrypt is not False else None
    start = time.perf_counter()
    try:
        info = _create(
            db, target=target, name=name, options=options, key=key, secret=secret, start=start
        )
    except AfdbError as exc:
        record_status(settings, ok=False, error=exc.one_line())
        raise
    record_status(settings, ok=True, name=name, count=len(_manifest_names(target)))
    return info


def _create(
    db: Database,
    *,
    target: BackupTarget,
    name: str,
    options: BackupOptions,
    key: bytes,
    secret: str | None,
    start: float,
) -> BackupInfo:
    if name in _manifest_names(target):
        raise InvalidInput(f"a backup named {name!r} exists already", hint="choose another name")
    for suffix in (DATA, MANIFEST):  # refuse a bad name or a planted symlink before any work
        target.location(name + suffix)
    with work_dir(db.settings) as tmp, ThreadPoolExecutor(1) as pool:
        snap, snap_start = tmp / "snapshot.db", time.perf_counter()
        method = take_snapshot(db, snap)
        snap_seconds = time.perf_counter() - snap_start
        key_at_rest = db.settings.encryption_key
        described = pool.submit(
            describe_file, snap, method, key_at_rest.get_secret_value() if key_at_rest else None
        )  # counts rows while the data is encoded
        with target.writer(name + DATA) as out:
            enc = fmt.encode(
                snap, out, compression=options.compression, level=options.level, secret=secret
            )
        migration, models, counts = described.result()
    manifest = fmt.Manifest(
        name=name,
        created_at=utc_now(),
        profile=db.settings.env,
        size_bytes=enc.size,
        sha256=enc.sha256,
        raw_size_bytes=enc.raw_size,
        raw_sha256=enc.raw_sha256,
        compression=options.compression,
        encrypted=secret is not None,
        migration=migration,
        models=models,
        row_counts=counts,
        method=method,
        db_encrypted=db.settings.encryption_key is not None,
    )
    manifest.sign(key)
    with target.writer(name + MANIFEST) as out:
        out.write(manifest.to_bytes())
    elapsed = time.perf_counter() - start
    return BackupInfo(manifest, target.location(name + DATA), elapsed, snap_seconds)


# --- list ----------------------------------------------------------------------------------------


def _manifest_names(target: BackupTarget) -> list[str]:
    return [k[: -len(MANIFEST)] for k in target.list_keys() if k.endswith(MANIFEST)]


def read_manifest(target: BackupTarget, name: str) -> fmt.Manifest:
    """The parsed (not yet HMAC-checked) manifest of a backup; NotFound / Corrupt."""
    check_backup_name(name)
    with target.reader(name + MANIFEST) as fh:
        raw = fh.read(1 << 20)
    manifest = fmt.Manifest.from_bytes(raw, name)
    if manifest.name != name:
        raise Corrupt(f"the manifest of {name!r} names another backup ({manifest.name!r})")
    return manifest


def read_verified(target: BackupTarget, name: str, keys: set[str]) -> dict[str, Any] | None:
    """The last verify drill's result of a backup, if any."""
    if name + VERIFIED not in keys:
        return None
    try:
        with target.reader(name + VERIFIED) as fh:
            body = json.loads(fh.read(1 << 20))
    except (AfdbError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def list_backups(settings: Settings, url: str | None = None) -> list[BackupEntry]:
    """Every backup at the target (oldest first), with its last verify result."""
    target = open_target(settings, url)
    keys = set(target.list_keys())
    entries = []
    for name in sorted(k[: -len(MANIFEST)] for k in keys if k.endswith(MANIFEST)):
        with contextlib.suppress(InvalidInput):  # not a name we write: not ours, skipped
            entries.append(_entry(target, check_backup_name(name), keys))
    return sorted(entries, key=lambda e: (e.created_at, e.name))


def _entry(target: BackupTarget, name: str, keys: set[str]) -> BackupEntry:
    path = target.location(name + DATA)
    try:
        m = read_manifest(target, name)
    except AfdbError as exc:
        return BackupEntry(name, path, "", 0, 0, False, "", None, [], 0, False, error=exc.message)
    verified = read_verified(target, name, keys) or {}
    ok = verified.get("ok")
    return BackupEntry(
        name=name,
        path=path,
        created_at=m.created_at,
        size_bytes=m.size_bytes,
        raw_size_bytes=m.raw_size_bytes,
        encrypted=m.encrypted,
        compression=m.compression,
        migration=m.migration,
        models=m.models,
        rows=sum(m.row_counts.values()),
        verified=ok is True and verified.get("sha256") == m.sha256,
        verified_at=verified.get("verified_at"),
        verify_ok=ok if isinstance(ok, bool) else None,
        error=None if name + DATA in keys else "the data object is missing",
        manifest=m,
    )


def latest_name(settings: Settings, url: str | None = None) -> str:
    """The newest backup with a readable manifest (NotFound when there is none)."""
    entries = [e for e in list_backups(settings, url) if e.manifest is not None]
    if not entries:
        where = open_target(settings, url).url
        raise NotFound(f"no backups in {where}", hint="afdb backup create")
    return entries[-1].name


# --- prune ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetentionPolicy:
    """Which backups ``prune`` keeps; a backup kept by any rule stays."""

    keep_last: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None

    def check(self) -> None:
        """At least one rule, none negative (pruning everything is never the default)."""
        values = (self.keep_last, self.keep_daily, self.keep_weekly)
        if all(v is None for v in values):
            raise InvalidInput(
                "no retention rule given", hint="--keep-last N, --keep-daily D or --keep-weekly W"
            )
        if any(v is not None and v < 0 for v in values) or self.keep_last == 0:
            raise InvalidInput("retention counts must be positive", hint="e.g. --keep-last 7")

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy | None:
        """The AFDB_BACKUP_KEEP_* settings, or None when none is set."""
        policy = cls(
            settings.backup_keep_last, settings.backup_keep_daily, settings.backup_keep_weekly
        )
        values = (policy.keep_last, policy.keep_daily, policy.keep_weekly)
        return None if all(v is None for v in values) else policy


def kept(created: list[tuple[str, dt.datetime]], policy: RetentionPolicy) -> set[str]:
    """The names a policy keeps from (name, created) pairs."""
    newest_first = sorted(created, key=lambda c: c[1], reverse=True)
    keep = {n for n, _ in newest_first[: policy.keep_last or 0]}
    for count, bucket in (
        (policy.keep_daily, lambda t: t.date().isoformat()),
        (policy.keep_weekly, lambda t: f"{t.isocalendar()[0]}-W{t.isocalendar()[1]:02d}"),
    ):
        seen: set[str] = set()
        for n, t in newest_first:
            b = bucket(t)
            if count and b not in seen and len(seen) < count:
                seen.add(b)
                keep.add(n)
    return keep


def prune_backups(
    settings: Settings, policy: RetentionPolicy, *, url: str | None = None, dry_run: bool = False
) -> list[str]:
    """Delete the backups the policy does not keep; returns their names (oldest first)."""
    policy.check()
    target = open_target(settings, url)
    entries = [e for e in list_backups(settings, url) if e.manifest is not None]
    stamps = [(e.name, _parse_time(e.created_at)) for e in entries]
    keep = kept(stamps, policy)
    doomed = [e.name for e in entries if e.name not in keep]
    if not dry_run:
        for name in doomed:
            for suffix in (MANIFEST, VERIFIED, DATA):  # manifest first: never a dangling name
                target.delete(name + suffix)
        target.sweep(STALE_TEMP_SECONDS)
        _record_count(settings, len(entries) - len(doomed))
    return doomed


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- status --------------------------------------------------------------------------------------


def record_status(
    settings: Settings,
    *,
    ok: bool,
    name: str | None = None,
    error: str | None = None,
    count: int | None = None,
) -> None:
    """Remember the last backup attempt (for health, metrics and `afdb env`)."""
    path = key_dir(settings) / STATUS_FILE.format(env=settings.env)
    body = _read_status(path)
    now = time.time()
    body.update(last_attempt=now, last_result="ok" if ok else "error", last_error=error)
    if ok:
        body.update(last_success=now, last_name=name)
    if count is not None:
        body["count"] = count
    with contextlib.suppress(OSError), atomic_write(path) as fh:
        fh.write(json.dumps(body).encode())


def _record_count(settings: Settings, count: int) -> None:
    """Update only the backup count (after a prune)."""
    path = key_dir(settings) / STATUS_FILE.format(env=settings.env)
    body = _read_status(path)
    body["count"] = count
    with contextlib.suppress(OSError), atomic_write(path) as fh:
        fh.write(json.dumps(body).encode())


def _read_status(path: Path) -> dict[str, Any]:
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def backup_status(settings: Settings) -> dict[str, Any]:
    """Last success time (epoch s), its age, last result and error, backup count."""
    body = _read_status(key_dir(settings) / STATUS_FILE.format(env=settings.env))
    last = body.get("last_success")
    return {
        "last_success": last,
        "age_seconds": (time.time() - last) if isinstance(last, int | float) else None,
        "last_result": body.get("last_result"),
        "last_error": body.get("last_error"),
        "last_name": body.get("last_name"),
        "count": body.get("count"),
    }
