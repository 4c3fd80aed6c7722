"""Health endpoints: `/health/live` (no dependency) and `/health/ready` (the database answers)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import anyio
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from autoforge_data.db import migrate
from autoforge_data.db.engine import Database
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.errors import AfdbError

CHECK_TIMEOUT = 1.0

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process answers (no dependency is checked)."""
    return {"status": "ok"}


@router.get("/health/ready")
async def ready(request: Request) -> JSONResponse:
    """Ready when the database answers and its schema is this code's."""
    checks = await run_checks(request.app, {"database": db_check})
    ok = all(c["status"] == "ok" for c in checks.values())
    body = {"status": "ok" if ok else "unavailable", "checks": checks}
    return JSONResponse(body, status_code=200 if ok else 503)


def db_check(db: Database) -> dict[str, Any]:
    """One round trip and the migration head."""
    start = time.perf_counter()
    with UnitOfWork(db) as uow:
        uow.fetchone("SELECT 1")
    rtt = (time.perf_counter() - start) * 1000
    rev = migrate.check_not_newer(db)
    head = migrate.code_head()
    if rev != head:
        return {"status": "fail", "reason": "schema_behind", "migration": rev, "head": head}
    return {"status": "ok", "latency_ms": round(rtt, 2), "migration": rev}


async def run_checks(
    app: FastAPI, checks: dict[str, Callable[[Database], dict[str, Any]]]
) -> dict[str, dict[str, Any]]:
    """Run checks concurrently in threads, each bounded by CHECK_TIMEOUT; no exception text out."""

    async def one(fn: Callable[[Database], dict[str, Any]]) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(
                anyio.to_thread.run_sync(
                    fn, app.state.db, limiter=app.state.health_limiter, abandon_on_cancel=True
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
