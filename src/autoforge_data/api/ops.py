"""Operations over HTTP (admin keys only): cache stats and flush, search index stats and rebuild,
backups (list, create). Bodies name backups, never their storage path or URL."""

from __future__ import annotations

import functools
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from autoforge_data.api.auth import AdminKey
from autoforge_data.api.deps import run_blocking
from autoforge_data.api.schemas import BackupIn, BackupOut, Detail, FlushOut
from autoforge_data.api.search import ERRORS, SINGLE, holder_of
from autoforge_data.cache import cache_stats, flush
from autoforge_data.errors import ConfigError, Conflict, InvalidInput

router = APIRouter(prefix="/api/v1/ops", tags=["ops"], responses=ERRORS, dependencies=SINGLE)


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


def _backup_json(entry: Any) -> dict[str, Any]:
    body = dict(entry.to_json())
    body.pop("path", None)  # a path or bucket URL is deployment detail, not API data
    return dict(_jsonable(body))


@router.get("/backups", response_model=list[Detail])
async def backups_list(request: Request, _key: AdminKey) -> list[dict[str, Any]]:
    """Backups at AFDB_BACKUP_URL, newest last, with their verification state."""
    from autoforge_data.ops.backup import list_backups

    entries = await run_blocking(request.app, list_backups, request.app.state.settings)
    return [_backup_json(e) for e in entries]


@router.post("/backups", response_model=BackupOut, status_code=201)
async def backups_create(request: Request, body: BackupIn, _key: AdminKey) -> BackupOut:
    """Take an online backup now (signed manifest; encrypted when a key is configured)."""
    from autoforge_data.ops.backup import BackupOptions, create_backup

    options = BackupOptions(name=body.name)
    options.check(request.app.state.settings)  # before any I/O
    try:
        info = await run_blocking(request.app, create_backup, request.app.state.db, options)
    except ConfigError as exc:  # e.g. a remote database: not possible from this deployment
        raise Conflict(exc.message, hint=exc.hint) from None
    return BackupOut.of(info.manifest, info.seconds)
