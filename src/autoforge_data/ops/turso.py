"""A client for the Turso Platform API: branches of a Turso Cloud database.

A Turso branch is a new database created with a seed from an existing one
(``POST /v1/organizations/{org}/databases`` with
``{"name", "group", "seed": {"type": "database", "name": source, "timestamp": T?}}``): a copy of
the source (at ``T`` if given, within the plan's point-in-time-recovery window) that never
shares writes with it. Listing and deleting use ``GET`` and ``DELETE`` on the same collection.

The API token (``AFDB_TURSO_API_TOKEN``, a *platform* token from ``turso auth api-tokens mint``,
not a database token) is sent only as a bearer header; it never appears in a URL, a message, a
log line or a repr. The tests run this client against ``tests/fake_turso.py`` (the real service
cannot be reached from the CI machines).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import httpx
from pydantic import SecretStr

from autoforge_data.errors import (
    AfdbError,
    AuthError,
    ConfigError,
    Conflict,
    InvalidInput,
    NotFound,
    Unavailable,
)
from autoforge_data.settings import Settings

if TYPE_CHECKING:
    from autoforge_data.ops.branch import BranchOptions, BranchRecord

_DB_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_AUTH_HINT = "check AFDB_TURSO_API_TOKEN (a platform API token: turso auth api-tokens mint NAME)"


def check_database_name(name: str) -> str:
    """A database name Turso accepts: lowercase letters, digits and '-', at most 63."""
    if not isinstance(name, str) or not _DB_NAME.match(name) or name.endswith("-"):
        shown = name[:80] if isinstance(name, str) else "?"
        raise InvalidInput(
            f"invalid Turso database name {shown!r}",
            hint="use lowercase letters, digits and '-' (at most 63), starting alphanumeric",
        )
    return name


def database_of_url(url: str, org: str | None) -> str:
    """The database name in a Turso URL's host: ``{db}-{org}.turso.io`` (or a regional host)."""
    label = (urlsplit(url).hostname or "").split(".", 1)[0]
    if org and label.endswith(f"-{org}"):
        return label[: -len(org) - 1]
    return label


@dataclass(frozen=True)
class TursoDatabase:
    """One database of the organization, as the Platform API describes it."""

    name: str
    db_id: str
    hostname: str
    group: str | None = None


class TursoPlatform:
    """The Platform API for one organization: create with seed, list, get, delete."""

    def __init__(
        self, api_url: str, org: str | None, token: SecretStr | None, *, timeout: float = 30.0
    ) -> None:
        if not org:
            raise ConfigError(
                "AFDB_TURSO_ORG is not set", hint="set it to your Turso organization's slug"
            )
        if token is None or not token.get_secret_value():
            raise ConfigError("AFDB_TURSO_API_TOKEN is not set", hint=_AUTH_HINT)
        parts = urlsplit(api_url)
        local = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if parts.scheme != "https" and not (parts.scheme == "http" and local):
            raise ConfigError(
                "AFDB_TURSO_API_URL must be https (plain http only to loopback)",
                hint="the default is https://api.turso.tech",
            )
        self.api_url = api_url.rstrip("/")
        self.org = org
        self._client = httpx.Client(
            base_url=f"{self.api_url}/v1/organizations/{quote(org, safe='')}",
            headers={"Authorization": f"Bearer {token.get_secret_value()}"},
            timeout=timeout,
        )

    def __repr__(self) -> str:
        return f"TursoPlatform({self.api_url}, org={self.org!r})"

    def create_branch(
        self, name: str, source: str, group: str, at: datetime | None = None
    ) -> TursoDatabase:
        """Create database ``name`` seeded from ``source`` (at ``at``, UTC, if given)."""
        seed: dict[str, Any] = {"type": "database", "name": check_database_name(source)}
        if at is not None:
            seed["timestamp"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {"name": check_database_name(name), "group": group, "seed": seed}
        out = self._call("POST", "/databases", json=body)
        return _database(out.get("database"))

    def list_databases(self) -> list[TursoDatabase]:
        """Every database of the organization."""
        out = self._call("GET", "/databases")
        return [_database(d) for d in out.get("databases") or []]

    def get(self, name: str) -> TursoDatabase:
        """One database; NotFound if it does not exist."""
        out = self._call("GET", f"/databases/{check_database_name(name)}")
        return _database(out.get("database"))

    def delete(self, name: str) -> None:
        """Delete a database; NotFound if it does not exist."""
        self._call("DELETE", f"/databases/{check_database_name(name)}")

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def __enter__(self) -> TursoPlatform:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, json: Any = None) -> dict[str, Any]:
        try:
            r = self._client.request(method, path, json=json)
        except httpx.HTTPError as exc:
            raise Unavailable(
                f"Turso Platform API at {self.api_url} did not answer ({type(exc).__name__})",
                hint="check the network and AFDB_TURSO_API_URL",
            ) from None
        if r.status_code < 300:
            body = _body(r)
            if body is None:
                raise Unavailable(
                    f"Turso Platform API {method} {path}: not a JSON object",
                    hint="check AFDB_TURSO_API_URL",
                )
            return body
        raise _error(r, method, path, self._client.headers["Authorization"][7:])


def _body(r: httpx.Response) -> dict[str, Any] | None:
    try:
        body = r.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _database(raw: Any) -> TursoDatabase:
    if not isinstance(raw, dict) or not raw.get("Name"):
        raise Unavailable(
            "Turso Platform API returned no database object", hint="check AFDB_TURSO_API_URL"
        )
    return TursoDatabase(
        name=str(raw["Name"]),
        db_id=str(raw.get("DbId", "")),
        hostname=str(raw.get("Hostname", "")),
        group=raw.get("group"),
    )


def _error(  # noqa: PLR0911 - one return per status class reads best
    r: httpx.Response, method: str, path: str, token: str
) -> AfdbError:
    """Map an API error to our types; the message is the API's short text, never the request."""
    body = _body(r) or {}
    detail = str(body.get("error") or body.get("message") or f"HTTP {r.status_code}")[:200]
    if token:  # an API that echoes the request must not put the token into our message
        detail = detail.replace(token, "***")
    where = f"Turso {method} {path}"
    status = r.status_code
    if status in (401, 403):
        return AuthError(f"{where}: the Platform API refused the token ({status})", hint=_AUTH_HINT)
    if status == 404:
        return NotFound(f"{where}: {detail}", hint="check the database name and AFDB_TURSO_ORG")
    if status == 409:
        return Conflict(f"{where}: {detail}", hint="pick another name or delete that branch")
    if status == 429:
        return Unavailable(f"{where}: rate limited", hint="wait a minute and retry")
    if status >= 500:
        return Unavailable(f"{where}: HTTP {status}: {detail}", hint="retry later")
    if status == 400:
        return InvalidInput(f"{where}: {detail}", hint="check the name, group and timestamp")
    return AfdbError(f"{where}: HTTP {status}: {detail}", hint="see the Turso Platform API docs")


def create_database_branch(settings: Settings, opts: BranchOptions) -> BranchRecord:
    """Create Turso database ``opts.name`` seeded from the source (see ops/branch.py)."""
    from autoforge_data.ops.branch import BranchRecord, refuse_unrecorded, stamp, turso_client

    assert settings.target.url is not None
    name = check_database_name(opts.name)
    src = check_database_name(
        opts.source_database or database_of_url(settings.target.url, settings.turso_org)
    )
    if src == name:
        raise InvalidInput("a branch cannot have its source's name", hint="pick another name")
    with turso_client(settings) as api:
        if opts.replace:
            refuse_unrecorded(opts, name)
            with contextlib.suppress(NotFound):
                api.delete(name)
        created = api.create_branch(name, src, settings.turso_group, opts.at)
    return BranchRecord(
        name=name,
        kind="turso",
        source_env=opts.source_env or settings.env,
        source=f"Turso database {src}",
        created_at="",
        location=created.hostname,
        use=f"AFDB_DATABASE_URL=libsql://{created.hostname} (+ a token for it: "
        f"turso db tokens create {name})",
        at=stamp(opts.at),
    )
