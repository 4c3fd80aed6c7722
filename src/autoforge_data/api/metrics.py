"""`/metrics` (Prometheus text from the app's own registry) and the request-latency middleware.

:func:`install` (called where routers are included) gives the app its
:class:`~autoforge_data.observability.Observability`, the middleware and the route;
:func:`component` (started in the lifespan) connects what exists only while the app runs: the
statement hook, the engine's events and the cache's counters. A scrape first refreshes the
gauges that need I/O (readiness, journal lag, replica lag, backup, file sizes), each bounded in
time, so a hung database makes a scrape slower by at most the health timeout, never stuck.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, disable_created_metrics, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from autoforge_data.api import health, stats
from autoforge_data.observability import (
    Observability,
    ProbeGauges,
    file_sizes,
    instrument_search,
    subscribe_statements,
    update_pools,
    watch_engine,
)

LOCAL_PROBE_TIMEOUT = 0.5  # seconds for file sizes and pool numbers (a stat on a stuck disk)
router = APIRouter(tags=["meta"])


class RequestMetrics:
    """ASGI middleware: latency and status class per route *template* (never the raw path)."""

    def __init__(self, app: ASGIApp, obs: Observability) -> None:
        self.app = app
        self.obs = obs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Time one HTTP request; other scope types pass through."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        app = scope.get("app")
        if app is not None:
            _instrument_search_once(app, self.obs)
        status = 500  # what the client gets if the app raises before starting a response
        start = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.obs.http_in_flight.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.obs.http_in_flight.dec()
            route = getattr(scope.get("route"), "path", None)
            template = route if isinstance(route, str) and route else "unmatched"
            self.obs.observe_request(
                scope.get("method", "GET"), template, status, time.perf_counter() - start
            )


def _instrument_search_once(app: Any, obs: Observability) -> None:
    """Wrap the search context's index and embedders as soon as it is open (two getattrs)."""
    holder = getattr(app.state, "search", None)
    ctx = getattr(holder, "ctx", None)
    if ctx is not None and not getattr(ctx, "_afdb_observed", False):
        instrument_search(ctx, obs)


def install(app: FastAPI) -> None:
    """Give ``app`` its metrics registry, the request middleware and ``/metrics``."""
    disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series: noise
    obs = app.state.obs = Observability()
    settings = app.state.settings
    obs.set_info(settings.env, settings.target.mode.value, settings.index_backend)
    if settings.backup_every:
        obs.gauges.set("afdb_backup_interval_seconds", settings.backup_every)
    app.add_middleware(RequestMetrics, obs=obs)
    app.include_router(router)


@asynccontextmanager
async def component(app: FastAPI) -> AsyncIterator[Observability]:
    """Connect the app's database and cache to its metrics (and sample the dashboard's history)
    while the app runs."""
    obs: Observability = app.state.obs
    unsubscribe = subscribe_statements(obs)
    unwatch = watch_engine(obs, app.state.db.engine)
    cache = getattr(app.state, "cache", None)
    obs.cache_collector.metrics = getattr(cache, "metrics", None)
    try:
        async with stats.sampling(obs) as history:
            app.state.stats_history = history
            yield obs
    finally:
        unsubscribe()
        unwatch()
        obs.cache_collector.metrics = None


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition of this app's registry (no secret, path or raw URL in it)."""
    obs: Observability = request.app.state.obs
    await refresh_gauges(request.app)
    return Response(generate_latest(obs.registry), media_type=CONTENT_TYPE_LATEST)


async def refresh_gauges(app: FastAPI) -> dict[str, Any]:
    """Refresh the I/O-backed gauges; returns the readiness answer and local numbers."""
    obs: Observability = app.state.obs
    status, checks = await health.shared_run(app, "ready", health.READY_CHECKS)
    set_from_checks(obs.gauges, checks)
    local = await _local_numbers(app)
    return {"status": status, "checks": checks, **local}


def set_from_checks(gauges: ProbeGauges, checks: dict[str, dict[str, Any]]) -> None:
    """Index, replica and backup gauges from the health checks' numbers."""
    vector = checks.get("vector", {})
    if "journal_lag" in vector:
        gauges.set("afdb_index_journal_lag", vector["journal_lag"])
        gauges.set("afdb_index_vectors", vector["vectors"])
        gauges.set("afdb_index_refresh_age_seconds", vector["refresh_age_s"])
    replica = checks.get("replica")
    if replica is not None and replica.get("reason") != "timeout":
        lag = replica.get("lag_s")
        gauges.set("afdb_replica_lag_seconds", math.inf if lag is None else lag)
        gauges.set("afdb_replica_sync_failures", replica.get("failures", 0))
    backup = checks.get("backup")
    if backup is not None and backup.get("reason") != "timeout":
        age = backup.get("age_s")
        gauges.set("afdb_backup_age_seconds", math.inf if age is None else age)
        if "last_ok" in backup:
            gauges.set("afdb_backup_last_success", 1 if backup["last_ok"] else 0)


async def _local_numbers(app: FastAPI) -> dict[str, Any]:
    """File sizes and pool use, read in a thread (bounded), set into the gauges."""
    obs: Observability = app.state.obs
    db = app.state.db

    def read() -> dict[str, Any]:
        update_pools(obs, db)
        sizes = file_sizes(db.target.path)
        if sizes is None:
            return {}
        obs.gauges.set("afdb_database_bytes", sizes[0])
        obs.gauges.set("afdb_wal_bytes", sizes[1])
        return {"database_bytes": sizes[0], "wal_bytes": sizes[1]}

    try:
        result: dict[str, Any] = await asyncio.wait_for(
            anyio.to_thread.run_sync(
                read, limiter=app.state.health_limiter, abandon_on_cancel=True
            ),
            LOCAL_PROBE_TIMEOUT,
        )
    except TimeoutError:
        obs.gauges.set("afdb_probe_success", 0, probe="local")
        return {}
    obs.gauges.set("afdb_probe_success", 1, probe="local")
    return result
