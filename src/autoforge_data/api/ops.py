"""Operations over HTTP (admin keys only): cache stats and flush, search index stats and rebuild."""

from __future__ import annotations

import functools
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from autoforge_data.api.auth import AdminKey
from autoforge_data.api.deps import run_blocking
from autoforge_data.api.schemas import Detail, FlushOut
from autoforge_data.api.search import ERRORS, holder_of
from autoforge_data.cache import cache_stats, flush
from autoforge_data.errors import InvalidInput

router = APIRouter(prefix="/api/v1/ops", tags=["ops"], responses=ERRORS)


def _jsonable(value: Any) -> Any:
    """Stats as plain JSON values (numpy scalars and paths become numbers and text)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    item = getattr(value, "item", None)
    return item() if callable(item) else str(value)


@router.get("/cache", response_model=Detail)
async def cache_info(request: Request, _key: AdminKey) -> dict[str, Any]:
    """The cache backend, Redis reachability, breaker, hit ratio and our keys per kind."""
    run = functools.partial(cache_stats, request.app.state.cache, count_keys=True)
    return dict(_jsonable(await run_blocking(request.app, run)))


@router.post("/cache/flush", response_model=FlushOut)
async def cache_flush(
    request: Request,
    _key: AdminKey,
    kind: Annotated[str | None, Query(min_length=1, max_length=32)] = None,
) -> FlushOut:
    """Delete our cache keys (one kind, or all); never FLUSHDB."""
    n = await run_blocking(request.app, flush, request.app.state.cache, kind)
    return FlushOut(flushed=n)


@router.get("/index", response_model=Detail)
async def index_info(request: Request, _key: AdminKey) -> dict[str, Any]:
    """Size, vectors, journal position and build facts of the active model's index."""
    ctx = holder_of(request.app).get()
    stats = await run_blocking(request.app, ctx.index.stats)
    return {"model": ctx.model.name, **_jsonable(stats)}


@router.post("/index/rebuild", response_model=Detail)
async def index_rebuild(request: Request, _key: AdminKey) -> dict[str, Any]:
    """Rebuild the active model's index from the stored vectors (searches wait meanwhile)."""
    ctx = holder_of(request.app).get()
    rebuild = getattr(ctx.index, "rebuild", None)
    if not callable(rebuild):
        raise InvalidInput(f"the {ctx.index.name} index has nothing to rebuild")
    await run_blocking(request.app, rebuild)
    stats = await run_blocking(request.app, ctx.index.stats)
    return {"model": ctx.model.name, **_jsonable(stats)}
