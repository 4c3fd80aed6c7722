"""Settings: one object, read once at the edge (CLI callback, app factory, Alembic env.py).

Values come from the process environment, then ``.env.<profile>``, then ``.env`` (earlier wins).
Encrypted env files (``.env.enc``, ``.env.<profile>.enc``) and a secrets directory
(``AFDB_SECRETS_DIR``) add to these: see :mod:`autoforge_data.secrets` for the order.
The profile is ``AFDB_ENV`` (dev, staging or prod; dev by default) and each profile has its own
database. :meth:`Settings.load` also checks the combination of values and rejects an invalid one
with a single clear :class:`~autoforge_data.errors.ConfigError`.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from autoforge_data import secrets
from autoforge_data.errors import ConfigError

Profile = Literal["dev", "staging", "prod"]
PROFILES: tuple[Profile, ...] = ("dev", "staging", "prod")
_REMOTE_SCHEMES = {"libsql", "https", "http", "wss", "ws"}


class Mode(enum.StrEnum):
    """How the database is reached."""

    EMBEDDED = "embedded"
    REMOTE = "remote"
    REPLICA = "replica"


@dataclass(frozen=True)
class DatabaseTarget:
    """Where the database is, resolved from the settings; holds no secret."""

    mode: Mode
    path: Path | None  # the local file (embedded and replica)
    url: str | None  # the server's base URL, http(s) (remote and replica)

    def describe(self) -> str:
        """A short text for logs and `afdb doctor`: mode and location, never credentials."""
        where = str(self.path) if self.mode is Mode.EMBEDDED else f"{self.path} <- {self.url}"
        if self.mode is Mode.REMOTE:
            where = str(self.url)
        return f"{self.mode.value}: {where}"


class Settings(BaseSettings):
    """All configuration of the data platform; see the README's Configuration table."""

    model_config = SettingsConfigDict(
        env_prefix="AFDB_", extra="ignore", case_sensitive=False, secrets_dir=None
    )

    env: Profile = "dev"
    data_dir: Path = Path("data")
    database_url: str | None = None
    auth_token: SecretStr | None = None
    sync_url: str | None = None
    sync_interval: float | None = Field(default=None, gt=0)
    mode: Mode | None = None
    encryption_key: SecretStr | None = None
    db_driver: Literal["auto", "sqlite3", "libsql"] = "auto"
    synchronous: Literal["FULL", "NORMAL", "EXTRA"] | None = None
    busy_timeout_ms: int = Field(default=5000, ge=0, le=600_000)
    db_timeout: float = Field(default=5.0, gt=0, le=600)
    connect_timeout: float = Field(default=2.0, gt=0, le=60)
    pool_size: int = Field(default=8, ge=1, le=256)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    redis_url: str | None = None
    redis_cluster: bool = False
    redis_username: str | None = None
    redis_password: SecretStr | None = None
    redis_tls_ca: Path | None = None
    redis_timeout: float = Field(default=0.1, gt=0, le=30)
    redis_pool_size: int = Field(default=32, ge=1, le=1024)
    cache_ttl: float = Field(default=300.0, gt=0, le=86_400)
    cache_l1_entries: int = Field(default=10_000, ge=0, le=10_000_000)
    cache_max_value_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)
    index_backend: Literal["memory", "exact", "libsql"] = "memory"
    embed_batch_size: int = Field(default=64, ge=1, le=2048)
    openai_api_key: SecretStr | None = None
    openai_base_url: str = "https://api.openai.com/v1"
    openai_timeout: float = Field(default=20.0, gt=0, le=600)
    openai_max_retries: int = Field(default=4, ge=0, le=20)
    # --- operations: backups, branches, replication (ops/) ---
    backup_url: str | None = None  # file://… or s3://bucket/prefix; default backups/<profile>
    backup_encryption_key: SecretStr | None = None  # AES-256-GCM for backup files
    backup_hmac_key: SecretStr | None = None  # signs manifests
    backup_every: float | None = Field(default=None, gt=0)  # seconds; the service's scheduler
    backup_keep_last: int | None = Field(default=None, ge=1)
    backup_keep_daily: int | None = Field(default=None, ge=0)
    backup_keep_weekly: int | None = Field(default=None, ge=0)
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    replicate_url: str | None = None  # Litestream replica: file://… or s3://…
    replicate_sync_interval: float = Field(default=1.0, gt=0, le=3600)
    sqld_admin_url: str | None = None  # sqld --admin-listen-addr, for namespace branches
    turso_api_url: str = "https://api.turso.tech"
    turso_api_token: SecretStr | None = None
    turso_org: str | None = None
    turso_group: str = "default"
    # --- service: API, auth, events (api/) ---
    max_request_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)
    events_queue_size: int = Field(default=256, ge=1, le=100_000)
    api_auth: Literal["auto", "required", "off"] = "auto"  # auto: off only for dev on loopback
    jwt_private_key_file: Path | None = None  # Ed25519 key for `afdb token create`
    # --- secrets ---
    secrets_dir: Path | None = None

    @classmethod
    def load(
        cls, env: str | None = None, *, base_dir: Path | None = None, **overrides: Any
    ) -> Settings:
        """Read the settings for a profile and check them; raises ConfigError with one line."""
        base = base_dir or Path.cwd()
        profile = env or os.environ.get("AFDB_ENV") or _dotenv_value(base / ".env", "AFDB_ENV")
        profile = profile or "dev"
        if profile not in PROFILES:
            raise ConfigError(
                f"unknown profile AFDB_ENV={profile!r}", hint="use one of: dev, staging, prod"
            )
        files = (base / ".env", base / f".env.{profile}")
        encrypted, secrets_dir = secrets.settings_sources(base, profile, overrides, os.environ)
        values = {**encrypted, **overrides}  # encrypted env files (in memory), below the env
        try:
            settings = cls(  # type: ignore[call-arg]
                _env_file=files, _secrets_dir=secrets_dir, env=profile, **values
            )
        except ValidationError as exc:
            raise _config_error(exc) from None
        settings.check()
        return settings

    @cached_property
    def target(self) -> DatabaseTarget:
        """The resolved database location (validated by :meth:`check`)."""
        return _resolve_target(self)

    @property
    def synchronous_level(self) -> str:
        """`PRAGMA synchronous` for embedded files: FULL in staging and prod, NORMAL in dev."""
        if self.synchronous:
            return self.synchronous
        return "NORMAL" if self.env == "dev" else "FULL"

    def check(self) -> None:
        """Reject invalid combinations with one clear message (see the README)."""
        target = self.target
        if target.mode is not Mode.EMBEDDED and self.encryption_key is not None:
            raise ConfigError(
                "AFDB_ENCRYPTION_KEY only applies to embedded database files",
                hint="unset it, or point AFDB_DATABASE_URL at a file without AFDB_SYNC_URL",
            )
        if target.path is not None:
            _check_writable(target.path.parent)
        if self.redis_url:
            from autoforge_data.cache.target import parse_redis_url

            secret = self.redis_password.get_secret_value() if self.redis_password else ""
            parse_redis_url(self.redis_url, cluster=self.redis_cluster, password_set=bool(secret))

    def redacted(self) -> dict[str, str]:
        """The settings as text for `afdb doctor`, secrets shown only as set / not set."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                out[name] = "set" if value.get_secret_value() else "empty"
            elif value is None:
                out[name] = "-"
            else:
                out[name] = str(value.value if isinstance(value, enum.Enum) else value)
        return out


def _dotenv_value(path: Path, key: str) -> str | None:
    """One value from a dotenv file, without loading the rest (used to find the profile)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        name, sep, value = line.partition("=")
        if sep and name.strip().removeprefix("export ").strip() == key:
            return value.strip().strip("'\"") or None
    return None


def _config_error(exc: ValidationError) -> ConfigError:
    first = exc.errors()[0]
    field = "AFDB_" + ".".join(str(p) for p in first["loc"]).upper()
    return ConfigError(f"invalid setting {field}: {first['msg']}", hint="see README, Configuration")


def _resolve_target(s: Settings) -> DatabaseTarget:
    raw = s.database_url
    if raw is None or raw == "":
        local: Path | None = s.data_dir / f"{s.env}.db"
        remote_url = None
    else:
        local, remote_url = _parse_database_url(raw)
    if s.sync_url:
        if local is None:
            raise ConfigError(
                "AFDB_SYNC_URL needs a local file in AFDB_DATABASE_URL (embedded replica)",
                hint="set AFDB_DATABASE_URL=data/replica.db, or unset AFDB_SYNC_URL",
            )
        sync = _check_remote_url(s.sync_url, "AFDB_SYNC_URL", s.auth_token)
        return DatabaseTarget(Mode.REPLICA, local.absolute(), sync)
    if s.mode is Mode.REPLICA or s.sync_interval is not None:
        raise ConfigError(
            "an embedded replica needs AFDB_SYNC_URL (the primary's URL)",
            hint="set AFDB_SYNC_URL=https://db.turso.io, or unset AFDB_MODE/AFDB_SYNC_INTERVAL",
        )
    if remote_url is not None:
        url = _check_remote_url(remote_url, "AFDB_DATABASE_URL", s.auth_token)
        return DatabaseTarget(Mode.REMOTE, None, url)
    assert local is not None
    if s.mode is Mode.REMOTE:
        raise ConfigError(
            "AFDB_MODE=remote needs a server URL in AFDB_DATABASE_URL",
            hint="e.g. AFDB_DATABASE_URL=libsql://your-db.turso.io",
        )
    return DatabaseTarget(Mode.EMBEDDED, local.absolute(), None)


def _parse_database_url(raw: str) -> tuple[Path | None, str | None]:
    """Split AFDB_DATABASE_URL into a local path or a remote URL; rejects unknown schemes."""
    if raw.startswith("file:"):
        rest = raw[5:]
        if rest.startswith("//"):
            parts = urlsplit(raw)
            if parts.netloc not in ("", "localhost"):
                raise ConfigError(
                    f"file: URL with a host is not supported: {parts.netloc!r}",
                    hint="use file:///absolute/path.db or a plain path",
                )
            rest = parts.path
        rest = rest.split("?", 1)[0]
        if not rest:
            raise ConfigError("AFDB_DATABASE_URL=file: has no path", hint="e.g. file:data/dev.db")
        return Path(rest), None
    if "://" in raw:
        scheme = raw.split("://", 1)[0].lower()
        if scheme not in _REMOTE_SCHEMES:
            raise ConfigError(
                f"unknown scheme {scheme!r} in AFDB_DATABASE_URL",
                hint="use a file path, file:, libsql://, https:// or http://",
            )
        return None, raw
    if raw == ":memory:":
        raise ConfigError(
            "an in-memory database cannot be shared by the app's connections",
            hint="use a file path, e.g. AFDB_DATABASE_URL=data/dev.db",
        )
    return Path(raw), None


def _check_remote_url(raw: str, name: str, token: SecretStr | None) -> str:
    """Validate a server URL and return it as http(s) with no credentials in it."""
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme not in _REMOTE_SCHEMES:
        raise ConfigError(
            f"unknown scheme {scheme!r} in {name}", hint="use libsql://, https:// or http://"
        )
    if parts.username or parts.password or "authtoken" in parts.query.lower():
        raise ConfigError(
            f"{name} must not carry credentials",
            hint="put the token in AFDB_AUTH_TOKEN (or the secrets directory), not in the URL",
        )
    host = parts.hostname
    if not host:
        raise ConfigError(f"{name} has no host", hint="e.g. libsql://your-db.turso.io")
    tls = scheme in ("libsql", "https", "wss")
    loopback = _is_loopback(host)
    if not tls and not loopback:
        raise ConfigError(
            f"{name} uses plain {scheme}:// to a non-loopback host {host!r}",
            hint="use libsql:// or https:// (TLS); plain http is only allowed to 127.0.0.1",
        )
    if not loopback and (token is None or not token.get_secret_value()):
        raise ConfigError(
            f"{name} points at {host!r} but AFDB_AUTH_TOKEN is not set",
            hint="create a token (turso db tokens create, or afdb token create) and set it",
        )
    http_scheme = "https" if tls else "http"
    return urlunsplit((http_scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_writable(directory: Path) -> None:
    """The data directory must exist and be writable, or be creatable."""
    probe = directory.absolute()
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(
            f"data directory {directory} is not a directory",
            hint="set AFDB_DATA_DIR or AFDB_DATABASE_URL to a writable location",
        )
    try:  # a real write, not os.access: root passes access checks on read-only places
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError:
        raise ConfigError(
            f"data directory {directory} is not writable",
            hint="set AFDB_DATA_DIR or AFDB_DATABASE_URL to a writable location",
        ) from None
