"""Shared fixtures: real sqld and redis-server processes, and databases in the three modes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autoforge_data import cli
from autoforge_data.db import migrate
from autoforge_data.db.engine import Database
from autoforge_data.settings import Settings
from servers import Redis, Sqld, primary_and_replica, start_redis, start_sqld

MODES = ("embedded", "remote", "replica")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No AFDB_* variable of the caller's shell leaks into a test; cwd is a fresh folder."""
    import os

    for name in list(os.environ):
        if name.startswith("AFDB_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def sqld(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sqld]:
    """One sqld primary for the session (tests use their own rows, never global counts)."""
    server = start_sqld(tmp_path_factory.mktemp("sqld"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fresh_sqld(tmp_path: Path) -> Iterator[Sqld]:
    """A sqld primary of the test's own, that the test may kill, pause and restart."""
    server = start_sqld(tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def sqld_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sqld, Sqld]]:
    """A sqld primary and a sqld read replica following it (--primary-grpc-url)."""
    with primary_and_replica(tmp_path_factory.mktemp("sqldpair")) as pair:
        yield pair


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Redis]:
    """A redis-server of the test's own on a free port (never the machine's shared one)."""
    server = start_redis(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def settings_for(mode: str, tmp: Path, server: Sqld | None = None, **extra: object) -> Settings:
    """Settings for one of the three modes, rooted in ``tmp``."""
    if mode == "embedded":
        return Settings.load("dev", base_dir=tmp, data_dir=tmp / "data", **extra)
    assert server is not None
    if mode == "remote":
        return Settings.load("dev", base_dir=tmp, database_url=server.url, **extra)
    return Settings.load(
        "dev",
        base_dir=tmp,
        database_url=str(tmp / "replica" / "local.db"),
        sync_url=server.url,
        **extra,
    )


@pytest.fixture(params=MODES)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated database in each mode: embedded file, remote sqld, embedded replica of sqld."""
    server = request.getfixturevalue("sqld") if request.param != "embedded" else None
    database = Database(settings_for(request.param, tmp_path, server))
    try:
        migrate.upgrade(database)
        if database.replica is not None:
            database.replica.sync()
        yield database
    finally:
        database.close()


def unique_email() -> str:
    """An email no other test uses (the remote database is shared by the session)."""
    return f"u{uuid.uuid4().hex[:12]}@example.com"


@pytest.fixture(scope="session")
def jwt_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, Path]:
    """An Ed25519 key pair: the private key (PEM) and the public key file sqld reads."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path = tmp_path_factory.mktemp("jwt") / "jwt.pub.pem"
    path.write_bytes(public)
    return private, path


@pytest.fixture(scope="session")
def jwt_sqld(
    tmp_path_factory: pytest.TempPathFactory, jwt_keys: tuple[bytes, Path]
) -> Iterator[Sqld]:
    """A sqld that requires JWTs signed by ``jwt_keys``."""
    server = start_sqld(
        tmp_path_factory.mktemp("sqldjwt"), extra=["--auth-jwt-key-file", str(jwt_keys[1])]
    )
    try:
        yield server
    finally:
        server.stop()


def mint_token(private_pem: bytes, *, read_only: bool = False, ttl: int = 600) -> str:
    """A sqld token (EdDSA JWT) with an expiry, full access or read-only."""
    import time

    import jwt

    claims: dict[str, object] = {"exp": int(time.time()) + ttl, "iat": int(time.time())}
    if read_only:
        claims["a"] = "ro"
    return jwt.encode(claims, private_pem, algorithm="EdDSA")


class Ticker:
    """A thread that counts 1 ms sleeps: if it stops counting, something froze the process."""

    def __init__(self) -> None:
        import threading

        self.ticks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import time

        while not self._stop.is_set():
            self.ticks += 1
            time.sleep(0.001)

    def start(self) -> Ticker:
        """Start counting."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop counting and join the thread."""
        self._stop.set()
        self._thread.join()


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """Run `afdb ...` in-process; returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = cli.run(list(args))
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return code, out.out, out.err

    yield run
    cli._state.env = None
