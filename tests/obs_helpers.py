"""Helpers for the health, metrics and dashboard tests: an app over a real database."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi.testclient import TestClient

from api_helpers import prepare, wait_search
from autoforge_data.api.app import create_app
from autoforge_data.db.engine import Database
from autoforge_data.settings import Settings

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


@contextmanager
def app_client(settings: Settings, db: Database, *, search: bool = True) -> Iterator[TestClient]:
    """A TestClient of the app over ``db`` (migrated, hash embedder active, search loaded)."""
    prepare(db)
    with TestClient(create_app(settings, db=db)) as client:
        if search:
            wait_search(client)
        yield client


def samples(text: str) -> list[tuple[str, str, float]]:
    """(name, labels text, value) of every sample in a Prometheus text exposition."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m is not None, f"unparseable exposition line: {line!r}"
        out.append((m.group(1), m.group(2) or "", float(m.group(3))))
    return out


def value(text: str, name: str, labels: str = "") -> float | None:
    """The value of one sample (labels as they appear, e.g. '{kind="select"}'), or None."""
    for n, lab, v in samples(text):
        if n == name and (not labels or lab == labels):
            return v
    return None
