"""Health endpoints: liveness, readiness with per-component status, and the database's view.

* ``/health/live`` checks nothing: the event loop answers (a hung database cannot slow it).
* ``/health/ready`` runs every component check concurrently in worker threads, each bounded by
  :data:`CHECK_TIMEOUT`: database (round trip + migration head), FTS (a cheap MATCH), vector
  index (loaded, vectors, journal lag), cache (PING; down means ``degraded``), replica lag
  (replica mode), last backup (when the backup module offers ``backup_status``). A failing
  *critical* component (database, FTS) makes it 503 ``unavailable``; any other problem is 200
  ``degraded``. ``/health/database`` reports the database-side components the same way.

Bodies carry status words, numbers and error *codes* only: never a DSN, token, path or exception
text. Concurrent probes share one run (:func:`shared_run`), so a burst of probes costs one set of
round trips; a probe that arrives after a run finished starts a new one (never a stale answer).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import importlib.util
import math
import time
from collections.abc import Callable
from typing import Any

import anyio
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from autoforge_data.db import migrate
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.errors import AfdbError
from autoforge_data.settings import Mode

CHECK_TIMEOUT = 0.8  # seconds per check: readiness answers within 1 s even with a hung server
REPLICA_LAG_DEGRADED = 30.0  # seconds since the last replica sync before it counts as degraded
CRITICAL = frozenset({"database", "fts"})
Check = Callable[[FastAPI], dict[str, Any] | None]  # None: the component does not apply here

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process answers (no dependency is checked)."""
    return {"status": "ok"}


@router.get("/health/ready")
async def ready(request: Request) -> JSONResponse:
    """Every component's status; 503 when the database or FTS fails, 200 ``degraded`` otherwise."""
    status, checks = await shared_run(request.app, "ready", READY_CHECKS)
    return _answer(status, checks)


@router.get("/health/database")
async def database(request: Request) -> JSONResponse:
    """The database-side components (round trip, migration, FTS, vector index, replica)."""
    status, checks = await shared_run(request.app, "database", DATABASE_CHECKS)
    return _answer(status, checks)


def _answer(status: str, checks: dict[str, dict[str, Any]]) -> JSONResponse:
    code = 503 if status == "unavailable" else 200
    return JSONResponse({"status": status, "checks": checks}, status_code=code)


def overall(checks: dict[str, dict[str, Any]]) -> str:
    """ok, degraded (a non-critical component is not ok) or unavailable (a critical one fails)."""
    if any(checks[name]["status"] == "fail" for name in CRITICAL if name in checks):
        return "unavailable"
    return "ok" if all(c["status"] == "ok" for c in checks.values()) else "degraded"


# --- the checks (each runs in a worker thread) ----------------------------------------------------


@functools.cache
def _code_head() -> str:
    return migrate.code_head()


@functools.cache
def _known_revisions() -> frozenset[str]:
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(migrate.alembic_config())
    return frozenset(script.revision for script in scripts.walk_revisions())


def db_check(app: FastAPI) -> dict[str, Any]:
    """One round trip on the read path and the migration revision (a replica answers from its
    local file, so a primary outage degrades it instead of taking it out of service)."""
    start = time.perf_counter()
    with UnitOfWork(app.state.db) as uow:
        has_table = uow.fetchone(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
        )
        row = uow.fetchone("SELECT version_num FROM alembic_version") if has_table else None
    rtt = (time.perf_counter() - start) * 1000
    rev = None if row is None else str(row[0])
    head = _code_head()
    if rev != head:
        newer = rev is not None and rev not in _known_revisions()
        reason = "schema_newer" if newer else "schema_behind"
        return {"status": "fail", "reason": reason, "migration": rev, "head": head}
    mode = app.state.db.mode.value
    return {"status": "ok", "latency_ms": round(rtt, 2), "migration": rev, "mode": mode}


def fts_check(app: FastAPI) -> dict[str, Any]:
    """A cheap full-text query (the FTS5 index answers)."""
    start = time.perf_counter()
    with UnitOfWork(app.state.db) as uow:
        uow.fetchone("SELECT rowid FROM prompts_fts WHERE prompts_fts MATCH ? LIMIT 1", ("health",))
    return {"status": "ok", "latency_ms": round((time.perf_counter() - start) * 1000, 2)}


def vector_check(app: FastAPI) -> dict[str, Any] | None:
    """The search index: loaded or loading, its size and how far it is behind the journal."""
    holder = getattr(app.state, "search", None)
    if holder is None:
        return None  # this app serves no search
    ctx = getattr(holder, "ctx", None)
    if ctx is None:
        error = getattr(holder, "error", None)
        reason = "loading" if error is None else getattr(error, "code", "error")
        return {"status": "degraded", "reason": reason}
    index = ctx.index
    out: dict[str, Any] = {"status": "ok", "backend": index.name, "model": ctx.model.name}
    if index.name in ("memory", "exact"):  # in-memory numbers; libsql's stats scan tables
        from autoforge_data.vector.store import journal_head

        stats = index.stats()
        out["vectors"] = stats["vectors"]
        out["journal_lag"] = max(0, journal_head(ctx.db) - int(stats["journal_seq"]))
        out["refresh_age_s"] = stats["refresh_age_s"]
    return out


def cache_check(app: FastAPI) -> dict[str, Any] | None:
    """The cache: Redis answers a PING (down means degraded: reads fall back to the database)."""
    cache = getattr(app.state, "cache", None)
    if cache is None:
        return None
    backend = cache.backend
    l2 = getattr(backend, "l2", None) or (backend if hasattr(backend, "ping") else None)
    if l2 is None:
        return {"status": "ok", "backend": "memory"}
    rtt = l2.ping()
    out: dict[str, Any] = {"backend": "redis", "breaker": str(l2.breaker.state)}
    if rtt is None:
        return {**out, "status": "degraded", "reason": "unreachable"}
    listener = getattr(backend, "listener", None)
    if listener is not None and not listener.healthy:
        return {**out, "status": "degraded", "reason": "invalidation_listener_down"}
    return {**out, "status": "ok", "latency_ms": round(rtt * 1000, 2)}


def replica_check(app: FastAPI) -> dict[str, Any] | None:
    """Replica mode: seconds since the last sync with the primary, and whether syncs fail."""
    db = app.state.db
    if db.mode is not Mode.REPLICA or db.replica is None:
        return None
    replica = db.replica
    lag = replica.lag_seconds()
    out: dict[str, Any] = {"lag_s": None if lag is None else round(lag, 3)}
    out["failures"] = int(replica.failures)
    if lag is None:
        return {**out, "status": "degraded", "reason": "never_synced"}
    if replica.last_error is not None:
        return {**out, "status": "degraded", "reason": "sync_failing"}
    if lag > REPLICA_LAG_DEGRADED:
        return {**out, "status": "degraded", "reason": "lagging"}
    return {**out, "status": "ok"}


def backup_check(app: FastAPI) -> dict[str, Any] | None:
    """Age and result of the last backup (only when ops/backup.py offers ``backup_status``)."""
    status_fn = _backup_status_fn()
    if status_fn is None:
        return None
    info = status_fn(app.state.settings)
    if not isinstance(info, dict):
        return None
    settings = app.state.settings
    return backup_component(info, settings.backup_every, expected=settings.env != "dev")


def backup_component(
    info: dict[str, Any], every: float | None, *, expected: bool
) -> dict[str, Any]:
    """Our view of ``backup_status``: age, last result and schedule (never its error text).

    Degraded when the last backup failed, when it is older than 1.5 schedules, or when none
    exists although one is expected (a schedule is set, or the profile is staging/prod).
    """
    age = _number(info.get("age_seconds"))
    result = info.get("last_result")
    out: dict[str, Any] = {"age_s": None if age is None else round(age, 1), "schedule_s": every}
    if result in ("ok", "error"):
        out["last_ok"] = result == "ok"
    if result == "error":
        return {**out, "status": "degraded", "reason": "last_backup_failed"}
    if age is None:
        if expected or every is not None:
            return {**out, "status": "degraded", "reason": "no_backup"}
        return {**out, "status": "ok", "reason": "no_backup"}
    if every is not None and age > 1.5 * every:
        return {**out, "status": "degraded", "reason": "overdue"}
    return {**out, "status": "ok"}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


@functools.cache
def _backup_status_fn() -> Callable[[Any], Any] | None:
    if importlib.util.find_spec("autoforge_data.ops.backup") is None:
        return None
    backup = importlib.import_module("autoforge_data.ops.backup")
    fn = getattr(backup, "backup_status", None)
    return fn if callable(fn) else None


READY_CHECKS: dict[str, Check] = {
    "database": db_check,
    "fts": fts_check,
    "vector": vector_check,
    "cache": cache_check,
    "replica": replica_check,
    "backup": backup_check,
}
DATABASE_CHECKS: dict[str, Check] = {
    name: READY_CHECKS[name] for name in ("database", "fts", "vector", "replica")
}


# --- running them ---------------------------------------------------------------------------------


async def run_checks(
    app: FastAPI, checks: dict[str, Check], timeout: float = CHECK_TIMEOUT
) -> dict[str, dict[str, Any]]:
    """Run checks concurrently in threads, each bounded by ``timeout``; no exception text out.

    A check that returns None does not apply to this deployment and is left out.
    """

    async def one(fn: Check) -> dict[str, Any] | None:
        try:
            return await asyncio.wait_for(
                anyio.to_thread.run_sync(
                    fn, app, limiter=app.state.health_limiter, abandon_on_cancel=True
                ),
                timeout,
            )
        except TimeoutError:
            return {"status": "fail", "reason": "timeout"}
        except AfdbError as exc:
            return {"status": "fail", "reason": exc.code}
        except Exception:
            return {"status": "fail", "reason": "error"}

    names = list(checks)
    results = await asyncio.gather(*(one(checks[n]) for n in names))
    out = {n: r for n, r in zip(names, results, strict=True) if r is not None}
    for name, result in out.items():
        if name not in CRITICAL and result["status"] == "fail":
            result["status"] = "degraded"  # a non-critical component never fails readiness
    return out


async def shared_run(
    app: FastAPI, key: str, checks: dict[str, Check]
) -> tuple[str, dict[str, dict[str, Any]]]:
    """One run of ``checks`` shared by the callers that arrive while it is in flight."""
    runs: dict[str, asyncio.Task[Any]] | None = getattr(app.state, "health_runs", None)
    if runs is None:
        runs = app.state.health_runs = {}
    task = runs.get(key)
    if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
        task = runs[key] = asyncio.ensure_future(_run_and_record(app, checks))
    status, result = await asyncio.shield(task)
    return status, {name: dict(check) for name, check in result.items()}


async def _run_and_record(
    app: FastAPI, checks: dict[str, Check]
) -> tuple[str, dict[str, dict[str, Any]]]:
    result = await run_checks(app, checks)
    status = overall(result)
    obs = getattr(app.state, "obs", None)
    if obs is not None and checks is READY_CHECKS:
        from autoforge_data.observability import set_health

        set_health(obs.gauges, status, result)
    return status, result
