"""Helpers for the health, metrics and dashboard tests: an app over a real database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api_helpers import prepare, wait_search
from autoforge_data.api.app import create_app
from autoforge_data.db.engine import Database
from autoforge_data.settings import Settings


@contextmanager
def app_client(settings: Settings, db: Database, *, search: bool = True) -> Iterator[TestClient]:
    """A TestClient of the app over ``db`` (migrated, hash embedder active, search loaded)."""
    prepare(db)
    with TestClient(create_app(settings, db=db)) as client:
        if search:
            wait_search(client)
        yield client


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample in a Prometheus text exposition (parsed strictly)."""
    return [
        (sample.name, dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def value(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` with exactly these labels, or None."""
    for n, lab, v in samples(text):
        if n == name and lab == labels:
            return v
    return None


def total(text: str, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include these."""
    found = [lab_v for lab_v in samples(text) if lab_v[0] == name]
    return sum(v for _, lab, v in found if all(lab.get(k) == x for k, x in labels.items()))
