"""Statements on their way to a Hrana server: classification by leading keyword, and results.

:func:`_classify` tells the connection what a statement is (BEGIN, a write that may be deferred, a
SELECT, a PRAGMA, ...); a :class:`_Stmt` carries the encoded statement and, once sent, its
:class:`_Result` or error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from autoforge_data.db.hrana.errors import DatabaseError
from autoforge_data.db.hrana.values import JSONDict, _decode_value, _encode_params

# --------------------------------------------------------------------------------------------
# Statement classification (leading keyword, comments skipped)
# --------------------------------------------------------------------------------------------

StmtKind = Literal[
    "begin",
    "commit",
    "rollback",
    "rollback_to",
    "savepoint",
    "dml",
    "select",
    "pragma",
    "other",
]

_NOISE = re.compile(r"(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?(?:\*/|\Z))*", re.S)
_WORDS = re.compile(r"[A-Za-z_]+")
_STRINGS = re.compile(r"'(?:[^']|'')*'")
_RETURNING = re.compile(r"\bRETURNING\b", re.I)
_BEGIN = re.compile(
    r"BEGIN(?:\s+(DEFERRED|IMMEDIATE|EXCLUSIVE))?(?:\s+TRANSACTION)?\s*;?\s*\Z", re.I
)
_RELEASE = re.compile(r"RELEASE\s+(?:SAVEPOINT\s+)?(\S+?)\s*;?\s*\Z", re.I)
_PRAGMA_SET = re.compile(
    r"PRAGMA\s+(?:main\s*\.\s*)?([A-Za-z_]+)\s*(?:=\s*(.+?)|\(\s*(.+?)\s*\))\s*;?\s*\Z",
    re.I | re.S,
)
#: PRAGMAs that configure one SQLite connection: replayed at the start of every new stream.
_SESSION_PRAGMAS: Final = frozenset(
    {
        "foreign_keys",
        "recursive_triggers",
        "busy_timeout",
        "query_only",
        "ignore_check_constraints",
        "legacy_alter_table",
        "trusted_schema",
        "automatic_index",
        "reverse_unordered_selects",
        "cache_size",
        "temp_store",
        "cell_size_check",
        "case_sensitive_like",
    }
)


def _strip_noise(sql: str) -> str:
    m = _NOISE.match(sql)
    return sql[m.end() :] if m else sql


def _classify(sql: str) -> StmtKind:  # noqa: PLR0911 - one return per kind
    words = [w.upper() for w in _WORDS.findall(_strip_noise(sql)[:80], 0)[:4]]
    first = words[0] if words else ""
    if first == "BEGIN":
        return "begin"
    if first in ("COMMIT", "END"):
        return "commit"
    if first == "ROLLBACK":
        return "rollback_to" if "TO" in words[1:3] else "rollback"
    if first in ("SAVEPOINT", "RELEASE"):
        return "savepoint"
    if first in ("INSERT", "UPDATE", "DELETE", "REPLACE"):
        return "dml"
    if first in ("SELECT", "VALUES"):
        return "select"
    if first == "PRAGMA":
        return "pragma"
    return "other"


def _has_returning(sql: str) -> bool:
    return _RETURNING.search(_STRINGS.sub("''", sql)) is not None


# --------------------------------------------------------------------------------------------
# Statements and results
# --------------------------------------------------------------------------------------------


class _Result:
    __slots__ = ("columns", "lastrowid", "rowcount", "rows")

    def __init__(self, raw: JSONDict) -> None:
        cols = raw.get("cols") or []
        self.columns: tuple[str, ...] | None = (
            tuple(str(c.get("name") or "") for c in cols) if cols else None
        )
        self.rows: list[tuple[Any, ...]] = [
            tuple(_decode_value(cell) for cell in row) for row in raw.get("rows") or []
        ]
        self.rowcount = int(raw.get("affected_row_count") or 0)
        rid = raw.get("last_insert_rowid")
        self.lastrowid: int | None = int(rid) if rid is not None else None


_State = Literal["new", "queued", "done", "failed", "skipped"]


class _Stmt:
    """One statement on its way to the server, and what became of it."""

    __slots__ = ("error", "internal", "kind", "payload", "result", "state")

    def __init__(
        self,
        sql: str,
        params: Sequence[Any] | Mapping[str, Any] | None,
        kind: StmtKind,
        *,
        want_rows: bool = True,
        internal: bool = False,
    ) -> None:
        self.kind = kind
        self.internal = internal  # sent by the driver (prelude, BEGIN, COMMIT...), not the caller
        self.payload: JSONDict = {"sql": sql, **_encode_params(params), "want_rows": want_rows}
        self.state: _State = "new"
        self.result: _Result | None = None
        self.error: DatabaseError | None = None

    @property
    def sql(self) -> str:
        return str(self.payload["sql"])


def _internal(sql: str, kind: StmtKind = "other") -> _Stmt:
    return _Stmt(sql, None, kind, want_rows=False, internal=True)


def _first_failure(stmts: list[_Stmt]) -> _Stmt | None:
    return next((s for s in stmts if s.state == "failed"), None)
