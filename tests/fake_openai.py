"""A local fake of OpenAI's embeddings API (``POST /v1/embeddings``) on a free loopback port.

It answers like the real API (``data[i].index``, ``encoding_format`` float or base64, a 401 for a
wrong key) with a deterministic unit vector per text, and replays scripted faults in order: an
HTTP status with headers, a sleep past the client's timeout, or a raw body. Every request is
recorded. The 401 body echoes the whole key the client sent, so tests can prove we never repeat it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np


@dataclass
class Fault:
    """One scripted answer: a status (200 = answer normally), after a delay, or a raw body."""

    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    drip: float = 0.0  # send the normal body in 512-byte pieces, this many seconds apart


@dataclass
class Request:
    """What the fake received."""

    inputs: list[str]
    body: dict[str, Any]
    authorization: str | None
    at: float


class FakeOpenAI:
    """The fake server; use as a context manager, read ``url``, script ``faults``."""

    def __init__(
        self, *, api_key: str = "sk-test-Secret123", dimension: int = 1536, shuffle: bool = True
    ) -> None:
        self.api_key = api_key
        self.dimension = dimension  # set another value to return wrong-sized vectors
        self.shuffle = shuffle  # return data rows out of order (clients must sort by index)
        self.faults: deque[Fault] = deque()
        self.always: Fault | None = None  # when set, answer every request with this fault
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), daemon=True
        )

    @property
    def url(self) -> str:
        """The base URL, like https://api.openai.com/v1."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail(self, *faults: Fault) -> None:
        """Answer the next requests with these faults, in order, then normally."""
        with self._lock:
            self.faults.extend(faults)

    def vector(self, text: str) -> np.ndarray:
        """The unit vector this fake returns for ``text`` (at ``dimension``)."""
        seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
        v = np.random.default_rng(seed).standard_normal(self.dimension).astype(np.float32)
        return v / np.linalg.norm(v)

    def _next_fault(self, body: dict[str, Any], authorization: str | None) -> Fault | None:
        inputs = body.get("input", [])
        with self._lock:
            self.requests.append(Request(list(inputs), body, authorization, time.monotonic()))
            if self.always is not None:
                return self.always
            return self.faults.popleft() if self.faults else None

    def _answer(self, body: dict[str, Any], authorization: str | None) -> tuple[int, bytes]:
        if authorization != f"Bearer {self.api_key}":
            sent = (authorization or "").removeprefix("Bearer ")
            error = {"message": f"Incorrect API key provided: {sent}.", "code": "invalid_api_key"}
            return 401, json.dumps({"error": error}).encode()
        encoding = body.get("encoding_format", "float")
        rows = []
        for i, text in enumerate(body["input"]):
            v = self.vector(text)
            emb: object = base64.b64encode(v.astype("<f4").tobytes()).decode()
            rows.append({"object": "embedding", "index": i, "embedding": emb})
            if encoding == "float":
                rows[-1]["embedding"] = [float(x) for x in v]
        if self.shuffle and len(rows) > 1:
            order = rows[:]
            random.Random(len(rows)).shuffle(rows)
            if rows == order:  # never in input order: clients must sort by index
                rows.reverse()
        usage = {"prompt_tokens": 1, "total_tokens": 1}
        payload = {"object": "list", "data": rows, "model": body.get("model"), "usage": usage}
        return 200, json.dumps(payload).encode()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                body = json.loads(raw or b"{}")
                auth = self.headers.get("Authorization")
                fault = fake._next_fault(body, auth)
                if self.path != "/v1/embeddings":
                    return self._send(404, b'{"error": {"message": "not found"}}', {})
                if fault is not None and fault.delay:
                    time.sleep(fault.delay)
                if fault is not None and (fault.status != 200 or fault.body is not None):
                    default = json.dumps({"error": {"message": f"fake {fault.status}"}}).encode()
                    return self._send(fault.status, fault.body or default, fault.headers)
                status, payload = fake._answer(body, auth)
                return self._send(status, payload, {}, fault.drip if fault else 0.0)

            def _send(
                self, status: int, payload: bytes, headers: dict[str, str], drip: float = 0.0
            ) -> None:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    step = 512 if drip else len(payload)
                    for start in range(0, len(payload), step):
                        self.wfile.write(payload[start : start + step])
                        self.wfile.flush()
                        time.sleep(drip)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the tests read ``requests`` instead."""

        return Handler
