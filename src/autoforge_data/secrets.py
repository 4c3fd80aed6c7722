"""Secrets for the settings: an encrypted env file and a secrets directory.

**Encrypted env file** (``.env.enc``, ``.env.<profile>.enc``; `afdb secrets encrypt|decrypt`): a
dotenv text encrypted with AES-256-GCM under a key derived by scrypt from a passphrase and a random
salt. The first line is a versioned header (``afdb-secrets v1 scrypt n= r= p= salt= nonce=``)
that is also the GCM associated data, so changing any parameter fails authentication; the rest is
the ciphertext in base64. The passphrase comes from the OS keyring (service
``autoforge-data``, entry ``secrets-key``) when the ``keyring`` package and a real backend are
available, else from ``AFDB_SECRETS_KEY``. Decryption happens in memory
only: no plaintext is written to disk.

**Secrets directory** (``AFDB_SECRETS_DIR``, like Docker's ``/run/secrets`` or a Kubernetes secret
volume): one file per setting, named like its variable (``AFDB_AUTH_TOKEN``), trailing newline
ignored.

Precedence in :meth:`Settings.load`: explicit overrides, the process environment, the encrypted env
files (profile file first), ``.env.<profile>``, ``.env``, the secrets directory, defaults (the
last three are pydantic-settings' own order).
"""

from __future__ import annotations

import base64
import io
import os
import re
import secrets as _random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from autoforge_data.errors import ConfigError, Corrupt, InvalidInput

MAGIC = "afdb-secrets"
VERSION = "v1"
KEYRING_SERVICE = "autoforge-data"
KEYRING_NAME = "secrets-key"
KEY_ENV = "AFDB_SECRETS_KEY"
DIR_ENV = "AFDB_SECRETS_DIR"
PREFIX = "AFDB_"
_SCRYPT = {"n": 2**15, "r": 8, "p": 1}  # ~0.1 s and 32 MiB per derivation
_SCRYPT_MAX_N = 2**20
_HEADER = re.compile(
    r"afdb-secrets (?P<v>v\d+) scrypt n=(?P<n>\d+) r=(?P<r>\d+) p=(?P<p>\d+) "
    r"salt=(?P<salt>[A-Za-z0-9_=-]+) nonce=(?P<nonce>[A-Za-z0-9_=-]+)\Z"
)


@dataclass(frozen=True)
class Passphrase:
    """The key material for the encrypted env file and where it came from (never printed)."""

    value: str
    source: str  # "keyring" or "AFDB_SECRETS_KEY"

    def __repr__(self) -> str:
        return f"Passphrase(source={self.source!r})"


def encrypt(plaintext: bytes, passphrase: Passphrase) -> bytes:
    """Encrypt ``plaintext`` with a fresh salt and nonce; returns the file content."""
    salt, nonce = _random.token_bytes(16), _random.token_bytes(12)
    header = (
        f"{MAGIC} {VERSION} scrypt n={_SCRYPT['n']} r={_SCRYPT['r']} p={_SCRYPT['p']} "
        f"salt={_b64(salt)} nonce={_b64(nonce)}"
    )
    key = _derive(passphrase, salt, _SCRYPT["n"], _SCRYPT["r"], _SCRYPT["p"])
    sealed = AESGCM(key).encrypt(nonce, plaintext, header.encode())
    body = base64.encodebytes(sealed).decode()
    return f"{header}\n{body}".encode()


def decrypt(blob: bytes, passphrase: Passphrase, *, name: str = "encrypted env file") -> bytes:
    """Authenticate and decrypt file content written by :func:`encrypt`."""
    header, _, body = blob.decode("ascii", errors="replace").partition("\n")
    if not header.startswith(MAGIC + " "):
        raise Corrupt(f"{name} is not an afdb secrets file", hint="create it: afdb secrets encrypt")
    match = _HEADER.match(header.strip())
    if match is None or match["v"] != VERSION:
        raise Corrupt(
            f"{name} has an unknown or damaged header",
            hint="it was written by a newer afdb, or changed by hand",
        )
    n, r, p = int(match["n"]), int(match["r"]), int(match["p"])
    if not (2 <= n <= _SCRYPT_MAX_N and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        raise Corrupt(f"{name} has out-of-range scrypt parameters", hint="re-encrypt it")
    try:
        sealed = base64.b64decode(body.encode(), validate=False)
        key = _derive(passphrase, _unb64(match["salt"]), n, r, p)
        return AESGCM(key).decrypt(_unb64(match["nonce"]), sealed, header.strip().encode())
    except (InvalidTag, ValueError):
        raise Corrupt(
            f"{name} cannot be decrypted: wrong key, or the file was changed",
            hint=f"the key came from {passphrase.source}; check it or restore the file",
        ) from None


def parse_env(text: str) -> dict[str, str]:
    """Parse dotenv text (``NAME=value``, quotes, ``export``, comments) into a dict."""
    from dotenv import dotenv_values

    values = dotenv_values(stream=io.StringIO(text), interpolate=False)
    return {k: v for k, v in values.items() if v is not None}


def passphrase(environ: Mapping[str, str] | None = None) -> Passphrase:
    """The passphrase: the OS keyring if it has one, else AFDB_SECRETS_KEY; ConfigError if none."""
    env = os.environ if environ is None else environ
    stored = _from_keyring()
    if stored:
        return Passphrase(stored, "the OS keyring")
    value = env.get(KEY_ENV, "")
    if value:
        return Passphrase(value, KEY_ENV)
    raise ConfigError(
        "no key for the encrypted env file",
        hint=f"set {KEY_ENV}, or store one in the OS keyring: afdb secrets store-key",
    )


def store_in_keyring(value: str) -> None:
    """Save the passphrase in the OS keyring; ConfigError when no usable keyring exists."""
    backend = _keyring_backend()
    if backend is None:
        raise ConfigError(
            "no OS keyring is available here",
            hint=f"install the keyring package with a backend, or use {KEY_ENV}",
        )
    backend.set_password(KEYRING_SERVICE, KEYRING_NAME, value)


def encrypted_files(base: Path, profile: str) -> list[Path]:
    """The encrypted env files that apply, lowest precedence first."""
    return [p for p in (base / ".env.enc", base / f".env.{profile}.enc") if p.is_file()]


def read_encrypted_env(path: Path, key: Passphrase) -> dict[str, str]:
    """Decrypt one encrypted env file in memory and parse it."""
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read {path}: {exc.strerror}", hint="check its permissions"
        ) from None
    text = decrypt(blob, key, name=str(path)).decode("utf-8", errors="strict")
    return parse_env(text)


def settings_sources(
    base: Path, profile: str, overrides: Mapping[str, object], environ: Mapping[str, str]
) -> tuple[dict[str, str], Path | None]:
    """What :meth:`Settings.load` adds: values from encrypted env files and the secrets folder."""
    directory = _secrets_dir(base, profile, overrides, environ)
    files = encrypted_files(base, profile)
    values: dict[str, str] = {}
    if files:
        key = passphrase(environ)
        for path in files:
            values.update(read_encrypted_env(path, key))
    present = {name.upper() for name in environ}
    fields = {
        name[len(PREFIX) :].lower(): value
        for name, value in values.items()
        if name.upper().startswith(PREFIX) and name.upper() not in present
    }
    fields.pop("env", None)  # the profile is chosen before these files are found
    return fields, directory


def _secrets_dir(
    base: Path, profile: str, overrides: Mapping[str, object], environ: Mapping[str, str]
) -> Path | None:
    from autoforge_data.settings import _dotenv_value

    raw = overrides.get("secrets_dir") or environ.get(DIR_ENV)
    for dotenv in (base / f".env.{profile}", base / ".env"):
        raw = raw or _dotenv_value(dotenv, DIR_ENV)
    if not raw:
        return None
    directory = Path(str(raw))
    if not directory.is_dir():
        raise ConfigError(
            f"secrets directory {directory} does not exist",
            hint=f"create it (one file per setting, e.g. {directory}/AFDB_AUTH_TOKEN) "
            f"or unset {DIR_ENV}",
        )
    return directory


def check_env_text(text: str) -> dict[str, str]:
    """Parse plaintext to encrypt; refuses text that holds no NAME=value line."""
    values = parse_env(text)
    if not values:
        raise InvalidInput(
            "the input holds no NAME=value line", hint="pass a dotenv file, e.g. .env.prod"
        )
    return values


def _from_keyring() -> str | None:
    backend = _keyring_backend()
    if backend is None:
        return None
    try:
        value = backend.get_password(KEYRING_SERVICE, KEYRING_NAME)
    except Exception:  # a locked or broken keyring: fall back to the environment variable
        return None
    return str(value) if value else None


def _keyring_backend() -> Any:
    try:
        import keyring
        from keyring.backends import fail
    except ImportError:
        return None
    try:
        backend = keyring.get_keyring()
    except Exception:
        return None
    if isinstance(backend, fail.Keyring) or type(backend).__name__ == "NullKeyring":
        return None
    return backend


def _derive(key: Passphrase, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(key.value.encode())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text.encode())
