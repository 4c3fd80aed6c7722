"""API keys for the HTTP service: create (the secret is shown once), list, revoke, authenticate.

A key reads ``afdb_<id>_<secret>``: the id (26 characters) finds the row, the secret is 256 random
bits. Only ``sha256(key)`` is stored (a fast hash is enough for a high-entropy secret) and it is
compared in constant time. Scopes are ordered: ``read`` < ``write`` < ``admin``; a key allows its
own scope and every lower one. ``last_used_at`` is written at most once a minute per key, so a
busy key does not turn every read into a write.

No function here logs or returns the secret except :func:`create_key`, whose :class:`NewKey` hides
it from ``repr``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

from autoforge_data.db.engine import Database
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.domain import utcnow
from autoforge_data.errors import AfdbError, InvalidInput, NotFound
from autoforge_data.ids import is_id, new_id

Scope = Literal["read", "write", "admin"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
RANK = {scope: rank for rank, scope in enumerate(SCOPES, start=1)}
PREFIX = "afdb_"
KEY_LENGTH = len(PREFIX) + 26 + 1 + 43  # prefix, id, "_", token_urlsafe(32)
TOUCH_INTERVAL = 60.0  # seconds between writes of last_used_at for one key
MAX_NAME = 100
_NAME = re.compile(r"^[\w .:@/-]{1,100}$")
_DURATION = re.compile(r"^(\d{1,6})([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_COLS = "id, name, scope, created_at, last_used_at, expires_at, revoked_at"


class InvalidKey(AfdbError):
    """The API key is missing, malformed, unknown, expired or revoked."""

    code = "unauthorized"
    http_status = 401
    default_hint = "send Authorization: Bearer <key>; create one with: afdb apikey create"


class Forbidden(AfdbError):
    """The API key is valid but its scope does not allow this call."""

    code = "forbidden"
    http_status = 403


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored API key (never its secret)."""

    id: str
    name: str
    scope: Scope
    created_at: str
    last_used_at: str | None
    expires_at: str | None
    revoked_at: str | None

    def allows(self, scope: str) -> bool:
        """True when this key's scope is ``scope`` or above it."""
        return RANK[self.scope] >= RANK[check_scope(scope)]

    def state(self, now: str | None = None) -> str:
        """active, expired or revoked."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or utcnow()):
            return "expired"
        return "active"


@dataclass(frozen=True)
class NewKey:
    """A key just created: the record and its secret, which is shown once and never stored."""

    key: ApiKey
    secret: str = field(repr=False)


def check_scope(scope: str) -> Scope:
    """``scope`` if it is one of read, write, admin."""
    if scope not in RANK:
        raise InvalidInput(f"unknown scope {scope!r}", hint="use read, write or admin")
    return scope


def parse_expiry(text: str | None, *, now: datetime | None = None) -> str | None:
    """An expiry as stored text, from a duration (90m, 12h, 30d, 2w) or an ISO-8601 time."""
    if text is None or text == "":
        return None
    now = now or datetime.now(UTC)
    match = _DURATION.match(text.strip())
    if match:
        amount = int(match.group(1))
        if amount < 1:
            raise InvalidInput("an expiry duration must be positive")
        when = now + timedelta(**{_UNITS[match.group(2)]: amount})
    else:
        try:
            when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(
                f"invalid expiry {text!r}", hint="e.g. 30d, 12h, 90m or 2027-01-31T00:00:00Z"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        if when <= now:
            raise InvalidInput("the expiry is in the past")
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def hash_key(token: str) -> str:
    """The stored form of a key: sha256, hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_key(db: Database, name: str, scope: str, *, expires: str | None = None) -> NewKey:
    """Create a key; its secret is in the returned value only."""
    checked = check_scope(scope)
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput(
            "the key name must be 1-100 letters, digits, spaces or . _ : @ / -",
            hint="e.g. --name ci-reader",
        )
    expires_at = parse_expiry(expires)
    key_id = new_id()
    secret = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    key = ApiKey(key_id, name, checked, utcnow(), None, expires_at, None)
    with UnitOfWork(db, write=True) as uow:
        uow.execute(
            "INSERT INTO api_keys (id, name, key_hash, scope, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (key.id, key.name, hash_key(secret), key.scope, key.created_at, key.expires_at),
            kind="insert",
        )
        uow.commit()
    return NewKey(key, secret)


def _row(r: tuple[object, ...]) -> ApiKey:
    return ApiKey(
        str(r[0]),
        str(r[1]),
        check_scope(str(r[2])),
        str(r[3]),
        None if r[4] is None else str(r[4]),
        None if r[5] is None else str(r[5]),
        None if r[6] is None else str(r[6]),
    )


def list_keys(db: Database) -> list[ApiKey]:
    """Every key, oldest first (revoked and expired ones included)."""
    with UnitOfWork(db) as uow:
        rows = uow.fetchall(f"SELECT {_COLS} FROM api_keys ORDER BY id")
    return [_row(r) for r in rows]


def get_key(db: Database, key_id: str) -> ApiKey:
    """One key by id."""
    if not isinstance(key_id, str) or not is_id(key_id):
        raise NotFound(f"API key {key_id!r} not found", hint="ids are 26-character strings")
    with UnitOfWork(db) as uow:
        r = uow.fetchone(f"SELECT {_COLS} FROM api_keys WHERE id = ?", (key_id,))
    if r is None:
        raise NotFound(f"API key {key_id} not found", hint="see: afdb apikey list")
    return _row(r)


def revoke_key(db: Database, key_id: str) -> ApiKey:
    """Revoke a key (idempotent: revoking twice keeps the first time)."""
    get_key(db, key_id)
    with UnitOfWork(db, write=True) as uow:
        uow.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (utcnow(), key_id),
            kind="update",
        )
        uow.commit()
    return get_key(db, key_id)


def _split(token: str) -> str | None:
    """The key id inside a well-formed key, else None."""
    if not isinstance(token, str) or len(token) != KEY_LENGTH or not token.startswith(PREFIX):
        return None
    key_id = token[len(PREFIX) : len(PREFIX) + 26]
    if token[len(PREFIX) + 26] != "_" or not is_id(key_id):
        return None
    return key_id


def authenticate(db: Database, token: str) -> ApiKey:
    """The active key that ``token`` is, or InvalidKey (one message for every reason)."""
    key_id = _split(token)
    row = None
    if key_id is not None:
        with UnitOfWork(db) as uow:
            row = uow.fetchone(f"SELECT {_COLS}, key_hash FROM api_keys WHERE id = ?", (key_id,))
    # compare even when there is no row, so a wrong id costs the same as a wrong secret
    stored = str(row[7]) if row is not None else "0" * 64
    if not hmac.compare_digest(stored, hash_key(token if isinstance(token, str) else "")):
        raise InvalidKey("invalid API key")
    assert row is not None
    key = _row(row)
    now = utcnow()
    if key.state(now) != "active":
        raise InvalidKey(f"API key {key.id} is {key.state(now)}")
    _touch(db, key, now)
    return key


def _touch(db: Database, key: ApiKey, now: str) -> None:
    """Record the use, at most once per TOUCH_INTERVAL (the write is skipped when fresh)."""
    if key.last_used_at is not None and _age(key.last_used_at, now) < TOUCH_INTERVAL:
        return
    with UnitOfWork(db, write=True) as uow:
        uow.execute(
            "UPDATE api_keys SET last_used_at = ? WHERE id = ?", (now, key.id), kind="update"
        )
        uow.commit()


def _age(then: str, now: str) -> float:
    a = datetime.fromisoformat(then.replace("Z", "+00:00"))
    b = datetime.fromisoformat(now.replace("Z", "+00:00"))
    return (b - a).total_seconds()


class KeyCache:
    """Authenticated keys remembered for ``ttl`` seconds per token hash (the service's hot path).

    A key revoked by another process stops working within ``ttl``; one revoked through
    :meth:`forget` (the same process) at once. Entries hold the hash, never the token.
    """

    def __init__(self, ttl: float = 5.0, max_entries: int = 1024) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, ApiKey]] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> ApiKey | None:
        """The cached key of ``token`` if still fresh and not expired."""
        digest = hash_key(token)
        with self._lock:
            entry = self._entries.get(digest)
        if entry is None or time.monotonic() - entry[0] > self.ttl:
            return None
        if entry[1].state() != "active":
            return None
        return entry[1]

    def put(self, token: str, key: ApiKey) -> None:
        """Remember an authenticated key."""
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[hash_key(token)] = (time.monotonic(), key)

    def forget(self, key_id: str) -> None:
        """Drop every entry of a key (after revoking it)."""
        with self._lock:
            for digest in [d for d, (_, k) in self._entries.items() if k.id == key_id]:
                del self._entries[digest]
