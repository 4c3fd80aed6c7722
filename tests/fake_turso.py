"""A local stand-in for the Turso Platform API (the real service cannot be reached from here).

It serves the database calls our client uses, on a free loopback port, and checks them as the real
API does: the bearer token, the organization, the request's shape (name rules, group, seed type,
RFC 3339 timestamp not in the future), and answers with the API's JSON shapes and errors (401
without a valid token, 404 for an unknown database or seed, 409 for an existing name, 400 for a
malformed body). Every request is recorded (without its token) for the tests to inspect.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


@dataclass
class FakeTurso:
    """State of the fake: one organization, its groups and databases, and a request log."""

    org: str
    token: str
    groups: set[str] = field(default_factory=lambda: {"default"})
    databases: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, Any, dict[str, str]]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """Base URL to use as AFDB_TURSO_API_URL."""
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add_database(self, name: str, group: str = "default", seed: Any = None) -> dict[str, Any]:
        """Create a database directly (the 'existing' prod database of a test)."""
        db = {
            "Name": name,
            "DbId": str(uuid.uuid4()),
            "Hostname": f"{name}-{self.org}.turso.io",
            "block_reads": False,
            "block_writes": False,
            "allow_attach": False,
            "regions": ["fra"],
            "primaryRegion": "fra",
            "type": "logical",
            "version": "0.24.32",
            "group": group,
            "is_schema": False,
            "schema": None,
            "archived": False,
            "sleeping": False,
            "seed": seed,
        }
        self.databases[name] = db
        return db

    def start(self) -> FakeTurso:
        """Serve on a free loopback port in a daemon thread."""
        fake = self

        class Handler(_Handler):
            state = fake

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    state: FakeTurso

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    def do_GET(self) -> None:
        """List or get databases."""
        self._route("GET")

    def do_POST(self) -> None:
        """Create a database."""
        self._route("POST")

    def do_DELETE(self) -> None:
        """Delete a database."""
        self._route("DELETE")

    def _route(self, method: str) -> None:
        body = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() != "authorization"}
        self.state.requests.append((method, self.path, body, headers))
        if self.headers.get("Authorization") != f"Bearer {self.state.token}":
            return self._send(401, {"error": "token is invalid or expired"})
        prefix = f"/v1/organizations/{self.state.org}/databases"
        if not self.path.startswith(prefix):
            return self._send(404, {"error": "organization not found"})
        rest = self.path[len(prefix) :].strip("/")
        if method == "GET" and not rest:
            return self._send(200, {"databases": list(self.state.databases.values())})
        if method == "POST" and not rest:
            return self._create(body)
        if method in ("GET", "DELETE") and rest and "/" not in rest:
            return self._one(method, rest)
        self._send(405, {"error": "method not allowed"})

    def _one(self, method: str, name: str) -> None:
        db = self.state.databases.get(name)
        if db is None:
            return self._send(404, {"error": f"could not find database with name {name}"})
        if method == "DELETE":
            del self.state.databases[name]
            return self._send(200, {"database": name})
        self._send(200, {"database": db})

    def _create(self, body: Any) -> None:
        problem = _check_create(body, self.state)
        if problem is not None:
            return self._send(*problem)
        db = self.state.add_database(body["name"], body["group"], body.get("seed"))
        self._send(200, {"database": {k: db[k] for k in ("DbId", "Hostname", "Name")}})

    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return "<not json>"

    def _send(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _check_create(  # noqa: PLR0911 - one return per rule, as the API reports them
    body: Any, state: FakeTurso
) -> tuple[int, dict[str, str]] | None:
    """What the real API checks on create-with-seed; None when the request is valid."""
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        return 400, {"error": "invalid request body: name is required"}
    if not _NAME.match(body["name"]) or body["name"].endswith("-"):
        return 400, {"error": "invalid database name"}
    if body.get("group") not in state.groups:
        return 404, {"error": f"group {body.get('group')} not found"}
    if body["name"] in state.databases:
        return 409, {"error": f"database with name {body['name']} already exists"}
    seed = body.get("seed")
    if seed is None:
        return None
    if not isinstance(seed, dict) or seed.get("type") != "database" or "name" not in seed:
        return 400, {"error": "invalid seed: type must be 'database' with a name"}
    if seed["name"] not in state.databases:
        return 404, {"error": f"could not find database with name {seed['name']}"}
    stamp = seed.get("timestamp")
    if stamp is not None:
        if not isinstance(stamp, str) or not _STAMP.match(stamp):
            return 400, {"error": "invalid seed timestamp: expected RFC 3339 in UTC"}
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        if when > datetime.now(UTC):
            return 400, {"error": "seed timestamp is in the future"}
    return None
