"""The HTTP app factory: `create_app(settings)`, a lifespan that opens and closes the database.

This is the skeleton of the service (health endpoints and error handling); the prompt, search and
metrics routes arrive with the service issue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from autoforge_data import __version__
from autoforge_data.db import migrate
from autoforge_data.db.engine import Database
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.errors import AfdbError
from autoforge_data.settings import Settings

CHECK_TIMEOUT = 1.0


def create_app(settings: Settings, *, db: Database | None = None) -> FastAPI:
    """Build the app; the database opens in the lifespan (or ``db`` is used, for tests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = db is None
        app.state.db = db if db is not None else Database(settings)
        app.state.limiter = anyio.CapacityLimiter(settings.pool_size)
        try:
            yield
        finally:
            if own:
                app.state.db.close()

    app = FastAPI(title="AutoForgeNexus data platform", version=__version__, lifespan=lifespan)
    app.state.settings = settings

    @app.exception_handler(AfdbError)
    async def _afdb_error(request: Request, exc: AfdbError) -> JSONResponse:
        body = {"error": {"code": exc.code, "message": exc.message, "hint": exc.hint}}
        return JSONResponse(body, status_code=exc.http_status)

    @app.get("/", tags=["meta"])
    async def index() -> dict[str, object]:
        """What this service is and where to look (the dashboard page replaces this later)."""
        return {
            "service": "autoforge-data",
            "version": __version__,
            "profile": settings.env,
            "links": {"ready": "/health/ready", "live": "/health/live", "docs": "/docs"},
        }

    @app.get("/health/live", tags=["health"])
    async def live() -> dict[str, str]:
        """The process answers (no dependency is checked)."""
        return {"status": "ok"}

    @app.get("/health/ready", tags=["health"])
    async def ready(request: Request) -> JSONResponse:
        """Ready when the database answers and its schema is this code's."""
        checks = await _run_checks(request.app, {"database": _db_check})
        ok = all(c["status"] == "ok" for c in checks.values())
        body = {"status": "ok" if ok else "unavailable", "checks": checks}
        return JSONResponse(body, status_code=200 if ok else 503)

    return app


def _db_check(db: Database) -> dict[str, Any]:
    start = time.perf_counter()
    with UnitOfWork(db) as uow:
        uow.fetchone("SELECT 1")
    rtt = (time.perf_counter() - start) * 1000
    rev = migrate.check_not_newer(db)
    head = migrate.code_head()
    if rev != head:
        return {"status": "fail", "reason": "schema_behind", "migration": rev, "head": head}
    return {"status": "ok", "latency_ms": round(rtt, 2), "migration": rev}


async def _run_checks(
    app: FastAPI, checks: dict[str, Callable[[Database], dict[str, Any]]]
) -> dict[str, dict[str, Any]]:
    """Run checks concurrently in threads, each bounded by CHECK_TIMEOUT; no exception text out."""

    async def one(fn: Callable[[Database], dict[str, Any]]) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(
                anyio.to_thread.run_sync(
                    fn, app.state.db, limiter=app.state.limiter, abandon_on_cancel=True
                ),
                CHECK_TIMEOUT,
            )
        except TimeoutError:
            return {"status": "fail", "reason": "timeout"}
        except AfdbError as exc:
            return {"status": "fail", "reason": exc.code}
        except Exception:
            return {"status": "fail", "reason": "error"}

    names = list(checks)
    results = await asyncio.gather(*(one(checks[n]) for n in names))
    return dict(zip(names, results, strict=True))
