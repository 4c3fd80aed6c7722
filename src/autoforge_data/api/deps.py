"""What route handlers share: the app's components and running blocking work off the event loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import Depends, FastAPI, Request

from autoforge_data.db.engine import Database
from autoforge_data.settings import Settings

T = TypeVar("T")


def app_settings(request: Request) -> Settings:
    """The settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


def app_db(request: Request) -> Database:
    """The app's database (opened in the lifespan)."""
    db: Database = request.app.state.db
    return db


SettingsDep = Annotated[Settings, Depends(app_settings)]
DatabaseDep = Annotated[Database, Depends(app_db)]


async def run_blocking(app: FastAPI, fn: Callable[..., T], *args: Any) -> T:
    """Run database or model work in a worker thread, bounded by the app's limiter (pool size)."""
    return await anyio.to_thread.run_sync(fn, *args, limiter=app.state.limiter)
