"""A real 3-master Redis Cluster for the tests, and the cache builders the cache tests share.

The cluster is three redis-server processes on free ports in a temporary directory, joined with
`redis-cli --cluster create`, stopped (every node) after. Nothing here touches a Redis the tests
did not start.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from autoforge_data.cache import (
    AsideOptions,
    Cache,
    CacheAside,
    LayeredCache,
    MemoryCache,
    Metrics,
    RedisCache,
    parse_redis_url,
)
from autoforge_data.cache.base import channel
from servers import Redis, free_port, start_redis


@dataclass
class Cluster:
    """Three cluster-enabled masters that together cover all 16384 slots."""

    nodes: list[Redis]

    @property
    def url(self) -> str:
        """A redis:// URL of one node (the client discovers the others)."""
        return self.nodes[0].url.removesuffix("/0")

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()


def _cli(*args: str, timeout: float = 30) -> str:
    binary = shutil.which("redis-cli")
    if binary is None:
        raise RuntimeError("redis-cli missing: run scripts/ensure-redis (make test does)")
    out = subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=timeout, check=True
    )
    return out.stdout


def _wait_ok(nodes: list[Redis], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [_cli("-p", str(n.port), "cluster", "info", timeout=5) for n in nodes]
        if all("cluster_state:ok" in s for s in states):
            return
        time.sleep(0.1)
    raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")


def start_cluster(tmp: Path) -> Cluster:
    """Start three masters in ``tmp``, create the cluster and wait until its state is ok."""
    nodes: list[Redis] = []
    try:
        for i in range(3):
            args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            # an explicit bus port: the default (port + 10000) may be taken or out of range
            args += ["--cluster-port", str(free_port()), "--cluster-node-timeout", "2000"]
            nodes.append(start_redis(tmp, args=args, name=f"node{i}"))
        addresses = [f"127.0.0.1:{n.port}" for n in nodes]
        _cli("--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes")
        _wait_ok(nodes)
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return Cluster(nodes)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A 3-master Redis Cluster on free ports (tests keep apart by schema, see new_schema)."""
    cluster = start_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


# --- cache builders shared by tests/test_cache.py and tests/test_cache_faults.py --------------

BACKENDS = ("memory", "redis", "cluster")


def new_schema() -> str:
    """A schema revision of the test's own: its keys and channel are its alone."""
    return "t" + uuid.uuid4().hex[:12]


def build_cache(
    url: str | None,
    *,
    schema: str,
    options: AsideOptions | None = None,
    l1_entries: int = 1000,
    max_value_bytes: int = 1_048_576,
    layered: bool = True,
    cluster: bool = False,
    **redis_kw: Any,
) -> CacheAside:
    """A cache over ``url`` (None: in-process only), two levels unless ``layered`` is False."""
    metrics = Metrics()
    l1 = MemoryCache(max_entries=l1_entries, max_value_bytes=max_value_bytes, metrics=metrics)
    backend: Cache = l1
    if url is not None:
        l2 = RedisCache(
            parse_redis_url(url, cluster=cluster),
            max_value_bytes=max_value_bytes,
            channel=channel(schema),
            metrics=metrics,
            **redis_kw,
        )
        backend = LayeredCache(l1, l2) if layered else l2
        if layered:
            wait_listening(backend)
    return CacheAside(backend, schema=schema, metrics=metrics, options=options)


def wait_listening(cache: CacheAside | Cache, timeout: float = 10.0) -> None:
    """Wait until a two-level cache's invalidation listener is subscribed."""
    backend = cache.backend if isinstance(cache, CacheAside) else cache
    if not isinstance(backend, LayeredCache):
        return
    deadline = time.monotonic() + timeout
    while not backend.listener.healthy:
        if time.monotonic() > deadline:
            raise RuntimeError("the invalidation listener did not subscribe")
        time.sleep(0.01)
