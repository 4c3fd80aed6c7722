"""Hrana values: encoding of parameters, decoding of result cells, PEP 249 types and constructors.

Hrana JSON carries integers as decimal strings (64-bit), floats as numbers, text, blobs as base64
and NULL; NaN is sent as NULL (as SQLite stores it) and infinities are refused.
"""

from __future__ import annotations

import base64
import datetime as _dt
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

from autoforge_data.db.hrana.errors import DataError, InterfaceError, ProgrammingError

JSONDict = dict[str, Any]


# --------------------------------------------------------------------------------------------
# PEP 249 type objects and constructors
# --------------------------------------------------------------------------------------------


class _DBAPIType:
    def __init__(self, *names: str) -> None:
        self.names = frozenset(names)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other.upper() in self.names

    def __hash__(self) -> int:
        return hash(self.names)


STRING = _DBAPIType("TEXT", "VARCHAR", "CHAR", "CLOB", "STRING")
BINARY = _DBAPIType("BLOB")
NUMBER = _DBAPIType("INTEGER", "INT", "REAL", "FLOAT", "DOUBLE", "NUMERIC", "DECIMAL")
DATETIME = _DBAPIType("DATE", "DATETIME", "TIMESTAMP", "TIME")
ROWID = _DBAPIType("ROWID", "INTEGER")

Binary = bytes
Date = _dt.date
Time = _dt.time
Timestamp = _dt.datetime


def DateFromTicks(ticks: float) -> _dt.date:  # PEP 249 name
    """PEP 249 constructor."""
    return _dt.date.fromtimestamp(ticks)


def TimeFromTicks(ticks: float) -> _dt.time:  # PEP 249 name
    """PEP 249 constructor."""
    return _dt.datetime.fromtimestamp(ticks).time()


def TimestampFromTicks(ticks: float) -> _dt.datetime:  # PEP 249 name
    """PEP 249 constructor."""
    return _dt.datetime.fromtimestamp(ticks)


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------

_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**63 - 1


def _encode_value(value: object, where: int | str) -> JSONDict:  # noqa: PLR0911 - one per type
    if value is None:
        return {"type": "null"}
    if isinstance(value, bool):
        return {"type": "integer", "value": "1" if value else "0"}
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise DataError(f"parameter {where}: integer does not fit in 64 bits", code="RANGE")
        return {"type": "integer", "value": str(int(value))}
    if isinstance(value, float):
        if math.isnan(value):
            return {"type": "null"}  # SQLite stores NaN as NULL
        if math.isinf(value):
            raise DataError(
                f"parameter {where}: infinity cannot be sent over Hrana JSON", code="RANGE"
            )
        return {"type": "float", "value": float(value)}
    if isinstance(value, str):
        return {"type": "text", "value": str.__str__(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"type": "blob", "base64": base64.b64encode(bytes(value)).decode("ascii")}
    raise ProgrammingError(
        f"Error binding parameter {where}: type {type(value).__name__!r} is not supported",
        code="ARGS_INVALID",
    )


def _decode_value(cell: JSONDict) -> Any:
    kind = cell.get("type")
    if kind == "null":
        return None
    if kind == "integer":
        return int(cell["value"])
    if kind == "float":
        return float(cell["value"])
    if kind == "text":
        return cell["value"]
    if kind == "blob":
        raw = cell.get("base64", cell.get("value")) or ""
        return base64.b64decode(raw + "=" * (-len(raw) % 4))
    raise InterfaceError(f"unknown value type {kind!r} from the server", code="PROTOCOL")


def _encode_params(params: Sequence[Any] | Mapping[str, Any] | None) -> JSONDict:
    if params is None:
        return {}
    if isinstance(params, Mapping):
        return {
            "named_args": [
                {"name": name, "value": _encode_value(value, repr(name))}
                for name, value in params.items()
            ]
        }
    if isinstance(params, str | bytes | bytearray | memoryview):
        raise ProgrammingError(
            "parameters must be a sequence or a mapping, not a string", code="ARGS_INVALID"
        )
    return {"args": [_encode_value(v, i) for i, v in enumerate(params, start=1)]}
