"""The cache's protocol, its keys and its values.

Keys are ``afdb:v<schema>:<kind>:{<sha256>}``: the schema revision (a migration changes every
key), a kind from an allow-list pattern, and the SHA-256 of the canonical JSON of the inputs. No
caller text reaches a key, so no glob character, CRLF or NUL can; the braces are a Redis Cluster
hash tag, so a value and its fill lease (``<key>:lease``) live in the same slot.

Values are JSON (never pickle) in a small envelope ``[1, expires_at, cost, value]``: the expiry
(Unix seconds) and the cost (seconds the load took) feed early recomputation (XFetch).

The :class:`Cache` protocol is what :mod:`.aside` needs from a backend: plain reads, and fills
guarded by a *lease* taken before the loader runs. Invalidating a key revokes its lease, so a
reader that loaded before a writer's invalidation cannot store what it read.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

from autoforge_data.errors import InvalidInput

PREFIX = "afdb"
KIND = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")
SCHEMA = re.compile(r"[A-Za-z0-9_.-]{1,40}\Z")
_ENVELOPE = 1
_SCALARS = (str, int, float, bool, type(None))
_NUMBERS = (int, float)


def check_kind(kind: str) -> str:
    """``kind`` if it matches the allow-list pattern (lowercase word, <= 32 chars)."""
    if not isinstance(kind, str) or not KIND.match(kind):
        raise InvalidInput(f"invalid cache kind {kind!r}", hint="use [a-z][a-z0-9_]{0,31}")
    return kind


def namespace(schema: str) -> str:
    """``afdb:v<schema>:``, the prefix of every key of this schema revision."""
    if not isinstance(schema, str) or not SCHEMA.match(schema):
        raise InvalidInput(f"invalid schema revision {schema!r} for cache keys")
    return f"{PREFIX}:v{schema}:"


def kind_prefix(schema: str, kind: str) -> str:
    """``afdb:v<schema>:<kind>:``, the prefix of every key of one kind."""
    return f"{namespace(schema)}{check_kind(kind)}:"


def channel(schema: str) -> str:
    """The pub/sub channel that carries invalidations between processes."""
    return f"{namespace(schema)}inval"


def _check_parts(value: Any, depth: int = 0) -> None:
    """Only JSON types, and only str dict keys (json.dumps would turn 1 and "1" into one key)."""
    if depth > 32:
        raise InvalidInput("cache key inputs are nested too deeply")
    if isinstance(value, _SCALARS):
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInput("cache key inputs must be finite numbers")
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_parts(item, depth + 1)
        return
    if isinstance(value, dict):
        for k, item in value.items():
            if not isinstance(k, str):
                raise InvalidInput("cache key inputs may only have string dict keys")
            _check_parts(item, depth + 1)
        return
    raise InvalidInput(f"cache key inputs must be JSON values, not {type(value).__name__}")


def canonical(parts: Any) -> bytes:
    """Canonical JSON of the inputs: sorted keys, no spaces, ASCII only (tuples are lists)."""
    if type(parts) in (list, tuple) and all(type(p) is str for p in parts):
        return json.dumps(parts, separators=(",", ":")).encode("ascii")  # the common case, fast
    _check_parts(parts)
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return text.encode("ascii")


_prefixes: dict[tuple[str, str], str] = {}  # validated (schema, kind) -> prefix
_recent: dict[tuple[str, str, tuple[str, ...]], str] = {}  # keys of all-str inputs (hot reads)
_RECENT_MAX = 8192


def derive_key(schema: str, kind: str, parts: Any) -> str:
    """The cache key of ``parts`` (any JSON value) for ``kind`` under ``schema``."""
    memo = None
    if type(parts) in (list, tuple) and all(type(p) is str for p in parts):
        memo = (schema, kind, tuple(parts))  # exact types only: 1, 1.0 and True never meet here
        key = _recent.get(memo)
        if key is not None:
            return key
    prefix = _prefixes.get((schema, kind))
    if prefix is None:
        prefix = kind_prefix(schema, kind)  # raises on a bad kind: never stored
        if len(_prefixes) < 4096:
            _prefixes[(schema, kind)] = prefix
    key = f"{prefix}{{{hashlib.sha256(canonical(parts)).hexdigest()}}}"
    if memo is not None:
        if len(_recent) >= _RECENT_MAX:
            _recent.clear()  # crude but bounded; refilled by the hot keys within a moment
        _recent[memo] = key
    return key


def key_kind(key: str) -> str:
    """The kind part of a key made by :func:`derive_key` (``?`` if it is not one)."""
    parts = key.split(":", 3)
    return parts[2] if len(parts) == 4 else "?"


def lease_key(key: str) -> str:
    """The key of the fill lease of ``key`` (same hash tag, so the same Cluster slot)."""
    return f"{key}:lease"


class Hit(NamedTuple):
    """A cached value; ``level`` says who answered (l1 or l2)."""

    value: Any
    expires_at: float  # Unix seconds
    cost: float  # seconds the load took (XFetch's delta)
    level: str


class Entry(NamedTuple):
    """A value ready to store: its encoded envelope and its time to live."""

    payload: bytes
    expires_at: float
    cost: float
    ttl: float  # seconds

    @property
    def ttl_ms(self) -> int:
        """The TTL in whole milliseconds (at least 1)."""
        return max(1, int(self.ttl * 1000))


class Lease(NamedTuple):
    """The right to fill one key, taken before loading.

    ``since`` is the in-process invalidation sequence number seen before the read (L1's guard);
    ``token`` is the Redis lease's random value ("" when no Redis lease is held); ``shared``
    says the fill may reach the shared level at all (False while Redis is unreachable).
    """

    key: str
    since: int
    token: str = ""
    shared: bool = True


def encode_entry(value: Any, *, expires_at: float, cost: float, ttl: float) -> Entry:
    """Encode ``value`` (JSON types only) into an entry; raises ValueError/TypeError if it can't."""
    text = json.dumps(
        [_ENVELOPE, round(expires_at, 3), round(cost, 6), value],
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return Entry(text.encode("utf-8"), expires_at, cost, ttl)


def decode_entry(raw: bytes, level: str) -> Hit | None:
    """The hit in an envelope, or None when it is not one of ours (counted by the caller)."""
    try:
        version, expires_at, cost, value = json.loads(raw)
    except (ValueError, TypeError):  # not JSON, or not a 4-item envelope
        return None
    if version != _ENVELOPE or type(expires_at) not in _NUMBERS or type(cost) not in _NUMBERS:
        return None
    return Hit(value, expires_at, cost, level)


class Cache(Protocol):
    """A cache backend: in-process (:mod:`.memory`), Redis (:mod:`.redis_cache`) or both.

    Every method fails open: a backend that cannot reach its store answers "miss", "no lease"
    or "not stored" and counts the error; none of them raises because the store is down.
    """

    max_value_bytes: int

    def mark(self) -> int:
        """The in-process invalidation sequence number, taken before a read that may fill."""
        ...

    def get(self, key: str) -> Hit | None:
        """The cached value, or None."""
        ...

    def acquire(self, key: str, *, since: int, lease_ms: int) -> Lease | None:
        """A fill lease for ``key``; None while another filler holds it."""
        ...

    def fill(self, lease: Lease, entry: Entry) -> bool:
        """Store ``entry`` if the lease is still valid (no invalidation since); consumes it."""
        ...

    def release(self, lease: Lease) -> None:
        """Give a lease back without filling (the loader failed or the value is too large)."""
        ...

    def put(self, key: str, entry: Entry) -> bool:
        """Store unconditionally (plain cache-aside, no protection); True if stored."""
        ...

    def invalidate(self, keys: Sequence[str]) -> None:
        """Drop ``keys`` and revoke their leases, here and in other processes' first levels."""
        ...

    def flush(self, prefix: str) -> int:
        """Delete every key under ``prefix`` (one of ours); returns how many were deleted."""
        ...

    def stats(self) -> dict[str, Any]:
        """State for `afdb cache stats`: sizes, breaker, connection; never a secret."""
        ...

    def close(self) -> None:
        """Release connections and threads."""
        ...
