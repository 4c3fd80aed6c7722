"""Ed25519 key pairs for sqld's JWT auth: `afdb keys generate`.

sqld's ``--auth-jwt-key-file`` accepts a PKCS#8/SPKI PEM public key or the raw 32 bytes in URL-safe
base64; we write the PEM (``jwt.pub.pem``) and also the base64 form (``jwt.pub.b64``, for
``SQLD_AUTH_JWT_KEY`` or Turso). The private key (``jwt.key.pem``, PKCS#8 PEM) never leaves the
operator's machine; every file is 0600 and the folder 0700.
"""

from __future__ import annotations

import base64
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from autoforge_data.errors import ConfigError, Conflict, InvalidInput
from autoforge_data.fsutil import atomic_write, ensure_private_dir

PRIVATE_NAME = "jwt.key.pem"
PUBLIC_PEM_NAME = "jwt.pub.pem"
PUBLIC_B64_NAME = "jwt.pub.b64"


@dataclass(frozen=True)
class KeyFiles:
    """Where a generated key pair was written (paths only: nothing secret)."""

    private: Path
    public_pem: Path
    public_b64: Path


def generate(out_dir: Path, *, force: bool = False) -> KeyFiles:
    """Write a new key pair into ``out_dir`` (0700); refuses to overwrite unless ``force``."""
    files = KeyFiles(out_dir / PRIVATE_NAME, out_dir / PUBLIC_PEM_NAME, out_dir / PUBLIC_B64_NAME)
    existing = [p for p in (files.private, files.public_pem, files.public_b64) if p.exists()]
    if existing and not force:
        raise Conflict(
            f"{existing[0]} already exists",
            hint="pass --force to replace the key pair (tokens signed by the old key stop working)",
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidInput(f"{out_dir} is not a directory", hint="pass a folder to --out")
    ensure_private_dir(out_dir)
    key = Ed25519PrivateKey.generate()
    _write(files.private, private_pem(key))
    _write(files.public_pem, public_pem(key.public_key()))
    _write(files.public_b64, public_b64(key.public_key()).encode())  # sqld rejects a newline
    return files


def private_pem(key: Ed25519PrivateKey) -> bytes:
    """The private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: Ed25519PublicKey) -> bytes:
    """The public key as SubjectPublicKeyInfo PEM (what sqld's key file accepts)."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_b64(key: Ed25519PublicKey) -> str:
    """The raw 32 public key bytes in URL-safe base64 without padding (SQLD_AUTH_JWT_KEY)."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def load_private(path: Path) -> Ed25519PrivateKey:
    """Read an Ed25519 private key (PEM); errors name the file, never its content."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"private key {path} not found",
            hint="create one with: afdb keys generate --out DIR, then set "
            "AFDB_JWT_PRIVATE_KEY_FILE=DIR/jwt.key.pem",
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read private key {path}: {exc.strerror}", hint="check its permissions"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"private key {path} is readable by others (mode {stat.S_IMODE(mode):o})",
            hint=f"chmod 600 {path}",
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise InvalidInput(
            f"{path} is not an unencrypted PEM private key",
            hint="use the jwt.key.pem written by afdb keys generate",
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidInput(
            f"{path} is not an Ed25519 key", hint="sqld verifies EdDSA (Ed25519) tokens only"
        )
    return key


def _write(path: Path, data: bytes) -> None:
    with atomic_write(path) as fh:
        fh.write(data)
    os.chmod(path, 0o600)
