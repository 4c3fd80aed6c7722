"""`afdb backup redis`: an RDB snapshot of a Redis through the replication protocol.

``redis-cli --rdb FILE`` asks the server for a full resync, receives the RDB it generates for
a replica and writes it out when the transfer is complete; so the file is the server's state at
that moment (``BGSAVE`` followed by a copy of ``dump.rdb``, as the seed did, copies whatever file
is on disk, possibly stale or half-written). The password goes to redis-cli through the
``REDISCLI_AUTH`` environment variable (never ``-a``: the command line is visible to every
user). The file is validated (``REDIS`` + 4-digit version, end-of-file opcode) before it gets
its final name (temp → fsync → rename → fsync folder, 0600).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from autoforge_data.errors import ConfigError, Corrupt, InvalidInput, Unavailable
from autoforge_data.fsutil import ensure_private_dir, fsync_dir
from autoforge_data.ops.names import check_name, child_path
from autoforge_data.settings import Settings

_RDB_HEADER = re.compile(rb"^REDIS(\d{4})")


@dataclass(frozen=True)
class RedisBackupOptions:
    """Which Redis, where the RDB goes (a folder, or a file path), how long to wait."""

    url: str
    dest: Path
    timeout: float = 600.0

    def check(self) -> tuple[str, int, int]:
        """(host, port, db) from the URL; credentials in the URL are refused."""
        parts = urlsplit(self.url)
        if parts.scheme not in ("redis", "rediss"):
            raise InvalidInput(f"not a redis:// URL: {parts.scheme}://…", hint="redis://host:6379")
        if parts.password or parts.username:
            raise ConfigError(
                "the Redis URL carries credentials",
                hint="use AFDB_REDIS_USERNAME / AFDB_REDIS_PASSWORD",
            )
        if not parts.hostname:
            raise InvalidInput("the Redis URL has no host", hint="redis://host:6379")
        if not 0 < self.timeout <= 86_400:
            raise InvalidInput("timeout out of range")
        try:
            port = parts.port or 6379
        except ValueError:
            raise InvalidInput("the Redis URL has an invalid port") from None
        db = parts.path.strip("/") or "0"
        if not db.isdigit():
            raise InvalidInput(f"invalid Redis database {db!r}")
        return parts.hostname, port, int(db)


@dataclass(frozen=True)
class RedisBackupInfo:
    """A saved RDB file."""

    path: Path
    size_bytes: int
    rdb_version: int
    seconds: float


def _target(dest: Path) -> Path:
    """A folder → ``redis-<UTC time>.rdb`` inside it; else a checked file name in its folder."""
    if dest.is_dir() and not dest.is_symlink():
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
        return child_path(dest, f"redis-{stamp}", ".rdb")
    check_name(dest.name, "file name")
    ensure_private_dir(dest.parent)
    return child_path(dest.parent, dest.name)


def backup_redis(settings: Settings, options: RedisBackupOptions) -> RedisBackupInfo:
    """Save an RDB snapshot of the Redis at ``options.url``; see the module docstring."""
    host, port, _db = options.check()
    target = _target(Path(options.dest))
    cli = shutil.which("redis-cli")
    if cli is None:
        raise ConfigError("redis-cli is not installed", hint="apt-get install redis-tools")
    argv = [cli, "-h", host, "-p", str(port)]
    if settings.redis_username:
        argv += ["--user", settings.redis_username]
    if urlsplit(options.url).scheme == "rediss":
        argv.append("--tls")
        if settings.redis_tls_ca:
            argv += ["--cacert", str(settings.redis_tls_ca)]
    env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
    if settings.redis_password is not None:
        env["REDISCLI_AUTH"] = settings.redis_password.get_secret_value()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    start = time.perf_counter()
    try:
        _run([*argv, "--rdb", str(tmp)], env, options.timeout)
        version = validate_rdb(tmp)
        os.chmod(tmp, 0o600)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return RedisBackupInfo(target, target.stat().st_size, version, time.perf_counter() - start)


def _run(argv: list[str], env: dict[str, str], timeout: float) -> None:
    try:
        proc = subprocess.run(  # noqa: S603 - fixed argv, no shell; the password is in env
            argv, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise Unavailable(
            f"the RDB transfer did not finish within {timeout:.0f} s", hint="raise --timeout"
        ) from None
    said = (proc.stderr + proc.stdout).strip()
    if proc.returncode != 0 or "Transfer finished with success" not in said:
        first = said.splitlines()[-1] if said else f"exit code {proc.returncode}"
        raise Unavailable(
            f"redis-cli --rdb failed: {first[:200]}",
            hint="check the URL, AFDB_REDIS_USERNAME/PASSWORD and that the user may SYNC",
        )


def validate_rdb(path: Path) -> int:
    """The RDB version of a complete RDB file (Corrupt otherwise)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(9)
        match = _RDB_HEADER.match(head)
        if match is None:
            raise Corrupt(f"{path.name} is not an RDB file (no REDIS header)")
        version = int(match.group(1))
        if version >= 5:  # an 8-byte CRC64 follows the EOF opcode
            if size < 9 + 9:
                raise Corrupt(f"{path.name} is truncated")
            fh.seek(size - 9)
            if fh.read(1) != b"\xff":
                raise Corrupt(f"{path.name} is truncated (no end-of-file opcode)")
    return version
