"""`afdb keys`, `afdb token` and `afdb secrets`: sqld key pairs, sqld tokens, encrypted env files.

Nothing secret is ever printed except what the command exists to print (a token on stdout, the
plaintext of `afdb secrets decrypt` on stdout); messages go to stderr and name files, not values.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from autoforge_data.errors import Conflict, InvalidInput

keys_app = typer.Typer(
    no_args_is_help=True,
    help="Ed25519 key pairs for sqld's JWT auth.\n\n"
    "Example: afdb keys generate --out deploy/secrets",
)
token_app = typer.Typer(
    no_args_is_help=True,
    help="Mint sqld access tokens (always with an expiry).\n\n"
    "Example: afdb token create --read-only --expires 1h",
)
secrets_app = typer.Typer(
    no_args_is_help=True,
    help="Encrypted env files (scrypt + AES-256-GCM) and the key in the OS keyring.\n\n"
    "Example: AFDB_SECRETS_KEY=... afdb secrets encrypt .env.prod --out .env.prod.enc",
)


def register(app: typer.Typer) -> None:
    """Add the keys, token and secrets command groups to the `afdb` app."""
    app.add_typer(keys_app, name="keys")
    app.add_typer(token_app, name="token")
    app.add_typer(secrets_app, name="secrets")


@keys_app.command("generate")
def keys_generate(
    out: Annotated[Path, typer.Option("--out", help="Folder for the key files (created 0700).")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key pair.")] = False,
) -> None:
    """Write an Ed25519 key pair: jwt.key.pem (private), jwt.pub.pem and jwt.pub.b64 (public).

    Start sqld with --auth-jwt-key-file DIR/jwt.pub.pem and mint tokens with afdb token create.

    Example: afdb keys generate --out deploy/secrets
    """
    from autoforge_data import cli
    from autoforge_data.ops import keys

    files = keys.generate(out, force=force)
    cli.console.print(f"private key: {files.private} (keep it secret; 0600)")
    cli.console.print(f"public key:  {files.public_pem} (sqld --auth-jwt-key-file)")
    cli.console.print(f"public key:  {files.public_b64} (SQLD_AUTH_JWT_KEY, base64)")


@token_app.command("create")
def token_create(
    expires: Annotated[
        str, typer.Option("--expires", help="Lifetime, e.g. 30m, 1h, 7d (required; max 366d).")
    ],
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Token can read but not write.")
    ] = False,
    key: Annotated[
        Path | None,
        typer.Option("--key", help="Private key file (default AFDB_JWT_PRIVATE_KEY_FILE)."),
    ] = None,
) -> None:
    """Print a new sqld token (EdDSA JWT with exp) on stdout; the expiry goes to stderr.

    Example: AFDB_AUTH_TOKEN=$(afdb token create --read-only --expires 1h)
    """
    from autoforge_data import cli
    from autoforge_data.ops import tokens

    options = tokens.TokenOptions(tokens.parse_duration(expires), read_only=read_only)
    path = key or _key_from_settings()
    token = tokens.mint_from_file(path, options)
    exp = datetime.fromtimestamp(int(str(tokens.claims(token)["exp"])), tz=UTC)
    access = "read-only" if read_only else "read-write"
    cli.err_console.print(f"{access} token, expires {exp:%Y-%m-%d %H:%M:%S} UTC")
    sys.stdout.write(token + "\n")


def _key_from_settings() -> Path:
    from autoforge_data import cli
    from autoforge_data.errors import ConfigError

    path: Path | None = cli._settings().jwt_private_key_file
    if path is None:
        raise ConfigError(
            "no private key to sign with",
            hint="pass --key DIR/jwt.key.pem or set AFDB_JWT_PRIVATE_KEY_FILE "
            "(afdb keys generate makes one)",
        )
    return path


@secrets_app.command("encrypt")
def secrets_encrypt(
    source: Annotated[str, typer.Argument(help="Plaintext dotenv file, or - for stdin.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Encrypted file (default SOURCE.enc).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
) -> None:
    """Encrypt a dotenv file with the key from the OS keyring or AFDB_SECRETS_KEY.

    Settings.load reads .env.enc and .env.<profile>.enc from the working folder, in memory.

    Example: afdb secrets encrypt .env.prod --out .env.prod.enc && shred -u .env.prod
    """
    from autoforge_data import cli, secrets
    from autoforge_data.fsutil import atomic_write

    target = _target(source, out, force)
    text = _read_source(source)
    names = secrets.check_env_text(text)
    blob = secrets.encrypt(text.encode(), secrets.passphrase())
    with atomic_write(target) as fh:
        fh.write(blob)
    os.chmod(target, 0o600)
    cli.err_console.print(f"wrote {target}: {len(names)} values encrypted (0600)")


def _target(source: str, out: Path | None, force: bool) -> Path:
    if out is None:
        if source == "-":
            raise InvalidInput("reading stdin needs --out", hint="e.g. --out .env.prod.enc")
        out = Path(source + ".enc")
    if out.exists() and not force:
        raise Conflict(f"{out} already exists", hint="pass --force to replace it")
    return out


def _read_source(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"{source} not found", hint="pass a dotenv file or -") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(
            f"cannot read {source}: {type(exc).__name__}", hint="check its permissions and encoding"
        ) from None


@secrets_app.command("decrypt")
def secrets_decrypt(
    file: Annotated[Path, typer.Argument(help="Encrypted env file.")],
    names: Annotated[bool, typer.Option("--names", help="Print only the variable names.")] = False,
) -> None:
    """Print the decrypted dotenv text on stdout (never written to disk).

    Example: afdb secrets decrypt .env.prod.enc --names
    """
    from autoforge_data import secrets

    if not file.is_file():
        raise InvalidInput(f"{file} not found", hint="pass an encrypted env file")
    blob = file.read_bytes()
    text = secrets.decrypt(blob, secrets.passphrase(), name=str(file)).decode("utf-8")
    if names:
        text = "".join(f"{name}\n" for name in secrets.parse_env(text))
    sys.stdout.write(text)


@secrets_app.command("store-key")
def secrets_store_key(
    generate: Annotated[
        bool, typer.Option("--generate", help="Store a new random key instead of reading stdin.")
    ] = False,
) -> None:
    """Save the encrypted env file's key in the OS keyring (read from stdin, never echoed).

    Example: afdb secrets store-key --generate
    """
    import secrets as random

    from autoforge_data import cli, secrets

    value = random.token_urlsafe(32) if generate else sys.stdin.readline().strip()
    if not value:
        raise InvalidInput("no key on stdin", hint="pipe the key in, or pass --generate")
    secrets.store_in_keyring(value)
    cli.err_console.print(
        f"stored in the OS keyring (service {secrets.KEYRING_SERVICE}, "
        f"entry {secrets.KEYRING_NAME})"
    )
