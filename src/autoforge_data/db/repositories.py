"""Repositories: the SQL of the use cases, returning typed records. They never commit.

SQL is written once here as constants (no names from outside ever reach it) and runs on the unit
of work's raw DB-API connection: a point read costs about what the driver costs, not what an ORM
costs. Writes that do not need an answer from the server carry every value they need (client-made
ids and timestamps), so a remote unit of work can send them all with its COMMIT in one round trip.
"""

from __future__ import annotations

import json
from typing import Any

from autoforge_data.db.uow import UnitOfWork
from autoforge_data.domain import Evaluation, Prompt, PromptSummary, PromptVersion, Status, User

_USER_COLS = "id, email, username, clerk_id, metadata, created_at, updated_at"
_PROMPT_COLS = (
    "id, owner_id, title, content, status, current_version, metadata, created_at, updated_at"
)
_SUMMARY_COLS = "id, title, status, current_version, created_at, updated_at"
_EVAL_COLS = "id, prompt_id, version, score, metrics, created_at"
# Strictly increasing: two updates in one millisecond still move updated_at forward, so the
# safety-net trigger (for updates that forget updated_at) never fires behind RETURNING's back.
_TOUCH = "updated_at = max(?, strftime('%Y-%m-%dT%H:%M:%fZ', updated_at, '+0.001 seconds'))"


def _user(row: Any) -> User:
    return User(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5], row[6])


def _prompt(row: Any) -> Prompt:
    return Prompt(
        row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6]), row[7], row[8]
    )


def _summary(row: Any) -> PromptSummary:
    return PromptSummary(row[0], row[1], row[2], row[3], row[4], row[5])


def _evaluation(row: Any) -> Evaluation:
    return Evaluation(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5])


class Users:
    """Users table access."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    def add(self, user: User) -> None:
        """Insert a user (duplicate email or clerk id → Conflict at commit at the latest)."""
        self.uow.execute(
            f"INSERT INTO users ({_USER_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                user.id,
                user.email,
                user.username,
                user.clerk_id,
                json.dumps(user.metadata),
                user.created_at,
                user.updated_at,
            ),
            kind="insert",
        )

    def get(self, user_id: str) -> User | None:
        """One user by id."""
        row = self.uow.fetchone(f"SELECT {_USER_COLS} FROM users WHERE id = ?", (user_id,))
        return None if row is None else _user(row)

    def by_email(self, email: str) -> User | None:
        """One user by email."""
        row = self.uow.fetchone(f"SELECT {_USER_COLS} FROM users WHERE email = ?", (email,))
        return None if row is None else _user(row)

    def list(self, limit: int, after: str | None) -> list[User]:
        """Users in id order, after a keyset cursor."""
        rows = self.uow.fetchall(
            f"SELECT {_USER_COLS} FROM users WHERE id > ? ORDER BY id LIMIT ?",
            (after or "", limit),
        )
        return [_user(r) for r in rows]


class Prompts:
    """Prompts and their versions."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    def add(self, prompt: Prompt) -> None:
        """Insert a prompt and its version 1."""
        self.uow.execute(
            f"INSERT INTO prompts ({_PROMPT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                prompt.id,
                prompt.owner_id,
                prompt.title,
                prompt.content,
                prompt.status,
                prompt.current_version,
                json.dumps(prompt.metadata),
                prompt.created_at,
                prompt.updated_at,
            ),
            kind="insert",
        )
        self.add_version(
            PromptVersion(prompt.id, 1, prompt.title, prompt.content, prompt.created_at)
        )

    def add_version(self, v: PromptVersion) -> None:
        """Append an immutable version."""
        self.uow.execute(
            "INSERT INTO prompt_versions (prompt_id, version, title, content, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (v.prompt_id, v.version, v.title, v.content, v.created_at),
            kind="insert",
        )

    def get(self, prompt_id: str) -> Prompt | None:
        """One prompt by id."""
        row = self.uow.fetchone(f"SELECT {_PROMPT_COLS} FROM prompts WHERE id = ?", (prompt_id,))
        return None if row is None else _prompt(row)

    def bump_version(
        self,
        prompt_id: str,
        title: str | None,
        content: str | None,
        expected: int | None,
        now: str,
    ) -> Prompt | None:
        """Make the next version current; None if missing or not at ``expected``."""
        row = self.uow.fetchone(
            "UPDATE prompts SET current_version = current_version + 1, "
            f"title = coalesce(?, title), content = coalesce(?, content), {_TOUCH} "
            "WHERE id = ? AND (? IS NULL OR current_version = ?) "
            f"RETURNING {_PROMPT_COLS}",
            (title, content, now, prompt_id, expected, expected),
            kind="update",
        )
        return None if row is None else _prompt(row)

    def set_status(self, prompt_id: str, status: Status, now: str) -> Prompt | None:
        """Change the status; None if the prompt does not exist."""
        row = self.uow.fetchone(
            f"UPDATE prompts SET status = ?, {_TOUCH} WHERE id = ? RETURNING {_PROMPT_COLS}",
            (status, now, prompt_id),
            kind="update",
        )
        return None if row is None else _prompt(row)

    def list_for_owner(
        self, owner_id: str, limit: int, before: str | None, status: Status | None
    ) -> list[PromptSummary]:
        """A user's prompts newest first (ids sort by creation), from the covering index."""
        if status is None:
            rows = self.uow.fetchall(
                f"SELECT {_SUMMARY_COLS} FROM prompts INDEXED BY ix_prompts_owner_list "
                "WHERE owner_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
                (owner_id, before or "~", limit),
            )
        else:
            rows = self.uow.fetchall(
                f"SELECT {_SUMMARY_COLS} FROM prompts INDEXED BY ix_prompts_owner_list "
                "WHERE owner_id = ? AND id < ? AND status = ? ORDER BY id DESC LIMIT ?",
                (owner_id, before or "~", status, limit),
            )
        return [_summary(r) for r in rows]

    def versions(self, prompt_id: str) -> list[PromptVersion]:
        """All versions, oldest first."""
        rows = self.uow.fetchall(
            "SELECT prompt_id, version, title, content, created_at FROM prompt_versions "
            "WHERE prompt_id = ? ORDER BY version",
            (prompt_id,),
        )
        return [PromptVersion(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def has_version(self, prompt_id: str, version: int) -> bool:
        """True if that version exists."""
        row = self.uow.fetchone(
            "SELECT 1 FROM prompt_versions WHERE prompt_id = ? AND version = ?",
            (prompt_id, version),
        )
        return row is not None


class Evaluations:
    """Evaluations of prompt versions."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    def add(self, ev: Evaluation) -> None:
        """Insert an evaluation (its prompt version must exist: foreign key)."""
        self.uow.execute(
            f"INSERT INTO evaluations ({_EVAL_COLS}) VALUES (?, ?, ?, ?, ?, ?)",
            (ev.id, ev.prompt_id, ev.version, ev.score, json.dumps(ev.metrics), ev.created_at),
            kind="insert",
        )

    def list_for_prompt(self, prompt_id: str, limit: int, before: str | None) -> list[Evaluation]:
        """A prompt's evaluations, newest first."""
        rows = self.uow.fetchall(
            f"SELECT {_EVAL_COLS} FROM evaluations WHERE prompt_id = ? AND id < ? "
            "ORDER BY id DESC LIMIT ?",
            (prompt_id, before or "~", limit),
        )
        return [_evaluation(r) for r in rows]


def insert_prompts_bulk(
    uow: UnitOfWork, owner_id: str, status: Status, now: str, items: list[tuple[str, str, str]]
) -> None:
    """Insert many (id, title, content) prompts of one owner with their version 1."""
    uow.executemany(
        f"INSERT INTO prompts ({_PROMPT_COLS}) VALUES (?, ?, ?, ?, ?, 1, '{{}}', ?, ?)",
        [(pid, owner_id, title, content, status, now, now) for pid, title, content in items],
    )
    uow.executemany(
        "INSERT INTO prompt_versions (prompt_id, version, title, content, created_at) "
        "VALUES (?, 1, ?, ?, ?)",
        [(pid, title, content, now) for pid, title, content in items],
    )
