"""One place that turns driver errors into our error types.

stdlib sqlite3 raises DB-API exceptions; libsql-experimental raises plain ``ValueError`` with
SQLite's message; our Hrana driver raises DB-API exceptions with a Hrana ``code``; SQLAlchemy wraps
any of them. All end up here. Messages are ours: no SQL, no parameters, no token, no DSN.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import exc as sa_exc

from autoforge_data.errors import (
    AfdbError,
    AuthError,
    Busy,
    Conflict,
    Corrupt,
    DatabaseError,
    InvalidInput,
    NotFound,
    ReadOnly,
    SchemaError,
    Unavailable,
)

_RULES: tuple[tuple[tuple[str, ...], type[AfdbError], str, str | None], ...] = (
    (("unique constraint", "primary key"), Conflict, "already exists", None),
    (("foreign key constraint",), NotFound, "refers to something that does not exist", None),
    (
        ("check constraint", "not null constraint", "datatype mismatch"),
        InvalidInput,
        "value rejected by the schema",
        None,
    ),
    (("immutable",), Conflict, "this record is immutable", "create a new version instead"),
    (
        ("database is locked", "database table is locked", "sqlite_busy", "sqlite_locked"),
        Busy,
        "the database is busy",
        None,
    ),
    (
        ("readonly", "read-only", "read only", "not allowed to write"),
        ReadOnly,
        "the database is read-only here",
        "use a token with write access, or the primary",
    ),
    (
        ("no such table", "no such column"),
        SchemaError,
        "the database schema is out of date",
        "run: afdb migrate",
    ),
    (
        ("file is not a database", "malformed", "corrupt", "notadb"),
        Corrupt,
        "the database file is damaged or not a database",
        "restore the latest verified backup (afdb backup restore)",
    ),
    (
        ("disk is full", "disk i/o error", "sqlite_full", "sqlite_ioerr"),
        DatabaseError,
        "the database could not write to disk",
        "check free space and the disk's health",
    ),
)


def _message_of(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    text = str(exc).lower()
    return f"{text} {code}".lower() if isinstance(code, str) else text


def translate(exc: BaseException) -> AfdbError | None:  # noqa: PLR0911 - one exit per family
    """Our error for a driver or SQLAlchemy exception, or None if it is not a database error."""
    if isinstance(exc, AfdbError):
        return exc
    orig: Any = exc.orig if isinstance(exc, sa_exc.StatementError) else exc
    if isinstance(orig, AfdbError):
        return orig
    kind = type(orig).__name__
    if kind == "AuthError":
        return AuthError("the database server rejected the credentials")
    if kind == "TransportError":
        return Unavailable(
            "the database server is unreachable or did not answer in time",
            hint="check AFDB_DATABASE_URL / AFDB_SYNC_URL and that the server runs; "
            "see `afdb doctor`",
        )
    db_error = isinstance(orig, (sqlite3.Error, ValueError)) or _is_dbapi_error(orig)
    if not db_error:
        return None
    text = _message_of(orig)
    for needles, cls, message, hint in _RULES:
        if any(n in text for n in needles):
            return cls(message, hint=hint)
    if isinstance(orig, ValueError) and not _looks_like_sqlite(text):
        return None
    return DatabaseError("database error", hint="run with --debug for details")


def _is_dbapi_error(exc: BaseException) -> bool:
    return any(
        c.__name__ == "DatabaseError" or (c.__name__ == "Error" and c.__module__.endswith("hrana"))
        for c in type(exc).__mro__
    )


def _looks_like_sqlite(text: str) -> bool:
    return any(w in text for w in ("sqlite", "sql", "constraint", "database", "hrana", "stream"))
