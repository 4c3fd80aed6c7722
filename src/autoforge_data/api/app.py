"""The HTTP app factory: `create_app(settings)`, a lifespan that opens and closes what it uses.

Routes live in one module per resource (``api/<resource>.py``, each with a ``router``); this module
only wires them: the database, the cache and the limiter that bounds blocking work are built in the
lifespan (a test can pass its own ``db`` or ``cache``) and reached through ``api/deps.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from autoforge_data import __version__
from autoforge_data.api import health
from autoforge_data.db.engine import Database
from autoforge_data.errors import AfdbError
from autoforge_data.settings import Settings


def create_app(settings: Settings, *, db: Database | None = None, cache: Any = None) -> FastAPI:
    """Build the app; the database and cache open in the lifespan (or the given ones are used)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if db is None:
                app.state.db = Database(settings)
                stack.callback(app.state.db.close)
            else:
                app.state.db = db
            if cache is None:
                from autoforge_data.cache import make_cache

                app.state.cache = make_cache(settings)
                stack.callback(app.state.cache.close)
            else:
                app.state.cache = cache
            app.state.limiter = anyio.CapacityLimiter(settings.pool_size)
            # health checks get their own threads, so a saturated pool cannot make them time out
            app.state.health_limiter = anyio.CapacityLimiter(8)
            # --- components started with the app (one line each) ---
            app.state.events = await stack.enter_async_context(events_api.component(app))
            from autoforge_data.api import scheduler as backup_scheduler
            app.state.backups = await stack.enter_async_context(backup_scheduler.component(app))
            from autoforge_data.api.search import component as search_component
            await stack.enter_async_context(search_component(app))
            from autoforge_data.api import metrics as metrics_api
            await stack.enter_async_context(metrics_api.component(app))
            yield

    app = FastAPI(title="AutoForgeNexus data platform", version=__version__, lifespan=lifespan)
    app.state.settings = settings

    @app.exception_handler(AfdbError)
    async def _afdb_error(request: Request, exc: AfdbError) -> JSONResponse:
        body = {"error": {"code": exc.code, "message": exc.message, "hint": exc.hint}}
        return JSONResponse(body, status_code=exc.http_status)

    # --- routers, one module per resource (one line each) ---
    app.include_router(health.router)
    from autoforge_data.api import events as events_api  # also used by the lifespan above
    app.include_router(events_api.router)
    from autoforge_data.api import limits, ops, prompts, search, users, vectors
    limits.install(app)
    app.include_router(users.router)
    app.include_router(prompts.router)
    app.include_router(search.router)
    app.include_router(vectors.router)
    app.include_router(ops.router)
    from autoforge_data.api import dashboard, metrics
    metrics.install(app)  # the request-latency middleware, outermost, and /metrics
    app.include_router(dashboard.router)  # / (dashboard or JSON index), /api, /api/v1/stats
    return app
