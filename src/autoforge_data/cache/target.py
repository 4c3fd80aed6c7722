"""Where Redis is and how we connect: AFDB_REDIS_URL parsed and checked (no credential in it),
and the redis-py client built from it with our timeouts, one retry and the settings' credentials.

Settings validation can use :func:`parse_redis_url` without importing redis-py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from autoforge_data.errors import ConfigError

if TYPE_CHECKING:
    import redis
    from redis.cluster import RedisCluster

    Client = redis.Redis | RedisCluster

_SCHEMES = {"redis": (False, False), "rediss": (True, False)}
_SCHEMES |= {"redis+cluster": (False, True), "rediss+cluster": (True, True)}


@dataclass(frozen=True)
class RedisTarget:
    """Where Redis is, parsed from AFDB_REDIS_URL; holds no credential."""

    hosts: tuple[tuple[str, int], ...]
    db: int
    tls: bool
    cluster: bool

    def describe(self) -> str:
        """``redis[s]://host:port[,host:port]/db (cluster)`` for logs and `afdb cache stats`."""
        where = ",".join(f"{h}:{p}" for h, p in self.hosts)
        kind = " (cluster)" if self.cluster else ""
        return f"{'rediss' if self.tls else 'redis'}://{where}/{self.db}{kind}"


def parse_redis_url(url: str, *, cluster: bool = False, password_set: bool = False) -> RedisTarget:
    """Check AFDB_REDIS_URL: scheme, hosts, db; no credentials or options in it."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ConfigError(
            f"unknown scheme {scheme!r} in AFDB_REDIS_URL",
            hint="use redis://, rediss:// (TLS), or redis+cluster:// / rediss+cluster://",
        )
    netloc = parts.netloc
    if "@" in netloc or parts.query:
        raise ConfigError(
            "AFDB_REDIS_URL must not carry credentials or options",
            hint="put the user in AFDB_REDIS_USERNAME and the password in AFDB_REDIS_PASSWORD",
        )
    tls, is_cluster = _SCHEMES[scheme]
    hosts = tuple(_host_port(item) for item in netloc.split(","))
    path = parts.path.strip("/") or "0"
    if not path.isdigit():
        raise ConfigError(f"AFDB_REDIS_URL has an invalid database number {path!r}")
    is_cluster = is_cluster or cluster or len(hosts) > 1
    if is_cluster and int(path) != 0:
        raise ConfigError("a Redis Cluster has only database 0", hint="drop the /N from the URL")
    if password_set and not tls and not all(_loopback(h) for h, _ in hosts):
        raise ConfigError(
            "AFDB_REDIS_URL would send the password in clear to a non-loopback host",
            hint="use rediss:// (TLS), with AFDB_REDIS_TLS_CA if the CA is private",
        )
    return RedisTarget(hosts, int(path), tls, is_cluster)


def _host_port(item: str) -> tuple[str, int]:
    """``host[:port]`` or ``[v6]:port``; port 6379 by default."""
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, sep, port = item.rpartition(":")
        if not sep:
            host, port = item, ""
    if not host:
        raise ConfigError("AFDB_REDIS_URL has no host", hint="e.g. redis://127.0.0.1:6379/0")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError(f"AFDB_REDIS_URL has an invalid port {port!r}")
    return host, int(port) if port else 6379


def _loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def connect(
    target: RedisTarget,
    *,
    username: str | None,
    password: SecretStr | None,
    tls_ca: Path | None,
    timeout: float,
    max_connections: int,
    health_check_interval: int,
) -> Client:
    """A redis-py client: short socket timeouts, one quick retry, credentials as arguments."""
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.cluster import ClusterNode, RedisCluster
    from redis.retry import Retry

    kw: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "socket_keepalive": True,
        "username": username,
        "password": password.get_secret_value() if password else None,
        "client_name": "afdb-cache",
        "max_connections": max_connections,
    }
    if target.tls:
        kw |= {"ssl_ca_certs": str(tls_ca) if tls_ca else None, "ssl_cert_reqs": "required"}
    retry = Retry(ExponentialBackoff(cap=0.01, base=0.002), 1)
    if target.cluster:
        nodes = [ClusterNode(h, p) for h, p in target.hosts]  # type: ignore[no-untyped-call]
        return RedisCluster(startup_nodes=nodes, retry=retry, ssl=target.tls, **kw)
    host, port = target.hosts[0]
    pool = redis.ConnectionPool(
        connection_class=redis.SSLConnection if target.tls else redis.Connection,
        host=host,
        port=port,
        db=target.db,
        retry=retry,
        health_check_interval=health_check_interval,
        **kw,
    )
    return redis.Redis(connection_pool=pool)
