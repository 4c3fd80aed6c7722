"""Column types of ours: a libSQL vector column that binds float32 little-endian bytes."""

from __future__ import annotations

import math
import struct
import sys
from array import array
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sqlalchemy.dialects.sqlite.base import ischema_names
from sqlalchemy.engine import Dialect
from sqlalchemy.types import UserDefinedType

from autoforge_data.errors import InvalidInput

MAX_DIMENSION = 65536


def pack_f32(values: Sequence[float] | array[float] | bytes | np.ndarray, dimension: int) -> bytes:
    """Check a vector and return it as float32 little-endian bytes (libSQL's F32_BLOB layout).

    Raises InvalidInput for a wrong dimension, NaN or infinity, before any SQL runs.
    """
    if isinstance(values, np.ndarray):
        if values.ndim != 1 or values.shape[0] != dimension:
            raise InvalidInput(
                f"vector has shape {values.shape}, expected ({dimension},)",
                hint="embed with the model the index was created for",
            )
        arr32 = values.astype("<f4", copy=False)
        if not np.isfinite(arr32).all():
            raise InvalidInput("vector contains NaN or infinity", hint="check the model output")
        return arr32.tobytes()
    if isinstance(values, (bytes, bytearray, memoryview)):
        raw = bytes(values)
        if len(raw) != 4 * dimension:
            raise InvalidInput(
                f"vector has {len(raw) // 4} dimensions, expected {dimension}",
                hint="embed with the model the index was created for",
            )
        floats = struct.unpack(f"<{dimension}f", raw)
        _check_finite(floats)
        return raw
    n = len(values)
    if n != dimension:
        raise InvalidInput(
            f"vector has {n} dimensions, expected {dimension}",
            hint="embed with the model the index was created for",
        )
    arr = values if isinstance(values, array) and values.typecode == "f" else _to_array(values)
    _check_finite(arr)
    if sys.byteorder != "little":  # pragma: no cover - every supported machine is little-endian
        arr = array("f", arr)
        arr.byteswap()
    return arr.tobytes()


def unpack_f32(raw: bytes) -> array[float]:
    """float32 little-endian bytes back to an array of floats."""
    arr = array("f")
    arr.frombytes(raw)
    if sys.byteorder != "little":  # pragma: no cover
        arr.byteswap()
    return arr


def _to_array(values: Sequence[float]) -> array[float]:
    try:
        return array("f", values)
    except (TypeError, OverflowError) as exc:
        raise InvalidInput("vector must be a sequence of numbers") from exc


def _check_finite(values: Sequence[float]) -> None:
    if not all(map(math.isfinite, values)):
        raise InvalidInput(
            "vector contains NaN or infinity", hint="check the embedding model output"
        )


class F32Vector(UserDefinedType[bytes]):
    """A libSQL ``F32_BLOB(d)`` column; binds any float sequence, checked before SQL."""

    cache_ok = True

    def __init__(self, dimension: int) -> None:
        if not 0 < dimension <= MAX_DIMENSION:
            raise InvalidInput(f"vector dimension {dimension} out of range 1..{MAX_DIMENSION}")
        self.dimension = dimension

    def get_col_spec(self, **kw: Any) -> str:
        """The DDL type: ``F32_BLOB(d)``."""
        return f"F32_BLOB({self.dimension})"

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], bytes | None]:
        """Pack floats into float32 little-endian bytes, rejecting bad vectors."""
        dim = self.dimension

        def process(value: Any) -> bytes | None:
            return None if value is None else pack_f32(value, dim)

        return process

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any]:
        """Return vectors as ``array('f')``."""

        def process(value: Any) -> Any:
            return None if value is None else unpack_f32(value)

        return process

    @property
    def python_type(self) -> type[bytes]:
        """Vectors are carried as bytes between the driver and us."""
        return bytes


# Reflection (Alembic's drift check) reads ``F32_BLOB(384)`` back as our type with its dimension.
ischema_names.setdefault("F32_BLOB", F32Vector)
