"""A client for sqld's admin API (``--admin-listen-addr``): namespaces as branches.

A sqld started with ``--enable-namespaces`` serves many databases; clients pick one by the first
label of the Host header (``{namespace}.<host>``). The admin API forks one namespace into a new
one (``POST /v1/namespaces/{from}/fork/{to}``: a copy of the database at that moment, after
which the two never share a write), reports one (``GET /v1/namespaces/{ns}/stats``) and deletes
one (``DELETE /v1/namespaces/{ns}``). sqld 0.24 has no call that lists namespaces: the branches
we created are listed from their metadata records (:mod:`autoforge_data.ops.branch`) and each
is checked with ``stats``.

The admin API has no authentication of its own: it must listen on loopback or a private
network, never the internet; we refuse a plain-http admin URL to a non-loopback host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from autoforge_data.errors import (
    AfdbError,
    ConfigError,
    Conflict,
    InvalidInput,
    NotFound,
    Unavailable,
)
from autoforge_data.settings import Settings

if TYPE_CHECKING:
    from autoforge_data.ops.branch import BranchOptions, BranchRecord

_NAMESPACE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def check_namespace(name: str) -> str:
    """A namespace name sqld accepts and a Host header can carry: [a-z0-9_-], up to 63."""
    if not isinstance(name, str) or not _NAMESPACE.match(name):
        raise InvalidInput(
            f"invalid sqld namespace {name[:80]!r}" if isinstance(name, str) else "invalid name",
            hint="use lowercase letters, digits, '-' and '_' (at most 63), starting alphanumeric",
        )
    return name


def namespace_of_url(url: str) -> str:
    """The namespace sqld serves for a URL: the first label of its host (what sqld itself uses)."""
    host = urlsplit(url).hostname or ""
    return host.split(".", 1)[0]


def namespace_url(url: str, namespace: str) -> str:
    """The URL whose host sends ``Host: {namespace}.<host>`` (needs a resolvable name)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    rest = host.split(".", 1)[1] if "." in host and not host.replace(".", "").isdigit() else host
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{namespace}.{rest}{port}", parts.path, "", ""))


def describe_namespace(settings: Settings, namespace: str) -> tuple[Any, list[str], dict[str, int]]:
    """Migration head, embedding models and rows per table of one namespace of the server."""
    from autoforge_data.db import hrana
    from autoforge_data.ops.snapshot import describe

    assert settings.target.url is not None
    token = settings.auth_token.get_secret_value() if settings.auth_token else None
    conn = hrana.connect(
        settings.target.url,
        auth_token=token,
        namespace=check_namespace(namespace),
        timeout=settings.db_timeout,
        connect_timeout=settings.connect_timeout,
    )
    try:
        return describe(conn)
    finally:
        conn.close()


def check_admin_url(raw: str) -> str:
    """Validate AFDB_SQLD_ADMIN_URL: http(s), no credentials, plain http only to loopback."""
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            "AFDB_SQLD_ADMIN_URL must be an http(s) URL with a host",
            hint="e.g. AFDB_SQLD_ADMIN_URL=http://127.0.0.1:9090 (sqld --admin-listen-addr)",
        )
    if parts.username or parts.password:
        raise ConfigError(
            "AFDB_SQLD_ADMIN_URL must not carry credentials", hint="remove user:password@"
        )
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise ConfigError(
            f"AFDB_SQLD_ADMIN_URL uses plain http to a non-loopback host {parts.hostname!r}",
            hint="sqld's admin API has no auth: reach it over loopback or an https tunnel",
        )
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


@dataclass(frozen=True)
class NamespaceStats:
    """What sqld reports about one namespace."""

    name: str
    storage_bytes: int
    replication_index: int


class SqldAdmin:
    """The admin API of one sqld (namespaces: fork, stats, delete)."""

    def __init__(self, admin_url: str, *, timeout: float = 30.0) -> None:
        self.url = check_admin_url(admin_url)
        self._client = httpx.Client(base_url=self.url, timeout=timeout)

    def fork(self, source: str, target: str) -> None:
        """Fork namespace ``source`` into a new namespace ``target`` (refuses an existing one)."""
        check_namespace(source)
        check_namespace(target)
        if source == target:
            raise InvalidInput("a branch cannot have its source's name", hint="pick another name")
        self._call("POST", f"/v1/namespaces/{source}/fork/{target}", json={})

    def stats(self, name: str) -> NamespaceStats:
        """Size and replication index of a namespace; NotFound if it does not exist."""
        body = self._call("GET", f"/v1/namespaces/{check_namespace(name)}/stats")
        return NamespaceStats(
            name=name,
            storage_bytes=int(body.get("storage_bytes_used") or 0),
            replication_index=int(body.get("replication_index") or 0),
        )

    def exists(self, name: str) -> bool:
        """True if the namespace exists."""
        try:
            self.stats(name)
        except NotFound:
            return False
        return True

    def delete(self, name: str) -> None:
        """Delete a namespace and its data; NotFound if it does not exist."""
        self._call("DELETE", f"/v1/namespaces/{check_namespace(name)}")

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def __enter__(self) -> SqldAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, json: Any = None) -> dict[str, Any]:
        try:
            r = self._client.request(method, path, json=json)
        except httpx.HTTPError as exc:
            raise Unavailable(
                f"sqld admin API at {self.url} did not answer ({type(exc).__name__})",
                hint="check AFDB_SQLD_ADMIN_URL and that sqld runs with --admin-listen-addr",
            ) from None
        if r.status_code < 300:
            return _json_or_empty(r)
        raise _error(r, method, path)


def _json_or_empty(r: httpx.Response) -> dict[str, Any]:
    if not r.content:
        return {}
    try:
        body = r.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error(r: httpx.Response, method: str, path: str) -> AfdbError:
    """Map an admin API error response to our error types (sqld's message is short and safe)."""
    detail = str(_json_or_empty(r).get("error") or r.text[:200]).strip()
    where = f"sqld admin {method} {path}"
    if r.status_code == 404:
        return NotFound(f"{where}: {detail}", hint="check the namespace name (afdb branch list)")
    if r.status_code in (400, 409) and "already exists" in detail:
        return Conflict(f"{where}: {detail}", hint="pick another name or delete that branch first")
    if r.status_code >= 500:
        return Unavailable(f"{where}: HTTP {r.status_code}: {detail}", hint="see sqld's log")
    return AfdbError(f"{where}: HTTP {r.status_code}: {detail}", hint="see sqld's log")


def create_namespace_branch(settings: Settings, opts: BranchOptions) -> BranchRecord:
    """Fork the source namespace into namespace ``opts.name`` (see ops/branch.py)."""
    from autoforge_data.ops.branch import BranchRecord, refuse_unrecorded

    assert settings.target.url is not None
    assert settings.sqld_admin_url is not None
    if opts.at is not None:
        raise InvalidInput(
            "sqld forks a namespace as it is now: --at is not supported there",
            hint="branch without --at, or restore a backup into a new namespace",
        )
    name = check_namespace(opts.name)
    src = check_namespace(opts.source_namespace or namespace_of_url(settings.target.url))
    with SqldAdmin(settings.sqld_admin_url, timeout=max(settings.db_timeout, 30.0)) as admin:
        if opts.replace and admin.exists(name):
            refuse_unrecorded(opts, name)
            admin.delete(name)
        admin.fork(src, name)
        size = admin.stats(name).storage_bytes
    migration, models, counts = describe_namespace(settings, name)
    return BranchRecord(
        name=name,
        kind="sqld",
        source_env=opts.source_env or settings.env,
        source=f"sqld namespace {src} at {settings.target.url}",
        created_at="",
        location=f"namespace {name} at {settings.target.url}",
        use=f"AFDB_DATABASE_URL={namespace_url(settings.target.url, name)}",
        migration=migration,
        models=models,
        size_bytes=size,
        row_counts=counts,
    )
