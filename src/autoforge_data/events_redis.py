"""The Redis pub/sub event bus: events between processes on ``afdb:<env>:events``.

``publish`` delivers to this process's subscribers at once, then appends to a bounded outbox that
a background thread sends in pipelined batches with Redis's short timeout, so a Redis outage never
fails or slows a write; a subscriber thread (the cache's pub/sub listener) receives the other
processes' events and reconnects with backoff. Imported only when a Redis bus is made (CLI speed).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoforge_data.errors import InvalidInput
from autoforge_data.events import (
    OUTBOX_MAX_AGE,
    OUTBOX_SIZE,
    SEND_BATCH,
    Callback,
    Event,
    _Fanout,
    log,
)

if TYPE_CHECKING:
    from pydantic import SecretStr

    from autoforge_data.cache.target import RedisTarget


@functools.cache
def _listener_class() -> type[Any]:
    """The cache's pub/sub listener (subscribe, ping, reconnect with backoff), for events."""
    from autoforge_data.cache.layered import Listener

    class EventListener(Listener):
        """Holds the event channel subscription; skips our own and unreadable messages."""

        def __init__(
            self, connect: Callable[[], Any], bus: RedisBus, heartbeat: float, max_backoff: float
        ) -> None:
            super().__init__(
                connect,
                channel=bus.channel,
                origin=bus.origin,
                on_keys=lambda keys: None,
                on_prefix=lambda prefix: None,
                on_gap=bus.note_gap,
                on_down=lambda: None,
                heartbeat=heartbeat,
                max_backoff=max_backoff,
            )
            self._thread.name = "afdb-events-sub"
            self._bus = bus
            self.unreadable = 0

        def _handle(self, data: bytes) -> None:
            try:
                raw = json.loads(data)
                if not isinstance(raw, dict) or raw.get("origin") == self.origin:
                    return  # ours: this process's subscribers had it at publish time
                event = Event.from_dict(raw)
            except (ValueError, InvalidInput):  # another schema or a foreign message: skip it
                self.unreadable += 1
                return
            self.received += 1
            self._bus.deliver_remote(event)

        def _lost(self, transport: bool) -> None:
            was = self.healthy
            self.healthy = False
            if was and not self._stop.is_set():
                log.warning(
                    "event channel %s lost; reconnecting (local delivery goes on)", self.channel
                )

    return EventListener


class RedisBus:
    """Events over Redis pub/sub between processes; see the module docstring."""

    def __init__(
        self,
        target: RedisTarget,
        *,
        channel: str,
        username: str | None = None,
        password: SecretStr | None = None,
        tls_ca: Path | None = None,
        timeout: float = 0.1,
        heartbeat: float = 0.5,
        max_backoff: float = 2.0,
        outbox_size: int = OUTBOX_SIZE,
        outbox_max_age: float = OUTBOX_MAX_AGE,
    ) -> None:
        self.target = target
        self.channel = channel
        self.origin = uuid.uuid4().hex
        self.max_backoff = max_backoff
        from autoforge_data.cache.target import connect

        self.outbox_max_age = outbox_max_age
        self._client = connect(
            target,
            username=username,
            password=password,
            tls_ca=tls_ca,
            timeout=timeout,
            max_connections=4,
            health_check_interval=10,
        )
        self._fanout = _Fanout()
        self._outbox: collections.deque[tuple[float, Event]] = collections.deque()
        self._outbox_size = outbox_size
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._sender = threading.Thread(target=self._send_loop, name="afdb-events-pub", daemon=True)
        self.listener = _listener_class()(self._pubsub, self, heartbeat, max_backoff)
        self.published = 0  # accepted by publish()
        self.sent = 0  # reached Redis
        self.send_failures = 0
        self.dropped = 0  # outbox overflow or too old
        self.gaps = 0  # subscriptions (re)made: events of other processes may have been missed
        self.sending_ok = True
        self._closed = False

    def __repr__(self) -> str:
        return f"RedisBus({self.target.describe()}, channel={self.channel!r})"

    def _pubsub(self) -> Any:
        return self._client.pubsub(ignore_subscribe_messages=False)  # type: ignore[no-untyped-call]

    def start(self) -> RedisBus:
        """Start the sender and subscriber threads (they connect in the background)."""
        self._sender.start()
        self.listener.start()
        return self

    def publish(self, event: Event) -> None:
        """Deliver here now; queue for Redis (bounded; the oldest is dropped when full)."""
        if self._closed:
            return
        self.published += 1
        self._fanout.deliver(event)
        with self._cond:
            if len(self._outbox) >= self._outbox_size:
                self._outbox.popleft()
                self.dropped += 1
            elif not self._outbox:
                self._cond.notify()  # the sender waits only when the outbox is empty
            self._outbox.append((time.monotonic(), event))  # encoded by the sender thread

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        """Add a subscriber (gets local and remote events); returns its unsubscribe function."""
        return self._fanout.subscribe(callback)

    def deliver_remote(self, event: Event) -> None:
        """An event from another process (called by the subscriber thread)."""
        if not self._closed:
            self._fanout.deliver(event)

    def note_gap(self) -> None:
        """The subscription was (re)made: messages sent before it were not seen."""
        self.gaps += 1

    def _send_loop(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            with self._cond:
                while not self._outbox and not self._stop.is_set():
                    self._cond.wait(0.5)
                if self._stop.is_set():
                    return
                self._expire(time.monotonic())
                batch = [event for _, event in itertools.islice(self._outbox, SEND_BATCH)]
            if not batch:
                continue
            if self._send(batch):
                self._done(batch)
                backoff = 0.05
            elif self._stop.wait(backoff * (0.5 + random.random())):  # noqa: S311 (jitter only)
                return
            else:
                backoff = min(backoff * 2, self.max_backoff)

    def _expire(self, now: float) -> None:
        """Drop queued events older than ``outbox_max_age`` (caller holds the lock)."""
        while self._outbox and now - self._outbox[0][0] > self.outbox_max_age:
            self._outbox.popleft()
            self.dropped += 1

    def _done(self, batch: list[Event]) -> None:
        """Take a sent batch off the outbox (overflow may have taken some of it already)."""
        with self._cond:
            for event in batch:
                if self._outbox and self._outbox[0][1] is event:
                    self._outbox.popleft()
                    self.sent += 1

    def _send(self, batch: list[Event]) -> bool:
        """PUBLISH the batch in one pipeline (one round trip); False if Redis failed."""
        from redis.cluster import RedisCluster

        from autoforge_data.cache.redis_cache import is_transport

        origin = {"origin": self.origin}
        payloads = [json.dumps(e.to_dict() | origin, separators=(",", ":")) for e in batch]
        try:
            if isinstance(self._client, RedisCluster):  # keyless commands: one at a time
                for payload in payloads:
                    self._client.publish(self.channel, payload)
            else:
                pipe = self._client.pipeline(transaction=False)
                for payload in payloads:
                    pipe.publish(self.channel, payload)
                pipe.execute()
        except Exception as exc:
            if is_transport(exc) is None:
                log.exception("event publish failed")
            self.send_failures += 1
            if self.sending_ok:
                log.warning("events cannot reach Redis (%s); queueing", type(exc).__name__)
            self.sending_ok = False
            return False
        if not self.sending_ok:
            log.warning("events reach Redis again")
        self.sending_ok = True
        return True

    def state(self) -> dict[str, Any]:
        """ok while both directions work; degraded (local delivery only) otherwise."""
        subscribed = self.listener.healthy
        ok = subscribed and self.sending_ok
        return {
            "backend": "redis",
            "status": "ok" if ok else "degraded",
            "target": self.target.describe(),
            "channel": self.channel,
            "subscribed": subscribed,
            "sending": "ok" if self.sending_ok else "failing",
            "subscribers": self._fanout.count,
            "published": self.published,
            "sent": self.sent,
            "queued": len(self._outbox),
            "dropped": self.dropped,
            "send_failures": self.send_failures,
            "received": self.listener.received,
            "unreadable": self.listener.unreadable,
            "reconnects": self.listener.reconnects,
            "gaps": self.gaps,
        }

    def close(self, flush_timeout: float = 0.5) -> None:
        """Try to send what is queued (bounded), then stop both threads and close Redis."""
        self._closed = True
        deadline = time.monotonic() + flush_timeout
        while self._outbox and self.sending_ok and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._sender.is_alive():
            self._sender.join(2.0)
        self.listener.stop()
        with contextlib.suppress(Exception):
            self._client.close()
