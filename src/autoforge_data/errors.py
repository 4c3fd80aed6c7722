"""The project's exception tree: flat, one line each, with an optional hint for the user.

Errors become messages only at the edges: the CLI prints ``message`` and ``hint`` on one line and
exits 2; the API turns them into ``{"error": {"code", "message", "hint"}}``. Nothing here ever
carries a secret (tokens, passwords, DSNs with credentials) in its text.
"""

from __future__ import annotations


class AfdbError(Exception):
    """Base of every error this package raises on purpose."""

    code = "error"
    http_status = 500
    default_hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        return self.message

    def one_line(self) -> str:
        """The message and its hint on one line, as the CLI prints it."""
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class ConfigError(AfdbError):
    """The settings are invalid or contradict each other."""

    code = "config_error"
    http_status = 500


class InvalidInput(AfdbError):
    """A value given by the caller is malformed or out of range."""

    code = "invalid_input"
    http_status = 422


class NotFound(AfdbError):
    """The requested object does not exist."""

    code = "not_found"
    http_status = 404


class Conflict(AfdbError):
    """The write conflicts with existing data (duplicate key, stale version)."""

    code = "conflict"
    http_status = 409


class Busy(AfdbError):
    """The database is locked by another writer and the busy timeout ran out."""

    code = "busy"
    http_status = 503
    default_hint = "another process holds the write lock; retry, or raise AFDB_BUSY_TIMEOUT_MS"


class Unavailable(AfdbError):
    """The database server cannot be reached or did not answer in time."""

    code = "unavailable"
    http_status = 503


class AuthError(AfdbError):
    """The server rejected our credentials."""

    code = "auth_error"
    http_status = 503
    default_hint = "check AFDB_AUTH_TOKEN: it may be wrong, expired or read-only"


class ReadOnly(AfdbError):
    """A write was attempted where only reads are allowed."""

    code = "read_only"
    http_status = 503


class SchemaError(AfdbError):
    """The database schema does not match this version of the code."""

    code = "schema_error"
    http_status = 503


class Corrupt(AfdbError):
    """A database, backup or snapshot failed an integrity check."""

    code = "corrupt"
    http_status = 500


class DatabaseError(AfdbError):
    """A database error that none of the more specific types describes."""

    code = "database_error"
    http_status = 500
