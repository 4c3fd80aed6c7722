"""Settings: profiles, .env files, the three modes, and one clear error per invalid combination."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autoforge_data.errors import ConfigError
from autoforge_data.settings import Mode, Settings


def test_default_is_dev_embedded(tmp_path: Path) -> None:
    """With nothing set: profile dev, an embedded file data/dev.db, synchronous NORMAL."""
    s = Settings.load(base_dir=tmp_path)
    assert s.env == "dev"
    assert s.target.mode is Mode.EMBEDDED
    assert s.target.path == (Path("data") / "dev.db").absolute()
    assert s.synchronous_level == "NORMAL"


@pytest.mark.parametrize("profile", ["staging", "prod"])
def test_each_profile_has_its_own_database(tmp_path: Path, profile: str) -> None:
    """staging and prod use their own file and synchronous FULL."""
    s = Settings.load(profile, base_dir=tmp_path)
    assert s.target.path is not None and s.target.path.name == f"{profile}.db"
    assert s.synchronous_level == "FULL"


def test_env_files_and_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The profile comes from .env; .env.<profile> overrides .env; the environment beats both."""
    (tmp_path / ".env").write_text("AFDB_ENV=staging\nAFDB_PORT=9001\nAFDB_POOL_SIZE=3\n")
    (tmp_path / ".env.staging").write_text("AFDB_PORT=9002\n")
    s = Settings.load(base_dir=tmp_path)
    assert (s.env, s.port, s.pool_size) == ("staging", 9002, 3)
    monkeypatch.setenv("AFDB_PORT", "9003")
    assert Settings.load(base_dir=tmp_path).port == 9003


@pytest.mark.parametrize(
    ("url", "mode"),
    [
        ("data/x.db", Mode.EMBEDDED),
        ("file:data/x.db", Mode.EMBEDDED),
        ("file:///tmp/x.db", Mode.EMBEDDED),
        ("http://127.0.0.1:8080", Mode.REMOTE),
        ("http://localhost:8080", Mode.REMOTE),
        ("libsql://db-org.turso.io", Mode.REMOTE),
        ("https://db-org.turso.io", Mode.REMOTE),
    ],
)
def test_accepted_urls(tmp_path: Path, url: str, mode: Mode) -> None:
    """Files, file: URLs, loopback http and TLS URLs with a token are accepted."""
    s = Settings.load(base_dir=tmp_path, database_url=url, auth_token="t0k")
    assert s.target.mode is mode
    if mode is Mode.REMOTE:
        assert s.target.url is not None and s.target.url.startswith("http")


def test_libsql_scheme_becomes_https(tmp_path: Path) -> None:
    """libsql://host is spoken as HTTPS (TLS)."""
    s = Settings.load(base_dir=tmp_path, database_url="libsql://db.turso.io", auth_token="x")
    assert s.target.url == "https://db.turso.io"


def test_replica_mode(tmp_path: Path) -> None:
    """A local path plus AFDB_SYNC_URL is an embedded replica."""
    s = Settings.load(base_dir=tmp_path, database_url="data/r.db", sync_url="http://127.0.0.1:1")
    assert s.target.mode is Mode.REPLICA
    assert s.target.url == "http://127.0.0.1:1"


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"database_url": "ftp://host/db"}, "unknown scheme"),
        ({"database_url": "http://db.example.com", "auth_token": "x"}, "plain http"),
        ({"database_url": "libsql://db.example.com"}, "AFDB_AUTH_TOKEN is not set"),
        ({"database_url": "https://user:pw@db.example.com"}, "must not carry credentials"),
        ({"database_url": "https://db.example.com?authToken=abc"}, "must not carry credentials"),
        ({"sync_interval": 5.0}, "needs AFDB_SYNC_URL"),
        ({"mode": "replica"}, "needs AFDB_SYNC_URL"),
        (
            {"database_url": "http://127.0.0.1:1", "sync_url": "http://127.0.0.1:2"},
            "needs a local file",
        ),
        ({"database_url": ":memory:"}, "in-memory"),
        ({"port": 0}, "AFDB_PORT"),
        ({"database_url": "http://127.0.0.1:1", "encryption_key": "k"}, "only applies"),
    ],
)
def test_invalid_combinations(tmp_path: Path, kwargs: dict[str, object], needle: str) -> None:
    """Each invalid combination is one ConfigError line that names the problem."""
    with pytest.raises(ConfigError) as info:
        Settings.load(base_dir=tmp_path, **kwargs)  # type: ignore[arg-type]
    assert needle in info.value.one_line()
    assert "\n" not in info.value.one_line()
    assert info.value.hint


def test_unknown_profile(tmp_path: Path) -> None:
    """AFDB_ENV must be dev, staging or prod."""
    with pytest.raises(ConfigError, match="unknown profile"):
        Settings.load("qa", base_dir=tmp_path)


def test_unwritable_data_dir(tmp_path: Path) -> None:
    """A data directory where no file can be created is rejected at start (even as root)."""
    with pytest.raises(ConfigError, match="not writable"):
        Settings.load(base_dir=tmp_path, data_dir=Path("/proc/afdb-data"))
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(ConfigError, match="not writable"):
            Settings.load(base_dir=tmp_path, data_dir=ro / "data")


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    """A data directory path that is a regular file is rejected (works even as root)."""
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        Settings.load(base_dir=tmp_path, data_dir=tmp_path / "afile" / "data")


def test_secrets_never_in_repr(tmp_path: Path) -> None:
    """The token and the encryption key never show in repr or in the doctor's view."""
    s = Settings.load(
        base_dir=tmp_path, database_url="libsql://db.turso.io", auth_token="sekrit-token-123"
    )
    assert "sekrit" not in repr(s)
    assert "sekrit" not in str(s.redacted())
    assert "sekrit" not in s.target.describe()
