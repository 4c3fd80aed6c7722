"""Raw vectors over HTTP (the seed's vectors endpoint): upsert, delete and query vectors of a
registered embedding model, for models whose vectors are computed outside this service.

A stored vector carries the prompt's current version and the content hash of its current text,
so the indexing pipeline treats it as up to date until the prompt is edited. Wrong dimensions,
NaN or infinity, unknown models and unknown prompts are 4xx before anything is written.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from fastapi import APIRouter, Request

from autoforge_data.api.auth import ReadKey, WriteKey
from autoforge_data.api.deps import run_blocking
from autoforge_data.api.schemas import (
    Hit,
    SearchOut,
    VectorItem,
    VectorQuery,
    VectorUpsert,
    VectorWrite,
)
from autoforge_data.api.search import ERRORS, SINGLE, holder_of
from autoforge_data.cache import CacheAside
from autoforge_data.db.engine import Database
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.errors import InvalidInput, NotFound
from autoforge_data.ids import is_id
from autoforge_data.services import caching
from autoforge_data.services import search as svc
from autoforge_data.vector.base import Filter, VectorIndex
from autoforge_data.vector.embedders import content_hash
from autoforge_data.vector.store import ModelRow, VectorStore, get_model

router = APIRouter(
    prefix="/api/v1/vectors", tags=["vectors"], responses=ERRORS, dependencies=SINGLE
)


def _vector(values: Sequence[float], model: ModelRow) -> np.ndarray:
    with np.errstate(over="ignore"):  # too large for float32 becomes inf, refused below
        vec = np.asarray(values, dtype=np.float32)
    if vec.shape != (model.dimension,):
        raise InvalidInput(
            f"vector has {vec.shape[0]} dimensions, model {model.name!r} has {model.dimension}",
            hint="send vectors of the model's dimension",
        )
    if not np.isfinite(vec).all():  # also catches values beyond float32's range
        raise InvalidInput("vector contains NaN or infinity (or values beyond float32)")
    return vec


def _checked_ids(ids: Sequence[str]) -> list[str]:
    for pid in ids:
        if not is_id(pid):
            raise NotFound(f"prompt {pid!r} not found", hint="ids are 26-character strings")
    if len(set(ids)) != len(ids):
        raise InvalidInput("a prompt appears twice in one request")
    return list(ids)


def _after_commit(
    db: Database, uow: UnitOfWork, indexes: list[VectorIndex], cache: CacheAside | None
) -> None:
    for index in indexes:
        uow.after_commit(lambda i=index: i.refresh())  # type: ignore[misc]
    if cache is not None and caching.cache_policy(db, cache).invalidates:
        caching.invalidate_after_commit(
            cache, uow, [(caching.SEARCH_GEN, caching.SEARCH_GEN_PARTS)]
        )


def upsert_vectors(
    db: Database,
    model_name: str,
    items: list[VectorItem],
    *,
    indexes: list[VectorIndex],
    cache: CacheAside | None = None,
) -> int:
    """Store each item's vector for its prompt's current version (one transaction)."""
    model = get_model(db, model_name)
    ids = _checked_ids([item.prompt_id for item in items])
    vectors = [_vector(item.vector, model) for item in items]
    marks = ",".join("?" * len(ids))
    with UnitOfWork(db, write=True) as uow:
        rows = uow.fetchall(
            "SELECT id, current_version, title || char(10) || content FROM prompts "
            f"WHERE id IN ({marks})",
            tuple(ids),
        )
        current = {str(r[0]): (int(r[1]), str(r[2])) for r in rows}
        missing = [pid for pid in ids if pid not in current]
        if missing:
            raise NotFound(f"prompt {missing[0]} not found")
        out = []
        for pid, vec in zip(ids, vectors, strict=True):
            version, text = current[pid]
            out.append((pid, version, content_hash(text, model.name), vec))
        VectorStore(model).upsert_many(uow, out)
        _after_commit(db, uow, indexes, cache)
        uow.commit()
    return len(out)


def delete_vector(
    db: Database,
    model_name: str,
    prompt_id: str,
    *,
    indexes: list[VectorIndex],
    cache: CacheAside | None = None,
) -> int:
    """Remove a prompt's vector of a model (404 when it has none)."""
    model = get_model(db, model_name)
    _checked_ids([prompt_id])
    store = VectorStore(model)
    with UnitOfWork(db, write=True) as uow:
        if uow.fetchone(f"SELECT 1 FROM {store.table} WHERE prompt_id = ?", (prompt_id,)) is None:
            raise NotFound(f"prompt {prompt_id} has no vector of model {model.name!r}")
        store.delete(uow, prompt_id)
        _after_commit(db, uow, indexes, cache)
        uow.commit()
    return 1


def _indexes(request: Request, model: str) -> list[VectorIndex]:
    holder = holder_of(request.app)
    return [c.index for c in holder.open_contexts() if c.model.name == model]


@router.put("", response_model=VectorWrite)
async def upsert(request: Request, body: VectorUpsert, _key: WriteKey) -> VectorWrite:
    """Store vectors of a registered model for existing prompts (replacing older ones)."""
    app = request.app
    run = functools.partial(
        upsert_vectors,
        app.state.db,
        body.model,
        body.items,
        indexes=_indexes(request, body.model),
        cache=app.state.cache,
    )
    return VectorWrite(model=body.model, count=await run_blocking(app, run))


@router.delete("/{model}/{prompt_id}", response_model=VectorWrite)
async def delete(request: Request, model: str, prompt_id: str, _key: WriteKey) -> VectorWrite:
    """Remove one prompt's vector of a model."""
    app = request.app
    run = functools.partial(
        delete_vector,
        app.state.db,
        model,
        prompt_id,
        indexes=_indexes(request, model),
        cache=app.state.cache,
    )
    return VectorWrite(model=model, count=await run_blocking(app, run))


@router.post("/query", response_model=SearchOut)
async def query(request: Request, body: VectorQuery, _key: ReadKey) -> SearchOut:
    """The k nearest prompts to a raw vector (the active model unless ``model`` is given)."""
    flt = Filter(
        status=tuple(body.status) if body.status else None,
        owner_id=body.owner_id,
        created_from=body.created_after,
        created_to=body.created_before,
    )
    holder = holder_of(request.app)
    ctx = await run_blocking(request.app, holder.for_model, body.model)
    vec = _vector(body.vector, ctx.model)
    run = functools.partial(svc.search, ctx, vector=vec, k=body.k, flt=flt, mode="vector")
    matches = await run_blocking(request.app, run)
    return SearchOut(mode="vector", model=ctx.model.name, items=[Hit.of(m) for m in matches])
