"""The schema as SQLAlchemy 2 typed models: the reference Alembic compares its migrations with.

Alembic migrations (``autoforge_data/migrations``) are the only thing that creates or changes
tables; these models describe the result so that ``afdb migrate --check`` and the pytest-alembic
tests can detect drift. The hot paths read and write through :mod:`autoforge_data.db.repositories`.
"""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from autoforge_data.db.types import F32Vector

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
PROMPT_STATUSES = ("draft", "active", "archived")
MODEL_STATUSES = ("building", "active", "retired")
METRICS = ("cosine", "l2")
DEFAULT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_MODEL_DIM = 384
DEFAULT_EMBEDDINGS_TABLE = "emb_all_minilm_l6_v2"
NOW_SQL = "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"


class Base(DeclarativeBase):
    """Declarative base with the project's constraint naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    """A platform user (mirrors the identity provider's user, e.g. Clerk)."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    clerk_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    username: Mapped[str] = mapped_column(String(64))
    metadata_json: Mapped[str] = mapped_column("metadata", Text, server_default=text("'{}'"))
    created_at: Mapped[str] = mapped_column(String(24), server_default=text(NOW_SQL))
    updated_at: Mapped[str] = mapped_column(String(24), server_default=text(NOW_SQL))

    __table_args__ = (CheckConstraint("json_valid(metadata)", name="metadata_json"),)


class Prompt(Base):
    """A prompt; its text lives in versions, the current one is copied here for fast reads."""

    __tablename__ = "prompts"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    title: Mapped[str] = mapped_column(String(200))
    content: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), server_default=text("'draft'"))
    current_version: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    metadata_json: Mapped[str] = mapped_column("metadata", Text, server_default=text("'{}'"))
    created_at: Mapped[str] = mapped_column(String(24), server_default=text(NOW_SQL))
    updated_at: Mapped[str] = mapped_column(String(24), server_default=text(NOW_SQL))

    __table_args__ = (
        CheckConstraint("status IN ('draft', 'active', 'archived')", name="status"),
        CheckConstraint("current_version >= 1", name="current_version"),
        CheckConstraint("json_valid(metadata)", name="metadata_json"),
        # Covers "a user's prompts, newest first" (ids sort by creation time) without a table read.
        Index(
            "ix_prompts_owner_list",
            "owner_id",
            "id",
            "status",
            "title",
            "current_version",
            "created_at",
            "updated_at",
        ),
        Index("ix_prompts_status_id", "status", "id"),
        # Created-time filters (search, the libsql backend's exact scans of a window) read
        # the window from here instead of every prompt.
        Index("ix_prompts_created_at", "created_at"),
    )


class PromptVersion(Base):
    """One immutable version of a prompt (triggers reject UPDATE and DELETE)."""

    __tablename__ = "prompt_versions"

    prompt_id: Mapped[str] = mapped_column(
        ForeignKey("prompts.id", ondelete="RESTRICT"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[str] = mapped_column(String(24), server_default=text(NOW_SQL))

    __table_args__ = (CheckConstraint("version >= 1", name="version"),)


class Evaluation(Base):
    """A score given to one version of a prompt, with free-form metrics."""

    __tablename__ = "evaluations"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    prompt_id: Mapped[str] = mapped_column(String(26))
    version: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)
    metrics_json: Mapped[str] = mapped_column("metrics", Text, server_default=text("'{}'"))
    created_at: Mapped[str] = mapped_column(String(24), server_default=text(NOW_SQL))

    __table_args__ = (
        ForeignKeyConstraint(
            ["prompt_id", "version"],
            ["prompt_versions.prompt_id", "prompt_versions.version"],
            name="fk_evaluations_prompt_version",
            ondelete="RESTRICT",
        ),
        CheckConstraint("json_valid(metrics)", name="metrics_json"),
        Index("ix_evaluations_prompt_id_id", "prompt_id", "id"),
    )


class EmbeddingModel(Base):
    """The registry of embedding models; vectors of different models never share a table."""

    __tablename__ = "embedding_models"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    dimension: Mapped[int] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(16), server_default=text("'cosine'"))
    normalized: Mapped[bool] = mapped_column(server_default=text("1"))
    status: Mapped[str] = mapped_column(String(16), server_default=text("'building'"))
    table_name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[str] = mapped_column(String(24), server_default=text(NOW_SQL))

    __table_args__ = (
        CheckConstraint("dimension BETWEEN 1 AND 65536", name="dimension"),
        CheckConstraint("metric IN ('cosine', 'l2')", name="metric"),
        CheckConstraint("status IN ('building', 'active', 'retired')", name="status"),
        # At most one active model.
        Index(
            "uq_embedding_models_active",
            "status",
            unique=True,
            sqlite_where=text("status = 'active'"),
        ),
    )


class DefaultEmbedding(Base):
    """Vectors of the default model (all-MiniLM-L6-v2, 384-d) in a real libSQL vector column."""

    __tablename__ = DEFAULT_EMBEDDINGS_TABLE

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prompt_id: Mapped[str] = mapped_column(
        ForeignKey("prompts.id", ondelete="CASCADE"), unique=True
    )
    version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    embedding: Mapped[bytes] = mapped_column(F32Vector(DEFAULT_MODEL_DIM))
    created_at: Mapped[str] = mapped_column(String(24), server_default=text(NOW_SQL))


class PromptKey(Base):
    """A stable integer per prompt: its label in vector indexes and its FTS rowid."""

    __tablename__ = "prompt_keys"
    __table_args__ = ({"sqlite_autoincrement": True},)

    num: Mapped[int] = mapped_column(Integer, primary_key=True)
    prompt_id: Mapped[str] = mapped_column(
        ForeignKey("prompts.id", ondelete="CASCADE"), unique=True
    )


class VectorJournal(Base):
    """Every vector write and filter-relevant prompt change, in commit order (seq)."""

    __tablename__ = "vector_journal"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str | None] = mapped_column(String(100))
    num: Mapped[int] = mapped_column(Integer)
    op: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[str] = mapped_column(String(24), server_default=text(NOW_SQL))

    __table_args__ = (
        CheckConstraint("op IN ('upsert', 'delete', 'meta')", name="op"),
        {"sqlite_autoincrement": True},
    )


class ApiKey(Base):
    """An API key of the HTTP service: only the sha256 of the secret is stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[str] = mapped_column(String(24), server_default=text(NOW_SQL))
    last_used_at: Mapped[str | None] = mapped_column(String(24))
    expires_at: Mapped[str | None] = mapped_column(String(24))
    revoked_at: Mapped[str | None] = mapped_column(String(24))

    __table_args__ = (CheckConstraint("scope IN ('read', 'write', 'admin')", name="scope"),)


metadata = Base.metadata
