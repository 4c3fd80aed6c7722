"""Secrets: the encrypted env file (scrypt + AES-256-GCM), the keyring, the secrets directory."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest

from autoforge_data import secrets
from autoforge_data.errors import ConfigError, Corrupt
from autoforge_data.secrets import Passphrase
from autoforge_data.settings import Settings
from keyring_file_backend import FileKeyring

AFDB = str(Path(sys.executable).parent / "afdb")
TESTS = Path(__file__).resolve().parent
KEY = Passphrase("correct horse battery staple", "AFDB_SECRETS_KEY")
PLAIN = "AFDB_AUTH_TOKEN=tok-7f3a\nAFDB_REDIS_PASSWORD='p w=d#1'\nexport AFDB_POOL_SIZE=5\n"


def _afdb(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("AFDB_")} | (env or {})
    return subprocess.run(  # noqa: PLW1510 - callers check the code
        [AFDB, *args], env=full, cwd=cwd, capture_output=True, text=True, timeout=60, input=stdin
    )


@pytest.fixture
def file_keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A keyring backend of the test's own, in this process (restored afterwards)."""
    path = tmp_path / "keyring.json"
    monkeypatch.setenv("TEST_KEYRING_FILE", str(path))
    previous = keyring.get_keyring()
    keyring.set_keyring(FileKeyring())
    try:
        yield path
    finally:
        keyring.set_keyring(previous)


def test_round_trip_and_format() -> None:
    """Decrypt(encrypt(x)) == x; versioned header; fresh salt and nonce each time."""
    one, two = secrets.encrypt(PLAIN.encode(), KEY), secrets.encrypt(PLAIN.encode(), KEY)
    assert secrets.decrypt(one, KEY).decode() == PLAIN
    header = one.decode().splitlines()[0]
    assert header.startswith("afdb-secrets v1 scrypt n=32768 r=8 p=1 salt=")
    assert one != two and header != two.decode().splitlines()[0]
    assert b"tok-7f3a" not in one and KEY.value.encode() not in one
    assert KEY.value not in repr(KEY)


def test_wrong_key_and_tampering_are_detected() -> None:
    """Wrong key, a flipped ciphertext byte, a changed header parameter: Corrupt, no plaintext."""
    blob = secrets.encrypt(PLAIN.encode(), KEY)
    with pytest.raises(Corrupt) as info:
        secrets.decrypt(blob, Passphrase("zq-not-it-9", "AFDB_SECRETS_KEY"))
    assert "AFDB_SECRETS_KEY" in (info.value.hint or "")
    assert "zq-not-it-9" not in info.value.one_line() and "tok-7f3a" not in info.value.one_line()
    header, body = blob.split(b"\n", 1)
    flipped = bytearray(body)
    flipped[5] = ord("A") if flipped[5] != ord("A") else ord("B")
    with pytest.raises(Corrupt):
        secrets.decrypt(header + b"\n" + bytes(flipped), KEY)
    weaker = header.replace(b"n=32768", b"n=16384")
    with pytest.raises(Corrupt):
        secrets.decrypt(weaker + b"\n" + body, KEY)
    with pytest.raises(Corrupt, match="unknown or damaged"):
        secrets.decrypt(header.replace(b" v1 ", b" v9 ") + b"\n" + body, KEY)
    with pytest.raises(Corrupt, match="not an afdb secrets file"):
        secrets.decrypt(PLAIN.encode(), KEY)
    with pytest.raises(Corrupt, match="out-of-range"):
        secrets.decrypt(header.replace(b"n=32768", b"n=1048577") + b"\n" + body, KEY)


def _write_enc(path: Path, text: str) -> None:
    path.write_bytes(secrets.encrypt(text.encode(), KEY))


def test_settings_read_encrypted_env_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`.env.<profile>.enc` feeds Settings; the environment still wins; no plaintext on disk."""
    (tmp_path / ".env").write_text("AFDB_POOL_SIZE=3\nAFDB_CONNECT_TIMEOUT=4\n")
    _write_enc(tmp_path / ".env.enc", "AFDB_AUTH_TOKEN=from-generic\nAFDB_CONNECT_TIMEOUT=7\n")
    _write_enc(tmp_path / ".env.staging.enc", PLAIN)
    monkeypatch.setenv("AFDB_SECRETS_KEY", KEY.value)
    monkeypatch.setenv("AFDB_REDIS_PASSWORD", "from-env")
    before = _files(tmp_path) | _files(Path(tempfile.gettempdir()))
    s = Settings.load("staging", base_dir=tmp_path, data_dir=tmp_path / "data")
    assert s.auth_token is not None and s.auth_token.get_secret_value() == "tok-7f3a"
    assert s.redis_password is not None and s.redis_password.get_secret_value() == "from-env"
    assert s.pool_size == 5  # encrypted beats the plaintext .env
    assert s.connect_timeout == 7  # the generic .env.enc applies under the profile's
    new = (_files(tmp_path) | _files(Path(tempfile.gettempdir()))) - before
    for path in new:
        if path.is_file():
            assert b"tok-7f3a" not in path.read_bytes(), path
    dev = Settings.load("dev", base_dir=tmp_path, data_dir=tmp_path / "data")
    assert dev.auth_token is not None and dev.auth_token.get_secret_value() == "from-generic"


def _files(root: Path) -> set[Path]:
    try:
        return {p for p in root.rglob("*") if p.is_file()}
    except OSError:
        return set()


def test_encrypted_env_without_key(tmp_path: Path) -> None:
    """A `.env.enc` without any key is one ConfigError naming both key sources."""
    _write_enc(tmp_path / ".env.enc", PLAIN)
    with pytest.raises(ConfigError) as info:
        Settings.load("dev", base_dir=tmp_path)
    assert "AFDB_SECRETS_KEY" in (info.value.hint or "") and "keyring" in (info.value.hint or "")


def test_encrypted_env_wrong_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong AFDB_SECRETS_KEY is a Corrupt error that names the file, not the values."""
    _write_enc(tmp_path / ".env.enc", PLAIN)
    monkeypatch.setenv("AFDB_SECRETS_KEY", "not the key")
    with pytest.raises(Corrupt) as info:
        Settings.load("dev", base_dir=tmp_path)
    assert ".env.enc" in info.value.message and "not the key" not in info.value.one_line()


def test_keyring_key_comes_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, file_keyring: Path
) -> None:
    """With a keyring entry the passphrase comes from it; without, from AFDB_SECRETS_KEY."""
    monkeypatch.setenv("AFDB_SECRETS_KEY", "env-key")
    assert secrets.passphrase() == Passphrase("env-key", "AFDB_SECRETS_KEY")
    secrets.store_in_keyring(KEY.value)
    assert secrets.passphrase().value == KEY.value
    assert secrets.passphrase().source == "the OS keyring"
    _write_enc(tmp_path / ".env.enc", PLAIN)
    s = Settings.load("dev", base_dir=tmp_path)
    assert s.auth_token is not None and s.auth_token.get_secret_value() == "tok-7f3a"


def test_no_keyring_backend_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """On this machine (no OS keyring) the environment variable is used, and storing fails."""
    from keyring.backends import fail

    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        monkeypatch.setenv("AFDB_SECRETS_KEY", "k")
        assert secrets.passphrase().source == "AFDB_SECRETS_KEY"
        with pytest.raises(ConfigError, match="no OS keyring"):
            secrets.store_in_keyring("x")
    finally:
        keyring.set_keyring(previous)


def test_secrets_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One file per setting (Docker/Kubernetes style); trailing newline dropped; env wins."""
    sdir = tmp_path / "run-secrets"
    sdir.mkdir(mode=0o700)
    (sdir / "AFDB_AUTH_TOKEN").write_text("dir-token\n")
    (sdir / "AFDB_OPENAI_API_KEY").write_text("sk-dir")
    (sdir / "afdb_pool_size").write_text("6\n")
    (sdir / "AFDB_CONNECT_TIMEOUT").write_text("9")
    (tmp_path / ".env").write_text(f"AFDB_SECRETS_DIR={sdir}\nAFDB_CONNECT_TIMEOUT=3\n")
    monkeypatch.setenv("AFDB_OPENAI_API_KEY", "sk-env")
    s = Settings.load("dev", base_dir=tmp_path, data_dir=tmp_path / "data")
    assert s.auth_token is not None and s.auth_token.get_secret_value() == "dir-token"
    assert s.openai_api_key is not None and s.openai_api_key.get_secret_value() == "sk-env"
    assert s.pool_size == 6 and s.secrets_dir == sdir
    assert s.connect_timeout == 3  # a .env file beats the secrets directory
    assert "dir-token" not in repr(s) and "dir-token" not in str(s.redacted())


def test_missing_secrets_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """AFDB_SECRETS_DIR that does not exist is a ConfigError, not a silent warning."""
    monkeypatch.setenv("AFDB_SECRETS_DIR", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load("dev", base_dir=tmp_path)


def test_cli_encrypt_decrypt(tmp_path: Path) -> None:
    """encrypt writes a 0600 file and nothing else; decrypt prints the text; --names only names."""
    (tmp_path / ".env.prod").write_text(PLAIN)
    env = {"AFDB_SECRETS_KEY": KEY.value}
    before = set(os.listdir(tmp_path))
    proc = _afdb(["secrets", "encrypt", ".env.prod"], tmp_path, env)
    assert proc.returncode == 0, proc.stderr
    assert set(os.listdir(tmp_path)) - before == {".env.prod.enc"}
    enc = tmp_path / ".env.prod.enc"
    assert (enc.stat().st_mode & 0o777) == 0o600
    assert "tok-7f3a" not in proc.stdout + proc.stderr + enc.read_text()
    out = _afdb(["secrets", "decrypt", ".env.prod.enc"], tmp_path, env)
    assert out.returncode == 0 and out.stdout == PLAIN
    names = _afdb(["secrets", "decrypt", ".env.prod.enc", "--names"], tmp_path, env)
    assert names.stdout.split() == ["AFDB_AUTH_TOKEN", "AFDB_REDIS_PASSWORD", "AFDB_POOL_SIZE"]
    again = _afdb(["secrets", "encrypt", ".env.prod"], tmp_path, env)
    assert again.returncode == 2 and "--force" in again.stderr
    piped = _afdb(["secrets", "encrypt", "-", "--out", "x.enc"], tmp_path, env, stdin=PLAIN)
    assert piped.returncode == 0 and secrets.decrypt((tmp_path / "x.enc").read_bytes(), KEY)


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (
            ["secrets", "decrypt", ".env.enc"],
            {"AFDB_SECRETS_KEY": "zq-not-it-9"},
            "cannot be decrypted",
        ),
        (["secrets", "decrypt", ".env.enc"], {}, "no key"),
        (["secrets", "decrypt", "missing.enc"], {"AFDB_SECRETS_KEY": "k"}, "not found"),
        (["secrets", "encrypt", "-"], {"AFDB_SECRETS_KEY": "k"}, "--out"),
        (["secrets", "encrypt", "empty.env"], {"AFDB_SECRETS_KEY": "k"}, "no NAME=value"),
        (["secrets", "store-key"], {}, "keyring"),
    ],
)
def test_cli_failures_are_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], needle: str
) -> None:
    """Every failure: exit 2, one `error: ... (hint: ...)` line, no secret, no traceback."""
    _write_enc(tmp_path / ".env.enc", PLAIN)
    (tmp_path / "empty.env").write_text("# nothing\n")
    proc = _afdb(args, tmp_path, env, stdin="key-from-stdin\n")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and needle in lines[0] and "hint:" in lines[0]
    for secret in ("tok-7f3a", "zq-not-it-9", "key-from-stdin", KEY.value):
        assert secret not in proc.stdout + proc.stderr


def test_cli_keyring_round_trip(tmp_path: Path) -> None:
    """store-key --generate puts a key in the keyring (never printed); encrypt/decrypt use it."""
    env = {
        "PYTHONPATH": str(TESTS),
        "PYTHON_KEYRING_BACKEND": "keyring_file_backend.FileKeyring",
        "TEST_KEYRING_FILE": str(tmp_path / "kr.json"),
    }
    proc = _afdb(["secrets", "store-key", "--generate"], tmp_path, env)
    assert proc.returncode == 0, proc.stderr
    import json

    stored = json.loads((tmp_path / "kr.json").read_text())["autoforge-data"]["secrets-key"]
    assert len(stored) >= 32 and stored not in proc.stdout + proc.stderr
    (tmp_path / "in.env").write_text(PLAIN)
    assert (
        _afdb(["secrets", "encrypt", "in.env", "--out", ".env.enc"], tmp_path, env).returncode == 0
    )
    assert _afdb(["secrets", "decrypt", ".env.enc"], tmp_path, env).stdout == PLAIN
    blob = (tmp_path / ".env.enc").read_bytes()
    assert secrets.decrypt(blob, Passphrase(stored, "test")).decode() == PLAIN
