"""Helpers for the HTTP API tests: an app over a real database, with a key, search ready."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi.testclient import TestClient

from autoforge_data.api.app import create_app
from autoforge_data.db import migrate
from autoforge_data.db.engine import Database
from autoforge_data.services import apikeys
from autoforge_data.settings import Settings
from autoforge_data.vector.embedders import HASH_384
from autoforge_data.vector.store import activate_model, register_model


def prepare(db: Database) -> None:
    """Migrate and make the fast deterministic hash embedder the active model."""
    migrate.upgrade(db)
    register_model(db, HASH_384, 384)
    activate_model(db, HASH_384)


def wait_search(client: TestClient, timeout: float = 30.0) -> None:
    """Wait until the app's search component answers (it opens in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        r = client.get("/api/v1/search", params={"q": "warm"})
        if r.status_code != 503 or time.monotonic() > deadline:
            assert r.status_code == 200, r.text
            return
        time.sleep(0.05)


@contextmanager
def api_client(
    settings: Settings, db: Database, *, scope: str = "admin", **client_args: object
) -> Iterator[TestClient]:
    """A TestClient of the app over ``db`` with auth required and a key of ``scope``."""
    settings = settings.model_copy(update={"api_auth": "required"})
    secret = apikeys.create_key(db, f"test-{scope}", scope).secret
    headers = {"Authorization": f"Bearer {secret}"}
    with TestClient(create_app(settings, db=db), headers=headers, **client_args) as client:  # type: ignore[arg-type]
        wait_search(client)
        yield client
