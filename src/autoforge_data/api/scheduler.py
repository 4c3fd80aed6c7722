"""The service's backup scheduler: with AFDB_BACKUP_EVERY set, the app backs itself up.

One leader per profile and host (the scheduler's flock), so several app workers never back up at
once; each finished backup is published as ``backup.finished`` on the app's event bus, and its
result feeds ``backup_status`` (health, metrics, ``afdb env``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from autoforge_data.events import backup_result_publisher
from autoforge_data.ops.backup import RetentionPolicy
from autoforge_data.ops.schedule import BackupScheduler, ScheduleOptions
from autoforge_data.settings import Mode, Settings

log = logging.getLogger(__name__)


def schedule_options(settings: Settings) -> ScheduleOptions | None:
    """The schedule the settings ask for, or None (no interval, or a remote database)."""
    if settings.backup_every is None:
        return None
    if settings.target.mode is Mode.REMOTE:
        log.warning("AFDB_BACKUP_EVERY ignored: a remote database is backed up by its server")
        return None
    rules = (settings.backup_keep_last, settings.backup_keep_daily, settings.backup_keep_weekly)
    retention = None
    if any(r is not None for r in rules):
        retention = RetentionPolicy(*rules)
    # the first backup one interval after start, not at start: restarts must not pile up backups
    every = settings.backup_every
    return ScheduleOptions(every=every, initial_delay=every, retention=retention)


@asynccontextmanager
async def component(app: FastAPI) -> AsyncIterator[BackupScheduler | None]:
    """Start the scheduler with the app (when configured) and stop it with the app."""
    options = schedule_options(app.state.settings)
    if options is None:
        yield None
        return
    sink = getattr(app.state, "events", None)
    scheduler = BackupScheduler(
        app.state.settings, options, on_result=backup_result_publisher(sink)
    )
    scheduler.start()
    try:
        yield scheduler
    finally:
        await anyio.to_thread.run_sync(scheduler.stop)
