"""Change events: what changed, published after commit on a bus, streamed to `/ws` clients.

An :class:`Event` names a committed change (``prompt.created``, ``prompt.edited``,
``prompt.status_changed``, ``evaluation.added``, ``backup.finished``) by kind, ids, version, time
and actor; never content or secrets. Its JSON form carries ``"schema": 1`` (:data:`SCHEMA`); a
reader skips messages of another schema instead of guessing.

An :class:`EventBus` delivers events to subscribers. Two implementations:

* :class:`InProcessBus` — one process: ``publish`` calls the subscribers in the caller's thread
  (they must only enqueue: the WebSocket hub does ``loop.call_soon_threadsafe``).
* ``RedisBus`` (``events_redis.py``) — many processes over Redis pub/sub on
  ``afdb:<env>:events``. ``publish`` delivers to this process's subscribers at once, then appends
  to a bounded outbox that a background thread sends with Redis's short timeout: a Redis outage
  never fails or slows a write (events queue up to :data:`OUTBOX_SIZE` / :data:`OUTBOX_MAX_AGE`
  and are then dropped, counted). A subscriber thread (the cache's pub/sub
  :class:`~autoforge_data.cache.layered.Listener`) receives the other processes' events and
  reconnects with backoff. ``state()`` says how it is.

Producers call :func:`publish` (never raises) or, inside a unit of work,
:func:`publish_after_commit` (nothing is sent for a rolled-back transaction). Delivery is at most
once: a client that must not miss a change re-reads after a reconnect or a ``notice``.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from autoforge_data.domain import Evaluation, Prompt, utcnow
from autoforge_data.errors import InvalidInput
from autoforge_data.ids import is_id, new_id

if TYPE_CHECKING:  # redis-py and the cache load only when a RedisBus is made (CLI speed)

    from autoforge_data.db.uow import UnitOfWork
    from autoforge_data.settings import Settings

log = logging.getLogger("autoforge_data.events")

SCHEMA = 1
KINDS = (
    "prompt.created",
    "prompt.edited",
    "prompt.status_changed",
    "evaluation.added",
    "backup.finished",
)
ID_KEYS = ("user", "prompt", "evaluation", "backup")
MAX_DATA_BYTES = 4096
OUTBOX_SIZE = 10_000  # events waiting for Redis; the oldest go first when it is full
OUTBOX_MAX_AGE = 60.0  # seconds: an event older than this is dropped rather than sent late
SEND_BATCH = 256  # events per pipelined round trip to Redis
_TOKEN = re.compile(r"^[A-Za-z0-9._:@/-]{1,64}$")  # backup ids and actors (never a secret)
_AT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")


@dataclass(frozen=True, slots=True)
class Event:
    """One committed change: kind, the ids it concerns, the new version, when, and by whom."""

    kind: str
    ids: Mapping[str, str] = field(default_factory=dict)
    version: int | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    actor: str | None = None
    at: str = field(default_factory=utcnow)
    id: str = field(default_factory=new_id)

    def __post_init__(self) -> None:
        _check_event(self)

    @property
    def prompt_id(self) -> str | None:
        """The prompt this event is about, if any."""
        return self.ids.get("prompt")

    @property
    def user_id(self) -> str | None:
        """The user (prompt owner) this event is about, if any."""
        return self.ids.get("user")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (schema 1), as sent on Redis and to WebSocket clients."""
        return {
            "type": "event",
            "schema": SCHEMA,
            "id": self.id,
            "kind": self.kind,
            "at": self.at,
            "actor": self.actor,
            "ids": dict(self.ids),
            "version": self.version,
            "data": dict(self.data),
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as compact JSON text."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, raw: Any) -> Event:
        """Parse and check the JSON form; InvalidInput for another schema or a bad field."""
        if not isinstance(raw, dict) or raw.get("type", "event") != "event":
            raise InvalidInput("not an event message")
        if raw.get("schema") != SCHEMA:
            raise InvalidInput(f"unsupported event schema {raw.get('schema')!r}")
        try:
            return cls(
                kind=raw["kind"],
                ids=raw.get("ids") or {},
                version=raw.get("version"),
                data=raw.get("data") or {},
                actor=raw.get("actor"),
                at=raw["at"],
                id=raw["id"],
            )
        except (KeyError, TypeError) as exc:
            raise InvalidInput(f"event message lacks a field: {exc}") from None


def _check_event(ev: Event) -> None:
    """Producers' mistakes fail loudly; messages from the wire are checked the same way."""
    if ev.kind not in KINDS:
        raise InvalidInput(f"unknown event kind {ev.kind!r}", hint=f"one of: {', '.join(KINDS)}")
    if not isinstance(ev.ids, Mapping):
        raise InvalidInput("event ids must be an object")
    for name, value in ev.ids.items():
        if name not in ID_KEYS or not isinstance(value, str):
            raise InvalidInput(f"unknown event id {name!r}", hint=f"one of: {', '.join(ID_KEYS)}")
        ok = _TOKEN.match(value) if name == "backup" else is_id(value)
        if not ok:
            raise InvalidInput(f"invalid {name} id in event")
    if ev.version is not None and (
        isinstance(ev.version, bool) or not isinstance(ev.version, int) or ev.version < 1
    ):
        raise InvalidInput("event version must be a positive integer")
    if ev.actor is not None and not (isinstance(ev.actor, str) and _TOKEN.match(ev.actor)):
        raise InvalidInput("event actor must be a short name or key id")
    if not isinstance(ev.at, str) or not _AT.match(ev.at):
        raise InvalidInput("event time must be ISO-8601 UTC, e.g. 2026-11-27T15:40:00.123Z")
    if not isinstance(ev.id, str) or not is_id(ev.id):
        raise InvalidInput("invalid event id")
    _check_data(ev.data)


def _check_data(data: Any) -> None:
    if not isinstance(data, Mapping):
        raise InvalidInput("event data must be an object")
    try:
        size = len(json.dumps(data, allow_nan=False))
    except (TypeError, ValueError):
        raise InvalidInput("event data must be JSON (no NaN, no binary)") from None
    if size > MAX_DATA_BYTES:
        raise InvalidInput(f"event data is larger than {MAX_DATA_BYTES} bytes")


# --- the events our use cases publish ------------------------------------------------------


def prompt_event(kind: str, prompt: Prompt) -> Event:
    """prompt.created / prompt.edited / prompt.status_changed for ``prompt`` as committed."""
    return Event(
        kind,
        ids={"prompt": prompt.id, "user": prompt.owner_id},
        version=prompt.current_version,
        data={"status": prompt.status},
        at=prompt.updated_at,
    )


def evaluation_event(ev: Evaluation, owner_id: str | None) -> Event:
    """evaluation.added (with the prompt's owner when known, so user filters see it)."""
    ids = {"prompt": ev.prompt_id, "evaluation": ev.id}
    if owner_id is not None:
        ids["user"] = owner_id
    return Event("evaluation.added", ids=ids, version=ev.version, data={"score": ev.score})


def backup_event(backup_id: str, *, ok: bool, **data: Any) -> Event:
    """backup.finished: ``ok`` and small facts (target kind, bytes, seconds; never a path)."""
    return Event("backup.finished", ids={"backup": backup_id}, data={"ok": ok, **data})


def backup_result_publisher(sink: EventSink | None) -> Callable[[Any, Any], None]:
    """An ``on_result(info, error)`` for :class:`~autoforge_data.ops.schedule.BackupScheduler`:
    publishes backup.finished with the backup's name and sizes, or ``ok: false`` and the error
    code (never its message: it may name a path)."""

    def on_result(info: Any, error: Any) -> None:
        try:
            if info is not None:
                m = info.manifest
                facts = {"seconds": round(float(info.seconds), 3), "size_bytes": m.size_bytes}
                event = backup_event(str(m.name), ok=True, **facts)
            else:
                code = getattr(error, "code", "error")
                event = Event("backup.finished", data={"ok": False, "error": str(code)})
        except InvalidInput as exc:  # an unusual backup name must not stop the scheduler
            log.warning("backup.finished not published: %s", exc.message)
            return
        publish(sink, event)

    return on_result


# --- producing ----------------------------------------------------------------------------


@runtime_checkable
class EventSink(Protocol):
    """Anything events can be published to (a bus, or a bus that stamps the actor)."""

    def publish(self, event: Event) -> None:
        """Deliver ``event``; must not raise and must not block on the network."""


def publish(sink: EventSink | None, event: Event) -> None:
    """Publish ``event`` on ``sink`` (no-op for None); never raises: a bus fault is logged."""
    if sink is None:
        return
    try:
        sink.publish(event)
    except Exception as exc:  # a change event must never fail the change it reports
        log.warning("event %s not published: %s", event.kind, type(exc).__name__)


def publish_after_commit(uow: UnitOfWork, sink: EventSink | None, event: Event) -> None:
    """Publish ``event`` once ``uow`` has committed; nothing if it rolls back."""
    if sink is not None:
        uow.after_commit(lambda: publish(sink, event))


class WithActor:
    """A sink that stamps ``actor`` (e.g. ``key:<api key id>``) on what it publishes."""

    def __init__(self, sink: EventSink, actor: str) -> None:
        if not _TOKEN.match(actor):
            raise InvalidInput("event actor must be a short name or key id")
        self.sink = sink
        self.actor = actor

    def publish(self, event: Event) -> None:
        """Publish ``event`` with our actor."""
        self.sink.publish(replace(event, actor=self.actor))


# --- buses --------------------------------------------------------------------------------

Callback = Callable[[Event], None]


class EventBus(Protocol):
    """Delivers published events to every subscriber (of this process, or of all of them)."""

    def publish(self, event: Event) -> None:
        """Deliver ``event``; fire-and-forget (never raises, never waits on the network)."""

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        """Call ``callback(event)`` for each event (it must not block); returns unsubscribe."""

    def state(self) -> dict[str, Any]:
        """Backend, status (ok / degraded) and counters, for health and `/metrics`."""

    def close(self) -> None:
        """Stop delivering and release connections and threads."""


class _Fanout:
    """This process's subscribers; thread-safe; a failing callback is logged and skipped."""

    def __init__(self) -> None:
        self._subs: tuple[Callback, ...] = ()
        self._lock = threading.Lock()
        self.delivered = 0
        self.callback_errors = 0

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        """Add ``callback``; the returned function removes it (idempotent)."""
        with self._lock:
            self._subs = (*self._subs, callback)

        def unsubscribe() -> None:
            with self._lock:
                self._subs = tuple(s for s in self._subs if s is not callback)

        return unsubscribe

    def deliver(self, event: Event) -> None:
        """Call every subscriber (a snapshot: subscribing meanwhile is safe)."""
        for callback in self._subs:
            try:
                callback(event)
            except Exception as exc:
                self.callback_errors += 1
                log.warning("event subscriber failed: %s", type(exc).__name__)
        self.delivered += 1

    @property
    def count(self) -> int:
        """How many subscribers there are."""
        return len(self._subs)


class InProcessBus:
    """One process's bus: publish calls the subscribers directly, in the publisher's thread."""

    def __init__(self) -> None:
        self._fanout = _Fanout()
        self.published = 0
        self._closed = False

    def __repr__(self) -> str:
        return f"InProcessBus(subscribers={self._fanout.count})"

    def publish(self, event: Event) -> None:
        """Deliver to this process's subscribers."""
        if self._closed:
            return
        self.published += 1
        self._fanout.deliver(event)

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        """Add a subscriber; returns its unsubscribe function."""
        return self._fanout.subscribe(callback)

    def state(self) -> dict[str, Any]:
        """Always ok: nothing outside the process is involved."""
        return {
            "backend": "memory",
            "status": "ok",
            "subscribers": self._fanout.count,
            "published": self.published,
            "callback_errors": self._fanout.callback_errors,
        }

    def close(self) -> None:
        """Stop delivering."""
        self._closed = True


def channel_for(env: str) -> str:
    """``afdb:<env>:events``: one channel per profile."""
    if not re.fullmatch(r"[a-z0-9_-]{1,32}", env):
        raise InvalidInput(f"invalid profile name {env!r} for the event channel")
    return f"afdb:{env}:events"


def make_bus(settings: Settings) -> EventBus:
    """Redis pub/sub when AFDB_REDIS_URL is set, else in-process; started and ready to use.

    Build it after forking (one per worker process): it owns sockets and threads.
    """
    if not settings.redis_url:
        return InProcessBus()
    from autoforge_data.cache.target import parse_redis_url

    password = settings.redis_password
    target = parse_redis_url(
        settings.redis_url,
        cluster=settings.redis_cluster,
        password_set=bool(password and password.get_secret_value()),
    )
    from autoforge_data.events_redis import RedisBus

    bus = RedisBus(
        target,
        channel=channel_for(settings.env),
        username=settings.redis_username,
        password=password,
        tls_ca=settings.redis_tls_ca,
        timeout=settings.redis_timeout,
    )
    return bus.start()
