"""Property tests of the HTTP API from its own OpenAPI schema (schemathesis): no 5xx for any
generated request, valid or not, and every response matches the schema (status, type, body)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api_helpers import prepare
from autoforge_data.api.app import create_app
from autoforge_data.db.engine import Database
from autoforge_data.services import apikeys
from autoforge_data.services import prompts as svc
from conftest import settings_for


def rejects_invalid_data(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis' negative_data_rejection, also counting 413 (too large) as a rejection."""
    if response.status_code == 413:
        return None
    result: bool | None = negative_data_rejection(ctx, response, case)
    return result


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    rejects_invalid_data,
]
_KEY: dict[str, str] = {}
EXAMPLES = 8  # per operation and mode: ~22 operations x 2 modes x 8 stays under 60 s


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The schema of an app over an embedded database (auth required, one admin key)."""
    tmp = tmp_path_factory.mktemp("schema")
    settings = settings_for("embedded", tmp).model_copy(update={"api_auth": "required"})
    db = Database(settings)
    try:
        prepare(db)
        owner = svc.create_user(db, "owner@example.com", "owner")
        svc.create_prompt(db, owner.id, "Seed", "a prompt for the generated requests")
        _KEY["Authorization"] = "Bearer " + apikeys.create_key(db, "schemathesis", "admin").secret
        app = create_app(settings, db=db)
        loaded = schemathesis.openapi.from_asgi("/openapi.json", app)  # starts the lifespan
        _wait_search(app)
        yield loaded
        asgi.shutdown_lifespans()  # the app's lifespan (search component) ends before the db
    finally:
        db.close()


def _wait_search(app: Any) -> None:
    """Search answers before generation starts (it opens in the background)."""
    deadline = time.monotonic() + 30
    with asgi.get_client(app) as client:
        while client.get("/api/v1/search?q=warm", headers=_KEY).status_code == 503:
            assert time.monotonic() < deadline, "search did not open"
            time.sleep(0.05)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests(api_schema: Any, mode: GenerationMode) -> None:
    """Requests the schema allows (positive) and mutations of them (negative), for every
    operation: no 5xx, responses conform, invalid input is refused with a 4xx."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 15

    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            # a well-formed bearer header gets the real key; a mutated or missing one stays
            given_auth = (case.headers or {}).get("Authorization", "")
            headers = dict(_KEY) if given_auth.startswith("Bearer ") else {}
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            run()
        except Unsatisfiable:  # nothing to mutate (no parameters, no body): negative mode only
            assert mode is GenerationMode.NEGATIVE, operation.label
