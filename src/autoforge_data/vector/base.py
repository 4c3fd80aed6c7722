"""Types shared by the vector index backends and the search service.

A backend answers "the k nearest prompts to this vector among these allowed ones". Prompts are
identified in every index by their stable integer ``num`` (table ``prompt_keys``); scores are
similarities where higher is better (cosine similarity for cosine models, ``-distance`` for l2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from autoforge_data.errors import InvalidInput

Nums = npt.NDArray[np.int64]
Scores = npt.NDArray[np.float32]
Vector = npt.NDArray[np.float32]
Mode = Literal["vector", "keyword", "hybrid"]
MAX_K = 1000
FILTER_STATUSES = ("draft", "active", "archived")
_META_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MetaValue = str | int | float | bool


def checked_meta_key(key: str) -> str:
    """A metadata filter key, checked: letters, digits and ``_`` (SQL inlines it in a JSON
    path, so it is checked again where it is inlined: a filter's dict can change after init)."""
    if not isinstance(key, str) or not _META_KEY.match(key):
        raise InvalidInput(
            f"invalid metadata filter key {key!r}", hint="keys are letters, digits and _ (max 64)"
        )
    return key


@dataclass(frozen=True)
class Filter:
    """What a search may return: every given condition must hold (AND)."""

    status: tuple[str, ...] | None = None
    owner_id: str | None = None
    created_from: str | None = None  # inclusive, ISO-8601 UTC text
    created_to: str | None = None  # exclusive
    metadata: dict[str, MetaValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status is not None:
            bad = [s for s in self.status if s not in FILTER_STATUSES]
            if bad or not self.status:
                raise InvalidInput(
                    f"unknown status filter {bad or self.status!r}",
                    hint="use draft, active or archived",
                )
        for key, value in self.metadata.items():
            checked_meta_key(key)
            if not isinstance(value, (str, int, float, bool)):
                raise InvalidInput(f"metadata filter {key!r} must be a string, number or bool")

    @property
    def empty(self) -> bool:
        """True when nothing is filtered."""
        return (
            self.status is None
            and self.owner_id is None
            and self.created_from is None
            and self.created_to is None
            and not self.metadata
        )


@dataclass(frozen=True, slots=True)
class Match:
    """One search result."""

    prompt_id: str
    version: int
    score: float
    snippet: str


@dataclass(frozen=True, slots=True)
class Hits:
    """Raw index output: nums and scores, best first, plus how many candidates were scanned."""

    nums: Nums
    scores: Scores
    scanned: int
    strategy: str  # e.g. "ann", "ann+overfetch", "exact-subset", "exact"


class VectorIndex(Protocol):
    """A nearest-neighbour index over one model's vectors; owns its vector SQL and index code."""

    name: str

    def search(self, query: Vector, k: int, flt: Filter) -> Hits:
        """The k best prompts satisfying ``flt`` (recall ≥ 0.95 against exact search)."""
        ...

    def refresh(self) -> int:
        """Apply committed changes (own and other processes'); returns how many were applied."""
        ...

    def stats(self) -> dict[str, object]:
        """Size, build time, journal position and other numbers for `afdb index stats`."""
        ...

    def close(self) -> None:
        """Release memory and files."""
        ...


def check_query(vector: Vector, dimension: int, k: int) -> Vector:
    """Validate a query vector and k before any index work."""
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise InvalidInput(f"k must be between 1 and {MAX_K}")
    q = np.asarray(vector, dtype=np.float32)
    if q.ndim != 1 or q.shape[0] != dimension:
        raise InvalidInput(
            f"query vector has shape {q.shape}, expected ({dimension},)",
            hint="embed the query with the active model",
        )
    if not np.isfinite(q).all():
        raise InvalidInput("query vector contains NaN or infinity")
    return q
