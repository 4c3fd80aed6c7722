"""Sortable, client-generated ids (ULID layout: 48-bit milliseconds + 80 random bits, base32).

Ids are made by the client so that a unit of work can send its inserts without waiting for the
server to assign keys (one round trip per use case in remote mode). They sort by creation time and
are monotonic within a process.
"""

from __future__ import annotations

import os
import re
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ID_PATTERN = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
_lock = threading.Lock()
_last_ms = 0
_last_rand = 0


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id() -> str:
    """Return a new 26-character id, greater than every id this process made before."""
    global _last_ms, _last_rand
    with _lock:
        now = time.time_ns() // 1_000_000
        if now <= _last_ms:
            now = _last_ms
            rand = _last_rand + 1
        else:
            rand = int.from_bytes(os.urandom(10), "big") >> 1  # headroom for increments
        _last_ms, _last_rand = now, rand
    return _encode(now, 10) + _encode(rand, 16)


def is_id(value: str) -> bool:
    """True if ``value`` has the shape of an id made by :func:`new_id`."""
    return bool(ID_PATTERN.match(value))
