"""Request and response models of the HTTP API (what OpenAPI documents and schemathesis checks).

Limits here mirror the use cases' own checks (which still run): a request the model accepts may
still be refused by the use case with a 4xx, never a 5xx.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from autoforge_data.domain import Evaluation, Prompt, PromptSummary, PromptVersion, User
from autoforge_data.vector.base import MAX_K, Match

Status = Literal["draft", "active", "archived"]
Id = Annotated[str, Field(min_length=1, max_length=64, description="a 26-character id")]
Finite = Annotated[float, Field(allow_inf_nan=False)]
JsonObject = dict[str, Any]


class _In(BaseModel):
    """Request bodies: unknown fields are an error (a typo is not silently ignored)."""

    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    """What went wrong, for people and programs."""

    code: str
    message: str
    hint: str | None = None


class ErrorBody(BaseModel):
    """The one error shape of the API."""

    error: ErrorDetail


class UserIn(_In):
    """A new user."""

    email: str = Field(min_length=3, max_length=320)
    username: str = Field(min_length=1, max_length=64)
    clerk_id: str | None = Field(default=None, min_length=1, max_length=64)
    metadata: JsonObject | None = None


class UserOut(BaseModel):
    """A user."""

    id: str
    email: str
    username: str
    clerk_id: str | None
    metadata: JsonObject
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, user: User) -> UserOut:
        """From the use case's record."""
        return cls(**asdict(user))


class UserPage(BaseModel):
    """One page of users; pass ``next_cursor`` as ``cursor`` for the next."""

    items: list[UserOut]
    next_cursor: str | None


class PromptIn(_In):
    """A new prompt (its version 1)."""

    owner_id: Id
    title: str = Field(min_length=1, max_length=200)
    content: str = Field(min_length=1, max_length=100_000)
    status: Status = "draft"
    metadata: JsonObject | None = None


class PromptEdit(_In):
    """An edit: a new version with a new content and/or title."""

    content: str | None = Field(default=None, min_length=1, max_length=100_000)
    title: str | None = Field(default=None, min_length=1, max_length=200)
    expected_version: int | None = Field(
        default=None, ge=1, le=2**62, description="refuse the edit (409) unless still current"
    )


class StatusIn(_In):
    """A status change."""

    status: Status


class PromptOut(BaseModel):
    """A prompt with its current version's text."""

    id: str
    owner_id: str
    title: str
    content: str
    status: Status
    current_version: int
    metadata: JsonObject
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, prompt: Prompt) -> PromptOut:
        """From the use case's record."""
        return cls(**asdict(prompt))


class PromptSummaryOut(BaseModel):
    """A prompt in a list (no content)."""

    id: str
    title: str
    status: Status
    current_version: int
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, item: PromptSummary) -> PromptSummaryOut:
        """From the use case's record."""
        return cls(**asdict(item))


class PromptPage(BaseModel):
    """One page of a user's prompts, newest first."""

    items: list[PromptSummaryOut]
    next_cursor: str | None


class VersionOut(BaseModel):
    """One immutable version of a prompt."""

    prompt_id: str
    version: int
    title: str
    content: str
    created_at: str

    @classmethod
    def of(cls, v: PromptVersion) -> VersionOut:
        """From the use case's record."""
        return cls(**asdict(v))


class EvaluationIn(_In):
    """A score for one version of a prompt."""

    version: int = Field(ge=1, le=2**62)
    score: Finite
    metrics: JsonObject | None = None


class EvaluationOut(BaseModel):
    """A recorded evaluation."""

    id: str
    prompt_id: str
    version: int
    score: float
    metrics: JsonObject
    created_at: str

    @classmethod
    def of(cls, ev: Evaluation) -> EvaluationOut:
        """From the use case's record."""
        return cls(**asdict(ev))


class EvaluationPage(BaseModel):
    """One page of a prompt's evaluations, newest first."""

    items: list[EvaluationOut]
    next_cursor: str | None


class Hit(BaseModel):
    """One search result."""

    prompt_id: str
    version: int
    score: float
    snippet: str

    @classmethod
    def of(cls, m: Match) -> Hit:
        """From the use case's match."""
        return cls(prompt_id=m.prompt_id, version=m.version, score=m.score, snippet=m.snippet)


class SearchOut(BaseModel):
    """Search results, best first."""

    mode: str
    model: str
    items: list[Hit]


class VectorItem(_In):
    """The vector of one prompt for one model."""

    prompt_id: Id
    vector: list[Finite] = Field(min_length=1, max_length=65_536)


class VectorUpsert(_In):
    """Vectors to store for a registered model (replacing the prompts' previous ones)."""

    model: str = Field(min_length=1, max_length=100)
    items: list[VectorItem] = Field(min_length=1, max_length=1000)


class VectorQuery(_In):
    """A nearest-neighbour query with a raw vector; the filters are ANDed."""

    model: str | None = Field(default=None, min_length=1, max_length=100)
    vector: list[Finite] = Field(min_length=1, max_length=65_536)
    k: int = Field(default=10, ge=1, le=MAX_K)
    status: list[Status] | None = Field(default=None, min_length=1, max_length=3)
    owner_id: Id | None = None
    created_after: str | None = Field(default=None, max_length=40)
    created_before: str | None = Field(default=None, max_length=40)


class VectorWrite(BaseModel):
    """What a vector write did."""

    model: str
    count: int


class Detail(BaseModel):
    """A free-form object (stats of the cache or the index)."""

    model_config = ConfigDict(extra="allow")


class FlushOut(BaseModel):
    """How many cache keys a flush deleted."""

    flushed: int


class BackupIn(_In):
    """A backup to take now (the name defaults to <profile>-<UTC time>)."""

    name: str | None = Field(default=None, min_length=1, max_length=48)


class BackupOut(BaseModel):
    """A finished backup."""

    name: str
    created_at: str
    size_bytes: int
    raw_size_bytes: int
    encrypted: bool
    compression: str
    migration: str | None
    seconds: float

    @classmethod
    def of(cls, manifest: Any, seconds: float) -> BackupOut:
        """From a backup's manifest (every field but ``seconds`` is the manifest's own)."""
        facts = {name: getattr(manifest, name) for name in cls.model_fields if name != "seconds"}
        return cls(**facts, seconds=round(seconds, 3))
