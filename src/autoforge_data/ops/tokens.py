"""sqld access tokens: EdDSA JWTs that always expire (`afdb token create`).

sqld accepts a token without ``exp`` forever and gives a token without an ``a`` claim full access,
so we never mint either: every token has ``exp``, and ``a`` is ``"ro"`` (read-only) or ``"rw"``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from autoforge_data.errors import InvalidInput
from autoforge_data.ops import keys

MAX_TTL = timedelta(days=366)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_DURATION = re.compile(r"(\d+)([smhdw])")
_NO_EXPIRY = {"0", "never", "none", "inf", "infinite", "forever", "-1"}


@dataclass(frozen=True)
class TokenOptions:
    """What to mint: an expiry (required, at most MAX_TTL) and read-only or full access."""

    expires: timedelta
    read_only: bool = False

    def __post_init__(self) -> None:
        if self.expires <= timedelta(0):
            raise InvalidInput(
                "a token must expire in the future",
                hint="pass a positive duration, e.g. --expires 1h",
            )
        if self.expires > MAX_TTL:
            raise InvalidInput(
                f"expiry longer than {MAX_TTL.days} days",
                hint="mint shorter-lived tokens and rotate them",
            )


def parse_duration(text: str) -> timedelta:
    """``1h``, ``30m``, ``7d``, ``2w``, ``90s`` or combinations like ``1h30m``; no 'never'."""
    raw = text.strip().lower()
    if raw in _NO_EXPIRY:
        raise InvalidInput(
            f"tokens without an expiry are not allowed ({text!r})",
            hint="pass a duration such as --expires 1h, 7d or 30m",
        )
    parts = _DURATION.findall(raw)
    if not raw or "".join(n + u for n, u in parts) != raw:
        raise InvalidInput(
            f"cannot read the duration {text!r}",
            hint="use a number and a unit s, m, h, d or w, e.g. 1h, 30m, 7d, 1h30m",
        )
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in parts))


def mint(key: Ed25519PrivateKey, options: TokenOptions, *, now: float | None = None) -> str:
    """Sign a token for sqld with ``iat``, ``nbf``, ``exp`` and ``a`` (``ro`` or ``rw``)."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, object] = {
        "iat": issued,
        "nbf": issued - 60,  # tolerate a minute of clock skew between us and the server
        "exp": issued + int(options.expires.total_seconds()),
        "a": "ro" if options.read_only else "rw",
    }
    return jwt.encode(claims, key, algorithm="EdDSA")


def mint_from_file(path: Path, options: TokenOptions) -> str:
    """Load the private key at ``path`` (0600 PEM) and mint one token."""
    return mint(keys.load_private(path), options)


def claims(token: str) -> dict[str, object]:
    """The token's claims without checking the signature (for display and tests only)."""
    try:
        return dict(jwt.decode(token, options={"verify_signature": False}))
    except jwt.PyJWTError:
        raise InvalidInput("not a JWT", hint="pass a token minted by afdb token create") from None
