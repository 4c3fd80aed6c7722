"""Prompts over HTTP: create, get, edit (a new version), status, list, history, evaluations.

Writes of prompt text are indexed for search right after their commit and before the response
(by the search component's indexing thread, batched with other requests' writes; embedding
never holds a database thread): a search made after the response finds them.
"""

from __future__ import annotations

import functools
from typing import Annotated

from fastapi import APIRouter, Query, Request

from autoforge_data.api import events as events_api
from autoforge_data.api.auth import ReadKey, WriteKey
from autoforge_data.api.deps import run_blocking
from autoforge_data.api.schemas import (
    EvaluationIn,
    EvaluationOut,
    EvaluationPage,
    Id,
    PromptEdit,
    PromptIn,
    PromptOut,
    PromptPage,
    PromptSummaryOut,
    Status,
    StatusIn,
    VersionOut,
)
from autoforge_data.api.search import ERRORS, SINGLE, holder_of
from autoforge_data.services import prompts as svc

router = APIRouter(
    prefix="/api/v1/prompts", tags=["prompts"], responses=ERRORS, dependencies=SINGLE
)
Limit = Annotated[int, Query(ge=1, le=svc.MAX_PAGE)]
Cursor = Annotated[str | None, Query(max_length=64)]


@router.post("", response_model=PromptOut, status_code=201)
async def create_prompt(request: Request, body: PromptIn, _key: WriteKey) -> PromptOut:
    """Create a prompt with its version 1 and index it for search."""
    app = request.app
    run = functools.partial(
        svc.create_prompt,
        app.state.db,
        body.owner_id,
        body.title,
        body.content,
        status=body.status,
        metadata=body.metadata,
        cache=app.state.cache,
        events=events_api.sink(app, _key),
    )
    prompt = await run_blocking(app, run)
    await holder_of(app).index_async([prompt.id])
    return PromptOut.of(prompt)


@router.get("/{prompt_id}", response_model=PromptOut)
async def get_prompt(request: Request, prompt_id: str, _key: ReadKey) -> PromptOut:
    """One prompt with its current text."""
    app = request.app
    run = functools.partial(svc.get_prompt, app.state.db, prompt_id, cache=app.state.cache)
    return PromptOut.of(await run_blocking(app, run))


@router.patch("/{prompt_id}", response_model=PromptOut)
async def edit_prompt(
    request: Request, prompt_id: str, body: PromptEdit, _key: WriteKey
) -> PromptOut:
    """Save a new version (409 if ``expected_version`` is no longer current) and index it."""
    app = request.app
    run = functools.partial(
        svc.edit_prompt,
        app.state.db,
        prompt_id,
        content=body.content,
        title=body.title,
        expected_version=body.expected_version,
        cache=app.state.cache,
        events=events_api.sink(app, _key),
    )
    prompt = await run_blocking(app, run)
    await holder_of(app).index_async([prompt.id])
    return PromptOut.of(prompt)


@router.put("/{prompt_id}/status", response_model=PromptOut)
async def set_status(request: Request, prompt_id: str, body: StatusIn, _key: WriteKey) -> PromptOut:
    """Change the status (draft, active, archived)."""
    app = request.app
    run = functools.partial(
        svc.set_status,
        app.state.db,
        prompt_id,
        body.status,
        cache=app.state.cache,
        events=events_api.sink(app, _key),
    )
    return PromptOut.of(await run_blocking(app, run))


@router.get("", response_model=PromptPage)
async def list_prompts(
    request: Request,
    _key: ReadKey,
    owner: Annotated[Id, Query(description="the owner's user id")],
    limit: Limit = 20,
    cursor: Cursor = None,
    status: Status | None = None,
) -> PromptPage:
    """A user's prompts, newest first; pass ``next_cursor`` back as ``cursor`` for more."""
    app = request.app
    run = functools.partial(
        svc.list_prompts,
        app.state.db,
        owner,
        limit=limit,
        cursor=cursor,
        status=status,
        cache=app.state.cache,
    )
    page = await run_blocking(app, run)
    items = [PromptSummaryOut.of(p) for p in page.items]
    return PromptPage(items=items, next_cursor=page.next_cursor)


@router.get("/{prompt_id}/versions", response_model=list[VersionOut])
async def history(request: Request, prompt_id: str, _key: ReadKey) -> list[VersionOut]:
    """Every version of a prompt, oldest first."""
    versions = await run_blocking(request.app, svc.prompt_history, request.app.state.db, prompt_id)
    return [VersionOut.of(v) for v in versions]


@router.post("/{prompt_id}/evaluations", response_model=EvaluationOut, status_code=201)
async def add_evaluation(
    request: Request, prompt_id: str, body: EvaluationIn, _key: WriteKey
) -> EvaluationOut:
    """Record a score for one version of the prompt."""
    run = functools.partial(
        svc.add_evaluation,
        request.app.state.db,
        prompt_id,
        body.version,
        body.score,
        metrics=body.metrics,
        events=events_api.sink(request.app, _key),
    )
    return EvaluationOut.of(await run_blocking(request.app, run))


@router.get("/{prompt_id}/evaluations", response_model=EvaluationPage)
async def list_evaluations(
    request: Request, prompt_id: str, _key: ReadKey, limit: Limit = 50, cursor: Cursor = None
) -> EvaluationPage:
    """The prompt's evaluations, newest first."""
    run = functools.partial(
        svc.list_evaluations, request.app.state.db, prompt_id, limit=limit, cursor=cursor
    )
    page = await run_blocking(request.app, run)
    items = [EvaluationOut.of(e) for e in page.items]
    return EvaluationPage(items=items, next_cursor=page.next_cursor)
