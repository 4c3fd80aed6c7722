"""Environments (`afdb env list|show`): mode, database, schema, size, backups, replication.

A profile (dev, staging, prod) is a set of settings (``AFDB_ENV``, ``.env.<profile>``) with its
own database and backup location. This module only looks: it never creates a database file
(a profile whose file does not exist yet is reported as such; an embedded replica's local
copy is a cache and is synced), never prints a credential
(:meth:`DatabaseTarget.describe` has none), and turns each failure into a short text in that
profile's row instead of failing the whole list.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from autoforge_data.errors import AfdbError
from autoforge_data.settings import PROFILES, Mode, Settings


@dataclass
class EnvInfo:
    """What `afdb env list` shows for one profile."""

    profile: str
    mode: str | None = None
    database: str | None = None
    migration: str | None = None
    size_bytes: int | None = None
    last_backup: str | None = None
    replication: str | None = None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # `env show` and --json only

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def list_envs(base_dir: Path | None = None) -> list[EnvInfo]:
    """One :class:`EnvInfo` per profile (dev, staging, prod)."""
    return [env_info(p, base_dir) for p in PROFILES]


def env_info(
    profile: str | None, base_dir: Path | None = None, *, settings: Settings | None = None
) -> EnvInfo:
    """Look at one profile; a failure becomes the row's ``error`` (one line, no secret)."""
    info = EnvInfo(profile=profile or "dev")
    try:
        settings = settings or Settings.load(profile, base_dir=base_dir)
        info.profile = settings.env
        info.mode = settings.target.mode.value
        info.database = settings.target.describe()
        _inspect(settings, info)
    except AfdbError as exc:
        info.error = exc.one_line()
    return info


def _inspect(settings: Settings, info: EnvInfo) -> None:
    """Fill schema, size, backups and replication; each part fails on its own."""
    info.details["backup_location"] = _backup_location(settings)
    info.details["branches"] = str(settings.data_dir.absolute() / "branches")
    path = settings.target.path
    if path is not None:
        info.size_bytes = _file_size(path)
        if info.size_bytes is None and settings.target.mode is Mode.EMBEDDED:
            info.migration = "no database yet"
            info.replication = _replication(settings, None, info)
            info.last_backup = _last_backup(settings, info)  # restorable even without a file
            return
    from autoforge_data.db import migrate
    from autoforge_data.db.engine import Database

    db = Database(settings)
    try:
        head = migrate.code_head()
        info.details["code_head"] = head
        rev = _safe(lambda: migrate.current_revision(db), info)
        info.migration = rev or ("no schema" if info.error is None else None)
        if rev and rev != head:
            info.migration = f"{rev} (code at {head}: afdb migrate)"
        if settings.target.mode is Mode.REMOTE:
            info.size_bytes = _remote_size(settings)
        elif path is not None:  # a replica's local copy exists now
            info.size_bytes = _file_size(path)
        info.replication = _replication(settings, db, info)
    finally:
        db.close()
    info.last_backup = _last_backup(settings, info)


def _safe(fn: Any, info: EnvInfo) -> Any:
    try:
        return fn()
    except AfdbError as exc:
        info.error = exc.one_line()
        return None


def _backup_location(settings: Settings) -> str:
    """AFDB_BACKUP_URL (without credentials), or the default backups/<profile> folder."""
    if settings.backup_url:
        return _no_credentials(settings.backup_url)
    base = settings.target.path.parent if settings.target.path else settings.data_dir.absolute()
    return str(base / "backups" / settings.env)


def _file_size(path: Path) -> int | None:
    """Main file plus WAL, or None if the database file does not exist yet."""
    if not path.exists():
        return None
    wal = Path(f"{path}-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def _remote_size(settings: Settings) -> int | None:
    """Storage of the profile's sqld namespace, when the admin API is configured."""
    if not settings.sqld_admin_url or settings.target.url is None:
        return None
    from autoforge_data.ops.sqld_admin import SqldAdmin, namespace_of_url

    with SqldAdmin(settings.sqld_admin_url, timeout=settings.connect_timeout + 5) as admin:
        return admin.stats(namespace_of_url(settings.target.url)).storage_bytes


def _last_backup(settings: Settings, info: EnvInfo) -> str:
    """The profile's newest backup at its own location: time, name, age, verified or not.

    Read from the backups themselves (``list_backups``), not from the shared status file:
    profiles that share a data folder share that file.
    """
    from autoforge_data.ops.backup import list_backups

    try:
        entries = [e for e in list_backups(settings) if e.manifest is not None]
    except AfdbError as exc:
        info.details["backup_error"] = exc.one_line()
        return "unknown"
    info.details["backups"] = len(entries)
    if not entries:
        return "none"
    last = entries[-1]
    created = datetime.fromisoformat(last.created_at.replace("Z", "+00:00"))
    age = _age((datetime.now(UTC) - created).total_seconds())
    verified = "verified" if last.verified else "not verified"
    return f"{created.strftime('%Y-%m-%dT%H:%M:%SZ')} ({last.name}, {age} ago, {verified})"


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"


def _replication(settings: Settings, db: Any, info: EnvInfo) -> str:
    """One short text: replica lag, Litestream state, or none configured."""
    from autoforge_data.ops.replication import replication_status

    status: dict[str, Any] = {}
    try:
        status = replication_status(settings, db)
    except AfdbError as exc:
        info.details["replication_error"] = exc.one_line()
    info.details["replication"] = status
    mode = settings.target.mode
    if mode is Mode.REPLICA:
        lag = (status.get("embedded_replica") or {}).get("lag_seconds")
        shown = f"{lag:.3f}s" if isinstance(lag, int | float) else "unknown"
        return f"embedded replica of {settings.target.url}, lag {shown}"
    if mode is Mode.REMOTE:
        return "server-side (sqld / Turso)"
    stream = status.get("litestream") or {}
    url = stream.get("replica") or settings.replicate_url
    if not url:
        return "none (no AFDB_REPLICATE_URL)"
    state = stream.get("state") or "configured"
    lag = stream.get("lag_seconds")
    lag_text = f", lag {lag:.1f}s" if isinstance(lag, int | float) else ""
    return f"litestream to {_no_credentials(str(url))} ({state}{lag_text})"


def _no_credentials(url: str) -> str:
    """A URL without user:password@ and without a query (which may carry keys)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
