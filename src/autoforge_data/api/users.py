"""Users over HTTP: create, get, list (keyset-paged)."""

from __future__ import annotations

import functools
from typing import Annotated

from fastapi import APIRouter, Query, Request

from autoforge_data.api.auth import ReadKey, WriteKey
from autoforge_data.api.deps import run_blocking
from autoforge_data.api.schemas import UserIn, UserOut, UserPage
from autoforge_data.api.search import ERRORS, SINGLE
from autoforge_data.services import prompts as svc

router = APIRouter(prefix="/api/v1/users", tags=["users"], responses=ERRORS, dependencies=SINGLE)


@router.post("", response_model=UserOut, status_code=201)
async def create_user(request: Request, body: UserIn, _key: WriteKey) -> UserOut:
    """Create a user; a taken email or clerk id is 409."""
    run = functools.partial(
        svc.create_user,
        request.app.state.db,
        body.email,
        body.username,
        clerk_id=body.clerk_id,
        metadata=body.metadata,
    )
    return UserOut.of(await run_blocking(request.app, run))


@router.get("/{user_id}", response_model=UserOut)
async def get_user(request: Request, user_id: str, _key: ReadKey) -> UserOut:
    """One user by id."""
    return UserOut.of(await run_blocking(request.app, svc.get_user, request.app.state.db, user_id))


@router.get("", response_model=UserPage)
async def list_users(
    request: Request,
    _key: ReadKey,
    limit: Annotated[int, Query(ge=1, le=svc.MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> UserPage:
    """Users in creation order; pass ``next_cursor`` back as ``cursor`` for the next page."""
    run = functools.partial(svc.list_users, request.app.state.db, limit=limit, cursor=cursor)
    page = await run_blocking(request.app, run)
    return UserPage(items=[UserOut.of(u) for u in page.items], next_cursor=page.next_cursor)
