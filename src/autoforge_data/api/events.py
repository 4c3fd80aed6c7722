"""`/ws`: committed changes streamed to WebSocket clients, from the app's event bus.

Protocol (JSON text messages; ``schema`` is :data:`autoforge_data.events.SCHEMA`):

1. Connect to ``/ws``, optionally ``?user=ID`` and/or ``?prompt=ID`` (only events about that
   user's prompts / that prompt; ``backup.finished`` reaches unfiltered clients only).
2. Authenticate (when the API asks for keys, see ``AFDB_API_AUTH``) with a ``read`` key or
   above: the ``Authorization: Bearer <key>`` header, or — browsers cannot set headers on a
   WebSocket — a first message ``{"type": "auth", "key": "<key>"}`` within
   :data:`AUTH_DEADLINE` seconds. Never in the URL: URLs end up in logs.
3. The server answers ``{"type": "ready", ...}``; from then on every matching event arrives as
   ``{"type": "event", ...}`` (see :meth:`autoforge_data.events.Event.to_dict`), a
   ``{"type": "heartbeat"}`` when nothing happened for a while, and ``{"type": "pong"}`` for a
   client's ``{"type": "ping"}``.

Each client has a bounded queue (``AFDB_EVENTS_QUEUE_SIZE``). Publishers never wait for a client:
when its queue is full the oldest queued event is dropped for that client (the newest state
matters most), and once it has caught up (its queue is empty) it gets
``{"type": "notice", "dropped": N}``. A client whose queue stays full for
:data:`STALL_CLOSE` seconds is closed with code 4408. Errors arrive as ``{"type": "error",
"error": {"code", "message", "hint"}}`` followed by a close: 4400 bad query, 4401 no or invalid
key, 4403 key below ``read``, 1013 too many clients or database unavailable, 1001 server shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from fastapi import APIRouter, FastAPI, WebSocket, WebSocketDisconnect
from starlette.datastructures import QueryParams
from starlette.websockets import WebSocketState

from autoforge_data.api.deps import run_blocking
from autoforge_data.domain import utcnow
from autoforge_data.errors import AfdbError, InvalidInput, Unavailable
from autoforge_data.events import SCHEMA, Event, EventBus, EventSink, WithActor, make_bus
from autoforge_data.ids import is_id

log = logging.getLogger("autoforge_data.events")
router = APIRouter(tags=["events"])

AUTH_DEADLINE = 5.0  # seconds for the first {"type": "auth"} message
STALL_CLOSE = 30.0  # seconds a client's queue may stay full before it is closed
HEARTBEAT = 15.0  # seconds of silence before a heartbeat message
MAX_CLIENTS = 1000
MAX_CLIENT_MESSAGE = 4096  # bytes: clients only send auth and ping messages
SEND_TIMEOUT = 2.0  # bound on a close frame to a client that does not read
_FILTERS = ("user", "prompt")
_URL_SECRETS = ("key", "api_key", "apikey", "token", "access_token", "authorization")
_CLOSE_CODES = {"invalid_input": 4400, "unauthorized": 4401, "forbidden": 4403, "too_slow": 4408}


class TooSlow(AfdbError):
    """The client's queue stayed full: it reads more slowly than events arrive."""

    code = "too_slow"
    default_hint = "read faster, or filter with ?user= or ?prompt=, then re-read what you need"


@dataclass(eq=False)
class Client:
    """One connected WebSocket client: its filters, bounded queue and drop count."""

    queue: asyncio.Queue[Event]
    user: str | None = None
    prompt: str | None = None
    dropped: int = 0  # dropped since the last notice
    dropped_total: int = 0
    full_since: float | None = None
    kick: asyncio.Event = field(default_factory=asyncio.Event)

    def matches(self, event: Event) -> bool:
        """Does ``event`` pass this client's filters?"""
        if self.user is not None and event.user_id != self.user:
            return False
        return self.prompt is None or event.prompt_id == self.prompt

    def offer(self, event: Event, now: float, stall_close: float) -> None:
        """Queue ``event``; when full, drop the oldest (the newest state matters most) and
        count it; a queue that stays full for ``stall_close`` seconds kicks the client."""
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
            self.dropped_total += 1
            if self.full_since is None:
                self.full_since = now
            elif now - self.full_since > stall_close:
                self.kick.set()
        else:
            self.full_since = None
        self.queue.put_nowait(event)


class Hub:
    """Fans the bus's events out to the connected clients, on the event loop's thread."""

    def __init__(
        self,
        bus: EventBus,
        loop: asyncio.AbstractEventLoop,
        *,
        queue_size: int,
        heartbeat: float = HEARTBEAT,
        stall_close: float = STALL_CLOSE,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.bus = bus
        self.queue_size = queue_size
        self.heartbeat = heartbeat
        self.stall_close = stall_close
        self.max_clients = max_clients
        self.clients: set[Client] = set()
        self.closing = asyncio.Event()
        self.dropped_total = 0
        self.kicked = 0
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._unsubscribe = bus.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        """Called by the bus in any thread: hand over to the loop, never wait."""
        if threading.get_ident() == self._loop_thread:
            self._fanout(event)
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody to deliver to
            self._loop.call_soon_threadsafe(self._fanout, event)

    def _fanout(self, event: Event) -> None:
        now = time.monotonic()
        for client in self.clients:
            if client.matches(event):
                before = client.dropped_total
                client.offer(event, now, self.stall_close)
                self.dropped_total += client.dropped_total - before

    def add(self, user: str | None, prompt: str | None) -> Client:
        """Register a client (it receives events from now on)."""
        if len(self.clients) >= self.max_clients:
            raise Unavailable(
                f"too many event clients (limit {self.max_clients})", hint="retry later"
            )
        client = Client(asyncio.Queue(self.queue_size), user=user, prompt=prompt)
        self.clients.add(client)
        return client

    def remove(self, client: Client) -> None:
        """Forget a client."""
        self.clients.discard(client)

    def stats(self) -> dict[str, Any]:
        """Clients, drops and kicks (for health and `/metrics`)."""
        return {
            "clients": len(self.clients),
            "dropped": self.dropped_total,
            "kicked": self.kicked,
            "queue_size": self.queue_size,
        }

    def close(self) -> None:
        """Stop taking events and tell every handler to close its client (code 1001)."""
        self._unsubscribe()
        self.closing.set()


@asynccontextmanager
async def component(app: FastAPI) -> AsyncIterator[EventBus]:
    """The lifespan part: the bus (``app.state.events``) and the hub; closed on shutdown."""
    settings = app.state.settings
    bus = await anyio.to_thread.run_sync(make_bus, settings)
    hub = Hub(bus, asyncio.get_running_loop(), queue_size=settings.events_queue_size)
    app.state.events_hub = hub
    try:
        yield bus
    finally:
        hub.close()
        deadline = time.monotonic() + SEND_TIMEOUT
        while hub.clients and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await anyio.to_thread.run_sync(bus.close)


def sink(app: FastAPI, key: Any = None) -> EventSink | None:
    """What routes pass as ``events=`` to the use cases: the bus, stamped with the key's id."""
    bus: EventBus | None = getattr(app.state, "events", None)
    key_id = getattr(key, "id", None)
    if bus is None or key_id is None:
        return bus
    return WithActor(bus, f"key:{key_id}")


def state(app: FastAPI) -> dict[str, Any]:
    """The bus's state and the hub's counters (for health checks and metrics)."""
    bus: EventBus | None = getattr(app.state, "events", None)
    hub: Hub | None = getattr(app.state, "events_hub", None)
    out: dict[str, Any] = bus.state() if bus is not None else {"status": "off"}
    if hub is not None:
        out["ws"] = hub.stats()
    return out


# --- the endpoint ---------------------------------------------------------------------------


@router.websocket("/ws")
async def ws(websocket: WebSocket) -> None:
    """Stream change events; see the module docstring for the protocol."""
    await websocket.accept()
    hub: Hub = websocket.app.state.events_hub
    try:
        user, prompt = parse_filters(websocket.query_params)
        key = await _authenticate(websocket)
        client = hub.add(user, prompt)
    except AfdbError as exc:
        await _refuse(websocket, exc)
        return
    except WebSocketDisconnect:
        return
    try:
        ready = {"type": "ready", "schema": SCHEMA, "filters": {"user": user, "prompt": prompt}}
        ready |= {"key": getattr(key, "id", None), "queue_size": hub.queue_size}
        await websocket.send_json(ready)
        await _serve(websocket, hub, client)
    except WebSocketDisconnect:
        pass
    finally:
        hub.remove(client)


def parse_filters(query: QueryParams) -> tuple[str | None, str | None]:
    """``?user=`` and ``?prompt=``, checked; a key in the URL is refused, never used."""
    for name in query:
        if name.lower() in _URL_SECRETS:
            raise InvalidInput(
                "API keys are not accepted in the URL (URLs are logged)",
                hint='send "Authorization: Bearer <key>" or a first message '
                '{"type": "auth", "key": "<key>"}',
            )
        if name not in _FILTERS:
            raise InvalidInput(
                f"unknown query parameter {name!r}", hint="use ?user=ID or ?prompt=ID"
            )
    values: list[str | None] = []
    for name in _FILTERS:
        given = query.getlist(name)
        if len(given) > 1:
            raise InvalidInput(f"?{name}= given more than once")
        if given and not is_id(given[0]):
            raise InvalidInput(
                f"invalid {name} id in ?{name}=", hint="ids are 26-character strings"
            )
        values.append(given[0] if given else None)
    return values[0], values[1]


async def _authenticate(websocket: WebSocket) -> Any:
    """The client's API key (None when the API asks for none); raises InvalidKey/Forbidden."""
    from autoforge_data.api.auth import auth_required, key_cache
    from autoforge_data.services import apikeys

    app = websocket.app
    if not auth_required(app.state.settings):
        return None
    token = _bearer(websocket.headers.get("authorization"))
    if token is None:
        token = await _auth_message(websocket)
    cache = key_cache(app)
    key = cache.get(token)
    if key is None:
        key = await run_blocking(app, apikeys.authenticate, app.state.db, token)
        cache.put(token, key)
    if not key.allows("read"):
        raise apikeys.Forbidden(f"key {key.id} cannot read events")
    return key


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


async def _auth_message(websocket: WebSocket) -> str:
    """The key from the first message, which must come within AUTH_DEADLINE."""
    from autoforge_data.services.apikeys import InvalidKey

    hint = 'send {"type": "auth", "key": "<key>"} first, or an Authorization header'
    try:
        text = await asyncio.wait_for(websocket.receive_text(), AUTH_DEADLINE)
    except TimeoutError:
        raise InvalidKey(f"no API key within {AUTH_DEADLINE:g} s", hint=hint) from None
    except KeyError:  # a binary frame: starlette finds no "text"
        raise InvalidKey("the auth message must be JSON text", hint=hint) from None
    msg = _json(text)
    key = msg.get("key") if msg.get("type") == "auth" else None
    if not isinstance(key, str) or not key:
        raise InvalidKey("the first message must be an auth message", hint=hint)
    return key


def _json(text: str) -> dict[str, Any]:
    if len(text) > MAX_CLIENT_MESSAGE:
        return {}
    try:
        msg = json.loads(text)
    except ValueError:
        return {}
    return msg if isinstance(msg, dict) else {}


async def _refuse(websocket: WebSocket, exc: AfdbError) -> None:
    """Send the error model, then close with a code that says why."""
    code = _CLOSE_CODES.get(exc.code, 1013 if exc.http_status == 503 else 1011)
    body = {"type": "error", "error": {"code": exc.code, "message": exc.message, "hint": exc.hint}}
    with contextlib.suppress(Exception):  # the client may be gone already
        await asyncio.wait_for(websocket.send_json(body), SEND_TIMEOUT)
        await asyncio.wait_for(websocket.close(code, exc.code), SEND_TIMEOUT)


async def _serve(websocket: WebSocket, hub: Hub, client: Client) -> None:
    """Run sender and receiver until one ends, the client is kicked or the app shuts down."""
    lock = asyncio.Lock()

    async def send(message: dict[str, Any]) -> None:
        async with lock:
            await websocket.send_text(json.dumps(message, separators=(",", ":")))

    tasks = {
        asyncio.create_task(_sender(send, hub, client)),
        asyncio.create_task(_receiver(websocket, send)),
        asyncio.create_task(client.kick.wait()),
        asyncio.create_task(hub.closing.wait()),
    }
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if not task.cancelled() and isinstance(task.exception(), WebSocketDisconnect):
            return
    if client.kick.is_set():
        hub.kicked += 1
        err = TooSlow(f"closed: {client.dropped} events dropped while the queue stayed full")
        await _refuse(websocket, err)
        return
    if websocket.application_state is WebSocketState.CONNECTED:
        with contextlib.suppress(Exception):
            code, reason = (1001, "server shutting down") if hub.closing.is_set() else (1000, "")
            await asyncio.wait_for(websocket.close(code, reason), SEND_TIMEOUT)


async def _sender(send: Callable[[dict[str, Any]], Any], hub: Hub, client: Client) -> None:
    """Queue to socket; a notice once caught up after drops; heartbeats when idle."""
    while True:
        try:
            event = await asyncio.wait_for(client.queue.get(), hub.heartbeat)
        except TimeoutError:
            await send({"type": "heartbeat", "at": utcnow()})
            continue
        await send(event.to_dict())
        if client.dropped and client.queue.empty():
            dropped, client.dropped = client.dropped, 0
            await send({"type": "notice", "dropped": dropped, "hint": TooSlow.default_hint})


async def _receiver(websocket: WebSocket, send: Callable[[dict[str, Any]], Any]) -> None:
    """Answer pings; ignore late auth messages; anything else gets an error message."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        msg = _json(message.get("text") or "")
        kind = msg.get("type")
        if kind == "ping":
            await send({"type": "pong", "at": utcnow()})
        elif kind != "auth":
            error = {"code": "invalid_input", "message": "unknown message", "hint": "send ping"}
            await send({"type": "error", "error": error})
