"""Helpers for the `/ws` tests: a real uvicorn server on a free port, in a thread or a process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from websockets.sync.client import ClientConnection, connect

from servers import free_port


class LiveServer:
    """uvicorn serving ``app`` on a free loopback port, in a thread of this process.

    ``sndbuf`` fixes the kernel send buffer of every accepted connection (they inherit it from
    the listening socket), so a client that stops reading fills the server's buffers quickly.
    """

    def __init__(self, app: FastAPI, *, sndbuf: int | None = None) -> None:
        self.app = app
        self.port = free_port()
        self.sndbuf = sndbuf
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", ws="websockets-sansio"
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        if self.sndbuf is None:
            self.server.run()
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf)
        sock.bind(("127.0.0.1", self.port))
        self.server.run(sockets=[sock])

    def __enter__(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Ask uvicorn to shut down (lifespan shutdown included) and wait for it."""
        self.server.should_exit = True
        self._thread.join(15)

    @property
    def ws_url(self) -> str:
        """``ws://127.0.0.1:<port>/ws``."""
        return f"ws://127.0.0.1:{self.port}/ws"


class ServeProcess:
    """`afdb serve` in a child process (its own interpreter, bus and Redis connections)."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.log = workdir / "serve.log"
        full = {k: v for k, v in os.environ.items() if not k.startswith("AFDB_")}
        self.env = full | env | {"AFDB_PORT": str(self.port), "AFDB_HOST": "127.0.0.1"}
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServeProcess:
        afdb = str(Path(sys.executable).with_name("afdb"))
        with self.log.open("ab") as logf:
            self.proc = subprocess.Popen(
                [afdb, "serve"],
                cwd=self.workdir,
                env=self.env,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"afdb serve exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                url = f"http://127.0.0.1:{self.port}/health/live"
                if httpx.get(url, timeout=1).status_code == 200:
                    return self
            time.sleep(0.1)
        raise RuntimeError("afdb serve did not answer /health/live")

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    @property
    def ws_url(self) -> str:
        """``ws://127.0.0.1:<port>/ws``."""
        return f"ws://127.0.0.1:{self.port}/ws"


def ws_connect(
    url: str, *, key: str | None = None, rcvbuf: int | None = None, **kw: Any
) -> ClientConnection:
    """A websockets client; ``key`` as a Bearer header; ``rcvbuf`` shrinks the socket buffer."""
    headers = {"Authorization": f"Bearer {key}"} if key else None
    sock = None
    if rcvbuf is not None:
        port = int(url.split(":")[2].split("/", maxsplit=1)[0])
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.connect(("127.0.0.1", port))
    return connect(url, additional_headers=headers, sock=sock, open_timeout=5, **kw)


def recv_json(ws: ClientConnection, timeout: float = 2.0) -> dict[str, Any]:
    """The next message as JSON (TimeoutError after ``timeout`` seconds)."""
    msg: dict[str, Any] = json.loads(ws.recv(timeout=timeout))
    return msg


def next_of_type(ws: ClientConnection, kind: str, timeout: float = 2.0) -> dict[str, Any]:
    """The next message of type ``kind`` (heartbeats and others in between are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        msg = recv_json(ws, max(0.01, deadline - time.monotonic()))
        if msg.get("type") == kind:
            return msg


class StalledClient:
    """A WebSocket client that stops reading after the handshake (a tiny socket buffer, so the
    server's buffers fill), and can catch up later: websockets' sans-I/O protocol on a raw socket.
    """

    def __init__(self, url: str, rcvbuf: int = 4096) -> None:
        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        self.proto = ClientProtocol(parse_uri(url))
        port = int(url.split(":")[2].split("/", maxsplit=1)[0])
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        self.proto.send_request(self.proto.connect())
        self._flush()
        self.closed = False
        first = self.read(timeout=5, until=1)
        assert first and first[0]["type"] == "ready", first

    def _flush(self) -> None:
        for chunk in self.proto.data_to_send():
            if chunk:
                self.sock.sendall(chunk)

    def read(self, timeout: float = 1.0, until: int | None = None) -> list[dict[str, Any]]:
        """Messages received until ``timeout`` seconds pass with nothing new (or ``until``)."""
        from websockets.frames import Opcode

        out: list[dict[str, Any]] = []
        self.sock.settimeout(timeout)
        while not self.closed and (until is None or len(out) < until):
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                self.proto.receive_eof()
                self.closed = True
            else:
                self.proto.receive_data(data)
            for event in self.proto.events_received():
                if getattr(event, "opcode", None) is Opcode.TEXT:
                    out.append(json.loads(event.data))
                elif getattr(event, "opcode", None) is Opcode.CLOSE:
                    self.closed = True
            self._flush()
        return out

    @property
    def close_code(self) -> int | None:
        """The server's close code, once a close frame arrived."""
        rcvd = self.proto.close_rcvd
        return None if rcvd is None else int(rcvd.code)

    def close(self) -> None:
        """Drop the connection."""
        self.sock.close()
