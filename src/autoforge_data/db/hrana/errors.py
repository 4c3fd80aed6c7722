"""PEP 249 exceptions of the Hrana driver, the mapping of server errors to them, token scrubbing.

Server errors map to the classes CPython's ``sqlite3`` would raise (constraint -> IntegrityError,
busy/locked -> OperationalError "database is locked", bad arguments -> ProgrammingError); a lost
stream is a :class:`TransportError`.
"""

from __future__ import annotations

from typing import Final


class Warning(Exception):  # the name is mandated by PEP 249
    """Important warnings (PEP 249); this driver never raises it."""


class Error(Exception):
    """Base of every error this driver raises. ``code`` is the server's code string, if any."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class InterfaceError(Error):
    """Misuse of the driver itself (closed connection, bad arguments to a driver method)."""


class DatabaseError(Error):
    """An error reported by or about the database."""


class DataError(DatabaseError):
    """A value cannot be stored or sent (out of range, not representable)."""


class OperationalError(DatabaseError):
    """The database could not do the operation (locked, no such table, syntax, unreachable)."""


class IntegrityError(DatabaseError):
    """A constraint failed (UNIQUE, NOT NULL, CHECK, FOREIGN KEY)."""


class InternalError(DatabaseError):
    """The server reported an internal inconsistency."""


class ProgrammingError(DatabaseError):
    """The statement or its arguments are wrong (several statements, wrong argument count)."""


class NotSupportedError(DatabaseError):
    """The operation is not supported by this driver or server."""


class AuthError(OperationalError):
    """The server rejected the auth token (HTTP 401/403). The message never contains it."""


class ReadOnlyError(AuthError):
    """The token may only read and the request would write (HTTP 403 from sqld)."""


class TransportError(OperationalError):
    """The server could not be reached or answered badly, or the stream was lost.

    ``disconnect`` is True: the connection's server-side state (an open transaction) is gone;
    SQLAlchemy's pool discards the connection.
    """

    disconnect = True


# --------------------------------------------------------------------------------------------
# Error mapping
# --------------------------------------------------------------------------------------------

_SQLITE_CLASSES: Final[dict[str, type[DatabaseError]]] = {
    # the same table CPython's sqlite3 uses, by primary result code
    "SQLITE_CONSTRAINT": IntegrityError,
    "SQLITE_MISMATCH": IntegrityError,
    "SQLITE_TOOBIG": DataError,
    "SQLITE_INTERNAL": InternalError,
    "SQLITE_NOTFOUND": InternalError,
    "SQLITE_CORRUPT": DatabaseError,
    "SQLITE_NOTADB": DatabaseError,
    "SQLITE_MISUSE": ProgrammingError,
    "SQLITE_RANGE": ProgrammingError,
}
_PROGRAMMING_CODES: Final = frozenset(
    {
        "ARGS_INVALID",
        "ARGS_BOTH_POSITIONAL_AND_NAMED",
        "SQL_MANY_STATEMENTS",
        "SQL_NO_STATEMENT",
        "SQL_INPUT_ERROR",
    }
)
_LOST_STREAM_CODES: Final = frozenset(
    {"STREAM_EXPIRED", "BATON_INVALID", "BATON_REUSED", "STREAM_CLOSED"}
)
_LOCKED_TEXT: Final = "database is locked"


def _error_from_server(message: str, code: str | None) -> DatabaseError:
    """Map a Hrana ``Error`` (message, code) to the PEP 249 class sqlite3 would raise."""
    msg = message.removeprefix("SQLite error: ")
    upper = (code or "").upper()
    if upper in _LOST_STREAM_CODES:
        return TransportError(f"the server lost the stream: {msg}", code=code)
    if upper.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        if _LOCKED_TEXT not in msg:
            msg = f"{_LOCKED_TEXT} ({msg})"
        return OperationalError(msg, code=code)
    for prefix, cls in _SQLITE_CLASSES.items():
        if upper == prefix or upper.startswith(prefix + "_"):
            return cls(msg, code=code)
    if upper in _PROGRAMMING_CODES:
        return ProgrammingError(msg, code=code)
    if "constraint failed" in msg:
        return IntegrityError(msg, code=code)
    return OperationalError(msg, code=code)


def scrub(text: str, token: str | None) -> str:
    """``text`` with every occurrence of the auth ``token`` replaced by ``<redacted>``."""
    return text.replace(token, "<redacted>") if token else text
