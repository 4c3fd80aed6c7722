"""Use cases for users, prompts, versions and evaluations.

Each function validates its input before any I/O, runs one unit of work and returns typed
records. In remote mode ``create_prompt`` costs one round trip (ids and timestamps are made here,
so the inserts need no answer before COMMIT).

Caching: ``get_prompt`` and ``list_prompts`` take an optional ``cache``; whether they use it
depends on the deployment mode (:func:`autoforge_data.services.caching.cache_policy`: only in
remote mode with Redis, where a read costs a round trip). The writers take the same ``cache``
and drop what they changed once their transaction has committed (never before, never on a
rollback): the prompt, its owner's list pages, and the search generation.

Change events: the writers take an optional ``events`` sink (an :class:`~autoforge_data.events.
EventBus`, e.g. ``app.state.events``) and publish what they changed after commit, never for a
rollback (:mod:`autoforge_data.events`).
"""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING, Any, get_args

from autoforge_data.db.engine import Database
from autoforge_data.db.repositories import Evaluations, Prompts, Users, insert_prompts_bulk
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.domain import (
    Evaluation,
    Page,
    Prompt,
    PromptSummary,
    PromptVersion,
    Status,
    User,
    utcnow,
)
from autoforge_data.errors import Conflict, InvalidInput, NotFound
from autoforge_data.events import EventSink, evaluation_event, prompt_event, publish_after_commit
from autoforge_data.ids import is_id, new_id
from autoforge_data.services import caching

if TYPE_CHECKING:
    from autoforge_data.cache import CacheAside

MAX_TITLE = 200
MAX_CONTENT = 100_000
MAX_METADATA_BYTES = 16_384
MAX_PAGE = 200
STATUSES: tuple[str, ...] = get_args(Status)
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
_USERNAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _text(value: str, name: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{name} must not be empty")
    if len(value) > limit:
        raise InvalidInput(f"{name} is longer than {limit} characters")
    if "\x00" in value:
        raise InvalidInput(f"{name} must not contain NUL characters")
    return value


def _metadata(value: dict[str, Any] | None, name: str = "metadata") -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{name} must be a JSON object")
    try:
        encoded = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{name} must be JSON (no NaN, no binary)") from exc
    if len(encoded.encode()) > MAX_METADATA_BYTES:
        raise InvalidInput(f"{name} is larger than {MAX_METADATA_BYTES} bytes")
    return value


def _id(value: str, what: str) -> str:
    if not isinstance(value, str) or not is_id(value):
        raise NotFound(f"{what} {value!r} not found", hint="ids are 26-character strings")
    return value


def _status(value: str) -> Status:
    if value not in STATUSES:
        raise InvalidInput(f"unknown status {value!r}", hint="use draft, active or archived")
    return value  # type: ignore[return-value]  # checked against Status's members just above


def _limit(limit: int) -> int:
    if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}")
    return limit


def _cursor(cursor: str | None) -> str | None:
    if cursor is not None and not is_id(cursor):
        raise InvalidInput("invalid page cursor", hint="pass next_cursor from the previous page")
    return cursor


def create_user(
    db: Database,
    email: str,
    username: str,
    *,
    clerk_id: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> User:
    """Create a user; a taken email or clerk id is a Conflict."""
    email = _text(email, "email", 320).strip().lower()
    if not _EMAIL.match(email):
        raise InvalidInput(f"invalid email {email!r}")
    if not _USERNAME.match(username or ""):
        raise InvalidInput("username must be 1-64 letters, digits, '_', '.' or '-'")
    if clerk_id is not None:
        _text(clerk_id, "clerk_id", 64)
    now = utcnow()
    user = User(new_id(), email, username, clerk_id, _metadata(metadata), now, now)
    try:
        with UnitOfWork(db, write=True) as uow:
            Users(uow).add(user)
            uow.commit()
    except Conflict:
        raise Conflict("a user with this email or clerk id already exists") from None
    return user


def get_user(db: Database, user_id: str) -> User:
    """One user by id."""
    _id(user_id, "user")
    with UnitOfWork(db) as uow:
        user = Users(uow).get(user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found")
    return user


def list_users(db: Database, *, limit: int = 50, cursor: str | None = None) -> Page[User]:
    """Users in creation order, keyset-paged."""
    limit, cursor = _limit(limit), _cursor(cursor)
    with UnitOfWork(db) as uow:
        items = Users(uow).list(limit + 1, cursor)
    return _page(items, limit)


def create_prompt(
    db: Database,
    owner_id: str,
    title: str,
    content: str,
    *,
    status: str = "draft",
    metadata: dict[str, Any] | None = None,
    cache: CacheAside | None = None,
    events: EventSink | None = None,
) -> Prompt:
    """Create a prompt with its version 1 (one transaction; one round trip in remote mode)."""
    _id(owner_id, "user")
    now = utcnow()
    prompt = Prompt(
        new_id(),
        owner_id,
        _text(title, "title", MAX_TITLE),
        _text(content, "content", MAX_CONTENT),
        _status(status),
        1,
        _metadata(metadata),
        now,
        now,
    )
    try:
        with UnitOfWork(db, write=True) as uow:
            Prompts(uow).add(prompt)
            caching.prompt_writes(cache, db, uow, owner_ids=[owner_id])
            publish_after_commit(uow, events, prompt_event("prompt.created", prompt))
            uow.commit()
    except NotFound:
        raise NotFound(f"user {owner_id} not found") from None
    return prompt


def get_prompt(db: Database, prompt_id: str, *, cache: CacheAside | None = None) -> Prompt:
    """One prompt by id, with its current content (through ``cache`` if the policy says so)."""
    _id(prompt_id, "prompt")
    if cache is not None and caching.caches_prompts(db, cache):
        return cache.get_or_load(
            caching.PROMPT,
            [prompt_id],
            lambda: _get_prompt(db, prompt_id),
            codec=caching.prompt_codec(),
        )
    return _get_prompt(db, prompt_id)


def _get_prompt(db: Database, prompt_id: str) -> Prompt:
    with UnitOfWork(db) as uow:
        prompt = Prompts(uow).get(prompt_id)
    if prompt is None:  # not cached: the loader's error reaches the caller
        raise NotFound(f"prompt {prompt_id} not found")
    return prompt


def edit_prompt(
    db: Database,
    prompt_id: str,
    *,
    content: str | None = None,
    title: str | None = None,
    expected_version: int | None = None,
    cache: CacheAside | None = None,
    events: EventSink | None = None,
) -> Prompt:
    """Save a new immutable version (number + 1) and make it current, in one transaction.

    With ``expected_version`` the edit is refused (Conflict) if someone else saved first.
    """
    _id(prompt_id, "prompt")
    if content is None and title is None:
        raise InvalidInput("nothing to change", hint="give a new content or title")
    if content is not None:
        _text(content, "content", MAX_CONTENT)
    if title is not None:
        _text(title, "title", MAX_TITLE)
    now = utcnow()
    with UnitOfWork(db, write=True) as uow:
        prompts = Prompts(uow)
        updated = prompts.bump_version(prompt_id, title, content, expected_version, now)
        if updated is None:
            if prompts.get(prompt_id) is None:
                raise NotFound(f"prompt {prompt_id} not found")
            raise Conflict(
                f"prompt {prompt_id} is no longer at version {expected_version}",
                hint="reload the prompt and apply the edit to its current version",
            )
        prompts.add_version(
            PromptVersion(prompt_id, updated.current_version, updated.title, updated.content, now)
        )
        caching.prompt_writes(cache, db, uow, prompt_ids=[prompt_id], owner_ids=[updated.owner_id])
        publish_after_commit(uow, events, prompt_event("prompt.edited", updated))
        uow.commit()
    return updated


def set_status(
    db: Database,
    prompt_id: str,
    status: str,
    *,
    cache: CacheAside | None = None,
    events: EventSink | None = None,
) -> Prompt:
    """Change a prompt's status (draft, active, archived)."""
    _id(prompt_id, "prompt")
    checked = _status(status)
    with UnitOfWork(db, write=True) as uow:
        prompt = Prompts(uow).set_status(prompt_id, checked, utcnow())
        if prompt is None:
            raise NotFound(f"prompt {prompt_id} not found")
        caching.prompt_writes(cache, db, uow, prompt_ids=[prompt_id], owner_ids=[prompt.owner_id])
        publish_after_commit(uow, events, prompt_event("prompt.status_changed", prompt))
        uow.commit()
    return prompt


def list_prompts(
    db: Database,
    owner_id: str,
    *,
    limit: int = 20,
    cursor: str | None = None,
    status: str | None = None,
    cache: CacheAside | None = None,
) -> Page[PromptSummary]:
    """A user's prompts, newest first, keyset-paged (pass ``next_cursor`` back for more).

    Cached pages are keyed by the owner's list generation, which every write of one of the
    owner's prompts drops: all pages of the owner (any limit, cursor, status) go at once.
    """
    _id(owner_id, "user")
    limit, cursor = _limit(limit), _cursor(cursor)
    checked = None if status is None else _status(status)

    def load() -> Page[PromptSummary]:
        with UnitOfWork(db) as uow:
            items = Prompts(uow).list_for_owner(owner_id, limit + 1, cursor, checked)
        return _page(items, limit)

    if cache is not None and caching.caches_prompts(db, cache):
        gen = caching.generation(cache, caching.PROMPT_LIST_GEN, [owner_id])
        # all strings ("" never is a cursor or a status): the fast, memoised key path
        parts = [owner_id, gen, str(limit), cursor or "", checked or ""]
        return cache.get_or_load(caching.PROMPT_LIST, parts, load, codec=caching.page_codec())
    return load()


def prompt_history(db: Database, prompt_id: str) -> list[PromptVersion]:
    """All versions of a prompt, oldest first."""
    _id(prompt_id, "prompt")
    with UnitOfWork(db) as uow:
        versions = Prompts(uow).versions(prompt_id)
    if not versions:
        raise NotFound(f"prompt {prompt_id} not found")
    return versions


def add_evaluation(
    db: Database,
    prompt_id: str,
    version: int,
    score: float,
    *,
    metrics: dict[str, Any] | None = None,
    events: EventSink | None = None,
) -> Evaluation:
    """Record a score for one version of a prompt (with ``events``: one more read, the owner)."""
    _id(prompt_id, "prompt")
    if not isinstance(version, int) or version < 1:
        raise InvalidInput("version must be a positive integer")
    if not isinstance(score, (int, float)) or not math.isfinite(score):
        raise InvalidInput("score must be a finite number")
    ev = Evaluation(
        new_id(), prompt_id, version, float(score), _metadata(metrics, "metrics"), utcnow()
    )
    try:
        with UnitOfWork(db, write=True) as uow:
            Evaluations(uow).add(ev)
            if events is not None:  # the owner, so `/ws?user=` filters see evaluations too
                owner = Prompts(uow).get(prompt_id)
                owner_id = owner.owner_id if owner is not None else None
                publish_after_commit(uow, events, evaluation_event(ev, owner_id))
            uow.commit()
    except NotFound:
        raise NotFound(f"prompt {prompt_id} has no version {version}") from None
    return ev


def list_evaluations(
    db: Database, prompt_id: str, *, limit: int = 50, cursor: str | None = None
) -> Page[Evaluation]:
    """A prompt's evaluations, newest first."""
    _id(prompt_id, "prompt")
    limit, cursor = _limit(limit), _cursor(cursor)
    with UnitOfWork(db) as uow:
        items = Evaluations(uow).list_for_prompt(prompt_id, limit + 1, cursor)
    return _page(items, limit)


def _page(items: list[Any], limit: int) -> Page[Any]:
    if len(items) > limit:
        items = items[:limit]
        return Page(items, items[-1].id)
    return Page(items, None)


def import_prompts(
    db: Database,
    owner_id: str,
    items: list[tuple[str, str]],
    *,
    batch_size: int = 5000,
    status: str = "draft",
    cache: CacheAside | None = None,
) -> int:
    """Bulk-create prompts (title, content) with their version 1; returns how many.

    Each batch is one transaction; a failing batch rolls back alone and the error is raised.
    """
    _id(owner_id, "user")
    checked = _status(status)
    if not 1 <= batch_size <= 100_000:
        raise InvalidInput("batch_size must be between 1 and 100000")
    for title, content in items:
        _text(title, "title", MAX_TITLE)
        _text(content, "content", MAX_CONTENT)
    done = 0
    for start in range(0, len(items), batch_size):
        now = utcnow()
        batch = [(new_id(), t, c) for t, c in items[start : start + batch_size]]
        try:
            with UnitOfWork(db, write=True) as uow:
                insert_prompts_bulk(uow, owner_id, checked, now, batch)
                caching.prompt_writes(cache, db, uow, owner_ids=[owner_id])
                uow.commit()
        except NotFound:
            raise NotFound(f"user {owner_id} not found") from None
        done += len(batch)
    return done
