"""sqld JWT auth end to end: keys from `afdb keys generate`, tokens from `afdb token create`.

A real sqld started with ``--auth-jwt-key-file`` rejects a missing token, an expired one, one signed
by another key and an ``alg: none`` one; a read-only token reads but cannot write; a good one works.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import jwt
import pytest

from autoforge_data.db import migrate
from autoforge_data.db.engine import Database
from autoforge_data.errors import AfdbError, AuthError, ConfigError, Conflict, InvalidInput
from autoforge_data.ops import keys, tokens
from autoforge_data.services import prompts as svc
from conftest import settings_for, unique_email
from servers import Sqld, start_sqld

AFDB = str(Path(sys.executable).parent / "afdb")
pytestmark = pytest.mark.sqld


def _afdb(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFDB_")}
    return subprocess.run(  # noqa: PLW1510 - callers check the code
        [AFDB, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A key pair written by the real CLI."""
    out = tmp_path_factory.mktemp("keys") / "secrets"
    proc = _afdb("keys", "generate", "--out", str(out), cwd=out.parent)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def auth_sqld(tmp_path_factory: pytest.TempPathFactory, keydir: Path) -> Iterator[Sqld]:
    """sqld verifying tokens with the PEM public key from `afdb keys generate`."""
    server = start_sqld(
        tmp_path_factory.mktemp("authsqld"),
        extra=["--auth-jwt-key-file", str(keydir / keys.PUBLIC_PEM_NAME)],
    )
    try:
        yield server
    finally:
        server.stop()


def _cli_token(keydir: Path, *extra: str) -> str:
    proc = _afdb(
        "token", "create", "--key", str(keydir / keys.PRIVATE_NAME), *extra, cwd=keydir.parent
    )
    assert proc.returncode == 0, proc.stderr
    token = proc.stdout.strip()
    assert token.count(".") == 2 and token not in proc.stderr
    return token


def _pipeline(server: Sqld, token: str | None, sql: str) -> httpx.Response:
    """One statement over sqld's HTTP API with a raw client (not our driver)."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    body = {"requests": [{"type": "execute", "stmt": {"sql": sql}}, {"type": "close"}]}
    return httpx.post(f"{server.url}/v2/pipeline", json=body, headers=headers, timeout=10)


def _b64(obj: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_key_files_are_private_and_sqld_formats(keydir: Path) -> None:
    """The key folder is 0700, each file 0600; the public key matches the private one."""
    assert (keydir.stat().st_mode & 0o777) == 0o700
    for name in (keys.PRIVATE_NAME, keys.PUBLIC_PEM_NAME, keys.PUBLIC_B64_NAME):
        assert ((keydir / name).stat().st_mode & 0o777) == 0o600, name
    private = keys.load_private(keydir / keys.PRIVATE_NAME)
    assert (keydir / keys.PUBLIC_PEM_NAME).read_bytes() == keys.public_pem(private.public_key())
    assert (keydir / keys.PUBLIC_B64_NAME).read_text() == keys.public_b64(private.public_key())


def test_good_token_works_through_our_driver(tmp_path: Path, auth_sqld: Sqld, keydir: Path) -> None:
    """A read-write token from the CLI migrates, writes and reads through Database."""
    token = _cli_token(keydir, "--expires", "10m")
    assert tokens.claims(token)["a"] == "rw"
    with Database(settings_for("remote", tmp_path, auth_sqld, auth_token=token)) as db:
        migrate.upgrade(db)
        user = svc.create_user(db, unique_email(), "tok")
        assert svc.get_user(db, user.id) == user


def test_read_only_token_reads_but_cannot_write(
    tmp_path: Path, auth_sqld: Sqld, keydir: Path
) -> None:
    """`--read-only` gives a token with a: ro; sqld refuses its writes (403) and serves reads."""
    rw = _cli_token(keydir, "--expires", "10m")
    assert _pipeline(auth_sqld, rw, "CREATE TABLE IF NOT EXISTS ro_probe(x)").status_code == 200
    ro = _cli_token(keydir, "--read-only", "--expires", "10m")
    assert tokens.claims(ro)["a"] == "ro"
    assert _pipeline(auth_sqld, ro, "SELECT count(*) FROM ro_probe").status_code == 200
    denied = _pipeline(auth_sqld, ro, "INSERT INTO ro_probe VALUES (1)")
    assert denied.status_code == 403
    with Database(settings_for("remote", tmp_path, auth_sqld, auth_token=rw)) as db:
        migrate.upgrade(db)
        user = svc.create_user(db, unique_email(), "ro")
    with Database(settings_for("remote", tmp_path, auth_sqld, auth_token=ro)) as db:
        assert svc.get_user(db, user.id) == user
        with pytest.raises(AfdbError) as info:
            svc.create_user(db, unique_email(), "nope")
        assert ro not in str(info.value) + (info.value.hint or "")


def test_rejected_tokens(auth_sqld: Sqld, keydir: Path, tmp_path: Path) -> None:
    """No token, expired, another key's, alg none and HS256 key confusion: all 401."""
    key = keys.load_private(keydir / keys.PRIVATE_NAME)
    hour = tokens.TokenOptions(timedelta(hours=1))
    good = tokens.mint(key, hour)
    assert _pipeline(auth_sqld, good, "SELECT 1").status_code == 200  # sensitivity arm
    other = keys.load_private(keys.generate(tmp_path / "other").private)
    public_pem = (keydir / keys.PUBLIC_PEM_NAME).read_bytes()
    claims = tokens.claims(good)
    rejected = {
        "missing": None,
        "expired": tokens.mint(key, hour, now=time.time() - 7200),
        "wrong key": tokens.mint(other, hour),
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.",
        "hs256 with the public key": _hs256(claims, public_pem),
        "garbage": "not-a-jwt",
    }
    for name, token in rejected.items():
        assert _pipeline(auth_sqld, token, "SELECT 1").status_code == 401, name


def test_expired_token_is_an_auth_error(tmp_path: Path, auth_sqld: Sqld, keydir: Path) -> None:
    """Our driver turns sqld's 401 for an expired token into AuthError without the token."""
    key = keys.load_private(keydir / keys.PRIVATE_NAME)
    old = tokens.mint(key, tokens.TokenOptions(timedelta(minutes=5)), now=time.time() - 3600)
    with Database(settings_for("remote", tmp_path, auth_sqld, auth_token=old)) as db:
        with pytest.raises(AuthError) as info:
            migrate.upgrade(db)
        assert old not in info.value.one_line()


def test_base64_public_key_works_too(tmp_path: Path, keydir: Path) -> None:
    """sqld also starts from jwt.pub.b64 (no trailing newline) and accepts our tokens."""
    server = start_sqld(tmp_path, extra=["--auth-jwt-key-file", str(keydir / keys.PUBLIC_B64_NAME)])
    try:
        good = _cli_token(keydir, "--read-only", "--expires", "1m")
        assert _pipeline(server, good, "SELECT 1").status_code == 200
        assert _pipeline(server, None, "SELECT 1").status_code == 401
    finally:
        server.stop()


def _hs256(claims: dict[str, object], secret: bytes) -> str:
    header = _b64({"alg": "HS256", "typ": "JWT"})
    import hashlib
    import hmac

    signing = f"{header}.{_b64(claims)}".encode()
    sig = hmac.new(secret, signing, hashlib.sha256).digest()
    return f"{signing.decode()}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("1h", 3600),
        ("7d", 604_800),
        ("2w", 1_209_600),
        ("1h30m", 5400),
        (" 1H ", 3600),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    """Durations with units s, m, h, d, w, alone or combined."""
    assert tokens.parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["never", "0", "none", "forever", "-1", "", "1x", "h", "1.5h"])
def test_parse_duration_refuses(text: str) -> None:
    """No expiry and unreadable durations are refused with a hint."""
    with pytest.raises(InvalidInput) as info:
        tokens.parse_duration(text)
    assert info.value.hint


def test_options_bounds() -> None:
    """Zero and over a year are refused before any key is read."""
    with pytest.raises(InvalidInput):
        tokens.TokenOptions(timedelta(0))
    with pytest.raises(InvalidInput):
        tokens.TokenOptions(timedelta(days=400))


def test_every_token_expires(keydir: Path) -> None:
    """Claims: exp after iat by the requested lifetime, nbf in the past, a = rw or ro."""
    key = keys.load_private(keydir / keys.PRIVATE_NAME)
    for read_only, access in ((False, "rw"), (True, "ro")):
        token = tokens.mint(key, tokens.TokenOptions(timedelta(hours=2), read_only), now=1000)
        c = jwt.decode(token, key.public_key(), algorithms=["EdDSA"], options={"verify_exp": False})
        assert c == {"iat": 1000, "nbf": 940, "exp": 1000 + 7200, "a": access}


def test_cli_refuses_no_expiry(keydir: Path) -> None:
    """`--expires never` and a missing --expires are one-line errors with exit 2."""
    for args in (["--expires", "never"], []):
        proc = _afdb(
            "token", "create", "--key", str(keydir / keys.PRIVATE_NAME), *args, cwd=keydir.parent
        )
        assert proc.returncode == 2 and proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "hint:" in lines[0]


def test_private_key_checks(tmp_path: Path) -> None:
    """A world-readable key, a missing one and a non-key file are refused; overwrite needs force."""
    files = keys.generate(tmp_path / "k")
    with pytest.raises(Conflict):
        keys.generate(tmp_path / "k")
    keys.generate(tmp_path / "k", force=True)
    files.private.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        keys.load_private(files.private)
    files.private.chmod(0o600)
    keys.load_private(files.private)
    with pytest.raises(ConfigError, match="not found"):
        keys.load_private(tmp_path / "missing.pem")
    files.public_pem.chmod(0o600)
    with pytest.raises(InvalidInput):
        keys.load_private(files.public_pem)


def test_token_without_key_configured(tmp_path: Path) -> None:
    """Without --key or AFDB_JWT_PRIVATE_KEY_FILE: one line naming both ways."""
    proc = _afdb("token", "create", "--expires", "1h", cwd=tmp_path)
    assert proc.returncode == 2
    assert "AFDB_JWT_PRIVATE_KEY_FILE" in proc.stderr and "Traceback" not in proc.stderr
