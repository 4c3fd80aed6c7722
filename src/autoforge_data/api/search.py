"""Search over HTTP (`GET /api/v1/search`) and the app's search component.

:class:`SearchHolder` opens the :class:`~autoforge_data.services.search.SearchContext` in a
background thread when the app starts (index load and the embedding model's first run take
seconds; health endpoints answer meanwhile and search says 503 "loading"), then embeds what was
written while no embedder was loaded (the same stale-vector query as ``afdb embeddings reindex``).
Routes that write prompts call :meth:`SearchHolder.index` so search finds them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request

from autoforge_data.api.auth import ReadKey
from autoforge_data.api.deps import run_blocking
from autoforge_data.api.limits import EXTRA_QUERY_PREFIXES, strict_query
from autoforge_data.api.schemas import ErrorBody, Hit, SearchOut, Status
from autoforge_data.errors import AfdbError, Unavailable
from autoforge_data.services import search as svc
from autoforge_data.services.search import SearchContext
from autoforge_data.vector.base import MAX_K, Filter, MetaValue

log = logging.getLogger(__name__)
RETRY_AFTER = 5.0  # seconds before a failed open is tried again (on the next request)
META_PREFIX = "meta."
ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 413, 422, 503)
}
SINGLE = [Depends(strict_query)]
router = APIRouter(prefix="/api/v1", tags=["search"], responses=ERRORS, dependencies=SINGLE)


class _Stop(Exception):
    """Raised from the catch-up's progress callback when the app shuts down."""


class SearchHolder:
    """The app's search context, opened off the request path; other models' exact contexts."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.ctx: SearchContext | None = None
        self.error: AfdbError | None = None
        self._others: dict[str, SearchContext] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._failed_at = 0.0
        self._stopping = threading.Event()
        # embedding after a write runs in one thread of its own, not on the database limiter,
        # and embeds what concurrent writes queued meanwhile in one batch (see _IndexBatcher)
        self.batcher = _IndexBatcher(self.index)

    def start(self) -> None:
        """Open the context in a background thread (if not open or opening already)."""
        with self._lock:
            if self.ctx is not None or (self._thread is not None and self._thread.is_alive()):
                return
            self._thread = threading.Thread(target=self._open, name="afdb-search-open", daemon=True)
            self._thread.start()

    def _open(self) -> None:
        app = self.app
        try:
            ctx = SearchContext.open(
                app.state.db, kind=app.state.settings.index_backend, cache=app.state.cache
            )
            if ctx.query_embedder is not None:
                ctx.query_embedder.embed(["warm up the embedding model"])
        except AfdbError as exc:
            self.error, self._failed_at = exc, time.monotonic()
            log.warning("search is not available: %s", exc.one_line())
            return
        except Exception as exc:  # a model or index file problem must not kill the service
            self.error = Unavailable("search failed to start", hint="see the server log")
            self._failed_at = time.monotonic()
            log.error("search failed to start: %s", type(exc).__name__)
            return
        with self._lock:
            if self._stopping.is_set():
                ctx.close()
                return
            self.ctx, self.error = ctx, None
        self._catch_up(ctx)

    def _catch_up(self, ctx: SearchContext) -> None:
        """Embed prompts written while no embedder was loaded (stops at shutdown)."""
        if ctx.embedder is None:
            return

        def progress(done: int, total: int) -> None:
            if self._stopping.is_set():
                raise _Stop

        try:
            report = svc.reindex(
                ctx.db,
                ctx.model.name,
                embedder=ctx.embedder,
                index=ctx.index,
                cache=ctx.cache,
                progress=progress,
            )
            if report.embedded:
                log.info("search caught up: embedded %d prompt(s)", report.embedded)
        except _Stop:
            pass
        except AfdbError as exc:
            log.warning("search catch-up stopped: %s", exc.one_line())

    def get(self) -> SearchContext:
        """The open context, or 503 while it loads (a failed open is retried after a pause)."""
        if self.ctx is not None:
            return self.ctx
        if self.error is not None and time.monotonic() - self._failed_at >= RETRY_AFTER:
            self.start()
        if self.error is not None:
            message = f"search is not available: {self.error.message}"
            raise Unavailable(message, hint=self.error.hint)
        self.start()
        raise Unavailable("the search index is loading", hint="retry in a few seconds")

    def for_model(self, name: str | None) -> SearchContext:
        """The context of model ``name``: the app's own for the active model, else an exact one."""
        ctx = self.get()
        if name is None or name == ctx.model.name:
            return ctx
        with self._lock:
            other = self._others.get(name)
            if other is None:
                other = SearchContext.open(ctx.db, model=name, kind="exact", embedder=None)
                self._others[name] = other
        return other

    def open_contexts(self) -> list[SearchContext]:
        """The contexts open now (none while loading)."""
        with self._lock:
            return [c for c in (self.ctx, *self._others.values()) if c is not None]

    def index(self, prompt_ids: Sequence[str]) -> None:
        """Embed written prompts now if an embedder is loaded (else the catch-up does it later)."""
        ctx = self.ctx
        if ctx is None or ctx.embedder is None:
            return
        try:
            svc.index_prompts(ctx, prompt_ids)
        except AfdbError as exc:  # the write committed; the reindex path picks the prompt up
            log.warning("indexing after a write failed: %s", exc.one_line())

    async def index_async(self, prompt_ids: Sequence[str]) -> None:
        """Index after a write, batched with other requests' writes; returns once embedded."""
        if self.ctx is None or self.ctx.embedder is None:
            return  # nothing loaded yet: the catch-up embeds it
        await self.batcher.submit(prompt_ids)

    def close(self) -> None:
        """Stop the batcher and the catch-up, close every context."""
        self._stopping.set()
        self.batcher.close()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=30)
        with self._lock:
            contexts = [c for c in (self.ctx, *self._others.values()) if c is not None]
            self.ctx, self._others = None, {}
        for ctx in contexts:
            try:
                ctx.close()
            except AfdbError as exc:
                log.warning("closing the search index failed: %s", exc.one_line())


class _IndexBatcher:
    """One thread that embeds prompts written by concurrent requests: what queues while a batch
    embeds goes into the next batch (MiniLM embeds 32 texts far faster than 32 single calls)."""

    MAX_BATCH = 64

    def __init__(self, index: Callable[[Sequence[str]], None]) -> None:
        self._index = index
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    async def submit(self, prompt_ids: Sequence[str]) -> None:
        """Queue ids and wait (without holding a thread) until their batch is done."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._ensure_thread()
        self._queue.put((list(prompt_ids), loop, done))
        await done

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="afdb-index", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while (first := self._queue.get()) is not None:
            jobs = [first]
            with contextlib.suppress(queue.Empty):
                while len(jobs) < self.MAX_BATCH:
                    job = self._queue.get_nowait()
                    if job is None:
                        self._queue.put(None)  # stop after this batch
                        break
                    jobs.append(job)
            try:
                self._index([pid for ids, _, _ in jobs for pid in ids])
            except Exception as exc:  # a write's answer must not fail because indexing did
                log.error("indexing a batch failed: %s", type(exc).__name__)
            for _, loop, done in jobs:
                loop.call_soon_threadsafe(_resolve, done)

    def close(self) -> None:
        """Finish queued batches, then stop the thread."""
        self._queue.put(None)
        thread = self._thread
        if thread is not None:
            thread.join(timeout=30)


_Job = tuple[list[str], asyncio.AbstractEventLoop, "asyncio.Future[None]"]


def _resolve(done: asyncio.Future[None]) -> None:
    if not done.done():  # the request may have been cancelled meanwhile
        done.set_result(None)


@asynccontextmanager
async def component(app: FastAPI) -> AsyncIterator[SearchHolder]:
    """Start search with the app (in the background) and close it on shutdown."""
    holder = app.state.search = SearchHolder(app)
    holder.start()
    try:
        yield holder
    finally:
        await run_blocking(app, holder.close)


def holder_of(app: FastAPI) -> SearchHolder:
    """The app's search holder."""
    holder: SearchHolder = app.state.search
    return holder


def meta_filter(request: Request) -> dict[str, MetaValue]:
    """``meta.KEY=VALUE`` query parameters as a metadata filter (values are strings)."""
    out: dict[str, MetaValue] = {}
    for name, value in request.query_params.multi_items():
        if name.startswith(META_PREFIX):
            out[name[len(META_PREFIX) :]] = value
    return out


EXTRA_QUERY_PREFIXES["/api/v1/search"] = (META_PREFIX,)


@router.get("/search", response_model=SearchOut)
async def search(
    request: Request,
    *,
    _key: ReadKey,
    q: Annotated[str, Query(min_length=1, max_length=svc.MAX_QUERY_CHARS)],
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    mode: Literal["vector", "keyword", "hybrid"] = "hybrid",
    status: Annotated[list[Status] | None, Query()] = None,
    owner: Annotated[str | None, Query(max_length=64)] = None,
    created_after: Annotated[str | None, Query(max_length=40)] = None,
    created_before: Annotated[str | None, Query(max_length=40)] = None,
) -> SearchOut:
    """Prompts by meaning and words; filters (status, owner, dates, meta.KEY=VALUE) are ANDed."""
    flt = Filter(
        status=tuple(status) if status else None,
        owner_id=owner,
        created_from=created_after,
        created_to=created_before,
        metadata=meta_filter(request),
    )
    ctx = holder_of(request.app).get()
    run = functools.partial(svc.search, ctx, q, k=k, flt=flt, mode=mode)
    matches = await run_blocking(request.app, run)
    return SearchOut(mode=mode, model=ctx.model.name, items=[Hit.of(m) for m in matches])
