"""Typed records that the use cases return (never database rows)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

Status = Literal["draft", "active", "archived"]
T = TypeVar("T")


def utcnow() -> str:
    """Now in UTC as fixed-width ISO-8601 text with milliseconds (sorts as it reads)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class User:
    """A platform user."""

    id: str
    email: str
    username: str
    clerk_id: str | None
    metadata: dict[str, Any]
    created_at: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class Prompt:
    """A prompt with its current version's text."""

    id: str
    owner_id: str
    title: str
    content: str
    status: Status
    current_version: int
    metadata: dict[str, Any]
    created_at: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class PromptSummary:
    """A prompt in a list (no content): what the covering index holds."""

    id: str
    title: str
    status: Status
    current_version: int
    created_at: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class PromptVersion:
    """One immutable version of a prompt."""

    prompt_id: str
    version: int
    title: str
    content: str
    created_at: str


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A score for one version of a prompt."""

    id: str
    prompt_id: str
    version: int
    score: float
    metrics: dict[str, Any]
    created_at: str


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a keyset-paged list; ``next_cursor`` is None on the last page."""

    items: list[T] = field(default_factory=list)
    next_cursor: str | None = None
