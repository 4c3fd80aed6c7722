"""Where backups live: one small protocol, one implementation per URL scheme (file://, s3://).

Keys are flat file names validated by :func:`~autoforge_data.ops.names.check_name` (no folders,
no traversal). Writes are all-or-nothing: a file target writes temp → fsync → rename → fsync
(folder), 0600 files in a 0700 folder; an S3 object appears only when its upload completes.
Credentials come from the settings (``AFDB_S3_*``), never from the URL.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import urlsplit

from autoforge_data.errors import ConfigError, NotFound, Unavailable
from autoforge_data.fsutil import atomic_write, ensure_private_dir
from autoforge_data.ops.names import check_name, child_path
from autoforge_data.settings import Settings


class BackupTarget(Protocol):
    """A flat store of named objects (backups and their manifests)."""

    url: str  # where it is, for people (never a credential)

    def writer(self, key: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        """Write an object all or nothing: it exists under ``key`` only if the block succeeds."""
        ...

    def reader(self, key: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        """Read an object as a stream (NotFound if missing)."""
        ...

    def list_keys(self) -> list[str]:
        """Every key, sorted."""
        ...

    def delete(self, key: str) -> None:
        """Remove an object (no error if it is gone)."""
        ...

    def location(self, key: str) -> str:
        """A path or URL of the object, for listings."""
        ...

    def sweep(self, older_than: float) -> int:
        """Remove what interrupted writes left behind, older than ``older_than`` seconds."""
        ...


class FileTarget:
    """Backups in a local folder (0700), files 0600."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(os.path.abspath(folder))
        self.url = self.folder.as_uri()

    def _path(self, key: str) -> Path:
        return child_path(self.folder, key)

    @contextlib.contextmanager
    def writer(self, key: str) -> Iterator[IO[bytes]]:
        """Temp file in the folder → fsync → rename → fsync(folder)."""
        path = self._path(key)
        ensure_private_dir(self.folder)
        with atomic_write(path) as fh:
            yield fh

    @contextlib.contextmanager
    def reader(self, key: str) -> Iterator[IO[bytes]]:
        """Open the file for reading."""
        path = self._path(key)
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise NotFound(f"{key} is not in {self.url}") from None
        with fh:
            yield fh

    def list_keys(self) -> list[str]:
        """Names of the files (temp files start with '.' and are skipped)."""
        if not self.folder.is_dir():
            return []
        return sorted(p.name for p in self.folder.iterdir() if not p.name.startswith("."))

    def delete(self, key: str) -> None:
        """Unlink the file."""
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def location(self, key: str) -> str:
        """The file's path (the key is checked: a bad name or a planted symlink is refused)."""
        return str(self._path(key))

    def sweep(self, older_than: float) -> int:
        """Delete our temp files (``.<key>.*.tmp``) that a killed writer left behind."""
        if not self.folder.is_dir():
            return 0
        removed = 0
        cutoff = time.time() - older_than
        for p in self.folder.iterdir():
            stale = p.name.startswith(".") and p.name.endswith(".tmp") and not p.is_symlink()
            if stale and p.is_file() and p.stat().st_mtime < cutoff:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed += 1
        return removed


class S3Target:
    """Backups under ``s3://bucket/prefix/`` (any S3-compatible server, e.g. MinIO, moto)."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        check_name(key, "object name")
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextlib.contextmanager
    def writer(self, key: str) -> Iterator[IO[bytes]]:
        """Spool to a private temp file, then one upload (the object appears when it completes)."""
        full = self._key(key)
        with tempfile.TemporaryFile(prefix="afdb-s3-") as fh:
            yield fh
            fh.flush()
            fh.seek(0)
            self._call(self.client.upload_fileobj, fh, self.bucket, full)

    @contextlib.contextmanager
    def reader(self, key: str) -> Iterator[IO[bytes]]:
        """Stream the object's body."""
        full = self._key(key)
        resp = self._call(self.client.get_object, Bucket=self.bucket, Key=full)
        body = resp["Body"]
        try:
            yield body
        finally:
            body.close()

    def list_keys(self) -> list[str]:
        """Object names directly under the prefix."""
        start = f"{self.prefix}/" if self.prefix else ""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=start
        )
        out: list[str] = []
        try:
            for page in pages:
                out += [o["Key"][len(start) :] for o in page.get("Contents", [])]
        except Exception as exc:
            raise _s3_error(exc, self.url) from None
        return sorted(k for k in out if k and "/" not in k)

    def delete(self, key: str) -> None:
        """Delete the object."""
        self._call(self.client.delete_object, Bucket=self.bucket, Key=self._key(key))

    def location(self, key: str) -> str:
        """The object's s3:// URL (the key is checked)."""
        check_name(key, "object name")
        return f"{self.url}/{key}"

    def sweep(self, older_than: float) -> int:
        """Nothing to do: an S3 object exists only once its upload completed."""
        return 0

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise _s3_error(exc, self.url) from None


def _s3_error(exc: Exception, url: str) -> Exception:
    """Our error for a boto3/botocore error (the message never holds credentials)."""
    code = ""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
    if code in ("NoSuchKey", "404", "NoSuchBucket"):
        return NotFound(f"{url}: {code}", hint="check AFDB_BACKUP_URL and that the bucket exists")
    if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
        return ConfigError(
            f"{url}: the S3 server refused our credentials ({code})",
            hint="check AFDB_S3_ACCESS_KEY_ID / AFDB_S3_SECRET_ACCESS_KEY",
        )
    return Unavailable(
        f"{url}: S3 request failed ({type(exc).__name__}{': ' + code if code else ''})",
        hint="check AFDB_S3_ENDPOINT_URL and that the server is reachable",
    )


def default_folder(settings: Settings) -> Path:
    """``backups/<profile>`` beside the database (the data folder in remote mode)."""
    path = settings.target.path
    base = path.parent if path is not None else settings.data_dir
    return Path(os.path.abspath(base)) / "backups" / settings.env


def open_target(settings: Settings, url: str | None = None) -> BackupTarget:
    """The target for ``url`` (default: AFDB_BACKUP_URL, then backups/<profile>)."""
    raw = url or settings.backup_url
    if not raw:
        return FileTarget(default_folder(settings))
    parts = urlsplit(raw)
    if parts.username or parts.password:
        raise ConfigError(
            "the backup URL carries credentials",
            hint="put them in AFDB_S3_ACCESS_KEY_ID / AFDB_S3_SECRET_ACCESS_KEY",
        )
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"file:// URL with a host {parts.netloc!r}", hint="file:///abs/path")
        return FileTarget(Path(parts.path))
    if parts.scheme == "":
        return FileTarget(Path(raw))
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ConfigError("the s3:// URL has no bucket", hint="s3://bucket/prefix")
        return S3Target(parts.netloc, parts.path, s3_client(settings))
    raise ConfigError(
        f"unknown backup URL scheme {parts.scheme!r}", hint="use file:///path or s3://bucket/prefix"
    )


def s3_client(settings: Settings) -> Any:
    """A boto3 S3 client from the settings (bounded timeouts, few retries)."""
    import boto3  # type: ignore[import-untyped]
    from botocore.config import Config  # type: ignore[import-untyped]

    secret = settings.s3_secret_access_key
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
        config=Config(
            connect_timeout=settings.connect_timeout,
            read_timeout=max(settings.db_timeout, 30.0),
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path"},
        ),
    )
