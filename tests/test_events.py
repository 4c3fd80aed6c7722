"""Change events: the Event format, both buses, the use cases publishing after commit, and the
Redis bus under real faults (redis-server killed and hung with SIGSTOP).

Every Redis here is a real redis-server on a free port of the test's own.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from autoforge_data.cache.target import parse_redis_url
from autoforge_data.db import migrate
from autoforge_data.db.engine import Database
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.errors import Conflict, InvalidInput, NotFound
from autoforge_data.events import (
    SCHEMA,
    Event,
    EventBus,
    InProcessBus,
    WithActor,
    backup_event,
    channel_for,
    make_bus,
    publish,
)
from autoforge_data.events_redis import RedisBus
from autoforge_data.ids import new_id
from autoforge_data.services import prompts as svc
from autoforge_data.settings import Settings
from conftest import settings_for, unique_email
from servers import Redis

# --- helpers ----------------------------------------------------------------------------------


class Inbox:
    """A subscriber that records events (thread-safe) and can wait for a condition."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._cond = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait_for(self, pred: Callable[[list[Event]], bool], timeout: float = 3.0) -> bool:
        """True once ``pred(events)`` holds, False after ``timeout`` seconds."""
        with self._cond:
            return self._cond.wait_for(lambda: pred(self.events), timeout)

    def kinds(self) -> list[str]:
        """The kinds received so far, in order."""
        with self._cond:
            return [e.kind for e in self.events]


def redis_bus(server: Redis, **kw: Any) -> RedisBus:
    """A started RedisBus on ``server`` with test-friendly timings."""
    opts: dict[str, Any] = {"channel": "afdb:test:events", "heartbeat": 0.2, "max_backoff": 0.3}
    return RedisBus(parse_redis_url(server.url), **(opts | kw)).start()


def wait_until(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``pred`` every 20 ms until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


@pytest.fixture
def edb(tmp_path: Path) -> Iterator[Database]:
    """A migrated embedded database."""
    database = Database(settings_for("embedded", tmp_path))
    migrate.upgrade(database)
    try:
        yield database
    finally:
        database.close()


def ev(**kw: Any) -> Event:
    """A valid prompt.edited event, with fields overridden by ``kw``."""
    base: dict[str, Any] = {"kind": "prompt.edited", "ids": {"prompt": new_id(), "user": new_id()}}
    return Event(**(base | {"version": 2} | kw))


# --- the event format -------------------------------------------------------------------------


def test_event_json_round_trip_and_schema() -> None:
    """to_dict carries type, schema 1, kind, ids, version, at, actor; from_dict reads it back."""
    e = ev(actor="key:" + new_id(), data={"status": "active"})
    raw = json.loads(e.to_json())
    assert raw["type"] == "event" and raw["schema"] == SCHEMA == 1
    assert set(raw) == {"type", "schema", "id", "kind", "at", "actor", "ids", "version", "data"}
    assert Event.from_dict(raw) == e
    assert e.prompt_id == raw["ids"]["prompt"] and e.user_id == raw["ids"]["user"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema": 2}, "unsupported event schema"),
        ({"kind": "prompt.deleted"}, "unknown event kind"),
        ({"ids": {"prompt": "nope"}}, "invalid prompt id"),
        ({"ids": {"owner": new_id()}}, "unknown event id"),
        ({"version": 0}, "positive integer"),
        ({"version": True}, "positive integer"),
        ({"at": "yesterday"}, "ISO-8601"),
        ({"actor": "afdb key with spaces and a secret"}, "actor"),
        ({"data": {"x": "y" * 5000}}, "larger than"),
        ({"data": {"x": float("nan")}}, "no NaN"),
        ({"type": "notice"}, "not an event"),
    ],
)
def test_event_rejects_bad_fields(change: dict[str, Any], message: str) -> None:
    """Another schema, an unknown kind or id, bad values and oversize data are refused."""
    raw = ev().to_dict() | change
    with pytest.raises(InvalidInput, match=message):
        Event.from_dict(raw)


def test_event_missing_field_is_invalid_input() -> None:
    """A message without kind/at/id is an InvalidInput, not a KeyError."""
    raw = ev().to_dict()
    del raw["at"]
    with pytest.raises(InvalidInput, match="lacks a field"):
        Event.from_dict(raw)


def test_backup_event_and_actor_stamp() -> None:
    """backup.finished carries the backup id; WithActor stamps the actor on what it publishes."""
    bus = InProcessBus()
    inbox = Inbox()
    bus.subscribe(inbox)
    WithActor(bus, "scheduler").publish(backup_event("20261127T1540Z-ab12", ok=True, bytes=123))
    (got,) = inbox.events
    assert got.kind == "backup.finished" and got.ids == {"backup": "20261127T1540Z-ab12"}
    assert got.actor == "scheduler" and got.data == {"ok": True, "bytes": 123}
    with pytest.raises(InvalidInput):
        WithActor(bus, "not a valid actor!")


def test_channel_per_profile() -> None:
    """One channel per profile; a profile name cannot smuggle in a pattern."""
    assert channel_for("prod") == "afdb:prod:events"
    with pytest.raises(InvalidInput):
        channel_for("prod*")


# --- the in-process bus -----------------------------------------------------------------------


def test_in_process_bus_delivers_in_order_and_unsubscribes() -> None:
    """Subscribers get every event in order; unsubscribing stops delivery."""
    bus = InProcessBus()
    a, b = Inbox(), Inbox()
    unsub_a = bus.subscribe(a)
    bus.subscribe(b)
    sent = [ev(version=n) for n in range(1, 6)]
    for e in sent:
        bus.publish(e)
    unsub_a()
    unsub_a()  # idempotent
    bus.publish(ev())
    assert a.events == sent and len(b.events) == 6
    assert bus.state()["status"] == "ok" and bus.state()["subscribers"] == 1


def test_failing_subscriber_never_fails_the_publisher() -> None:
    """A subscriber that raises is skipped and counted; the others still get the event."""
    bus = InProcessBus()
    inbox = Inbox()

    def broken(event: Event) -> None:
        raise RuntimeError("subscriber bug")

    bus.subscribe(broken)
    bus.subscribe(inbox)
    publish(bus, ev())
    assert len(inbox.events) == 1 and bus.state()["callback_errors"] == 1
    publish(None, ev())  # no bus configured: a no-op


def test_in_process_bus_is_thread_safe() -> None:
    """8 threads publishing while others subscribe: nothing lost, nothing raised."""
    bus = InProcessBus()
    inbox = Inbox()
    bus.subscribe(inbox)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for _ in range(300):
                bus.publish(ev())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def churn() -> None:
        for _ in range(300):
            bus.subscribe(lambda e: None)()

    threads = [threading.Thread(target=writer) for _ in range(8)]
    threads += [threading.Thread(target=churn) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(inbox.events) == 8 * 300 and bus.state()["subscribers"] == 1


# --- the use cases publish after commit -------------------------------------------------------


def test_use_cases_publish_after_commit(edb: Database) -> None:
    """Create, edit, status, evaluation: one event each, with ids and version, after COMMIT."""
    bus = InProcessBus()
    seen_versions: list[int | None] = []

    def check_committed(event: Event) -> None:
        """Another connection already sees the change when the event arrives."""
        if event.prompt_id is not None and event.kind != "evaluation.added":
            seen_versions.append(svc.get_prompt(edb, event.prompt_id).current_version)

    inbox = Inbox()
    bus.subscribe(check_committed)
    bus.subscribe(inbox)
    user = svc.create_user(edb, unique_email(), "eve")
    p = svc.create_prompt(edb, user.id, "t", "v1", events=bus)
    p2 = svc.edit_prompt(edb, p.id, content="v2", events=bus)
    svc.set_status(edb, p.id, "active", events=bus)
    evaluation = svc.add_evaluation(edb, p.id, 2, 0.9, events=bus)
    assert inbox.kinds() == [
        "prompt.created",
        "prompt.edited",
        "prompt.status_changed",
        "evaluation.added",
    ]
    created, edited, status, evaluated = inbox.events
    assert created.ids == {"prompt": p.id, "user": user.id} and created.version == 1
    assert edited.version == p2.current_version == 2 and edited.at == p2.updated_at
    assert status.data == {"status": "active"}
    assert evaluated.ids == {"prompt": p.id, "user": user.id, "evaluation": evaluation.id}
    assert evaluated.version == 2 and evaluated.data == {"score": 0.9}
    assert seen_versions == [1, 2, 2]


def test_no_event_for_a_failed_or_rolled_back_write(edb: Database) -> None:
    """A refused edit, a missing prompt, and a transaction that never commits publish nothing."""
    bus = InProcessBus()
    inbox = Inbox()
    bus.subscribe(inbox)
    user = svc.create_user(edb, unique_email(), "rolf")
    p = svc.create_prompt(edb, user.id, "t", "v1")
    with pytest.raises(Conflict):
        svc.edit_prompt(edb, p.id, content="x", expected_version=5, events=bus)
    with pytest.raises(NotFound):
        svc.set_status(edb, new_id(), "active", events=bus)
    with pytest.raises(NotFound):
        svc.add_evaluation(edb, p.id, 9, 0.5, events=bus)
    from autoforge_data.events import prompt_event, publish_after_commit

    with UnitOfWork(edb, write=True) as uow:  # rolled back: no commit() called
        publish_after_commit(uow, bus, prompt_event("prompt.edited", p))
    assert inbox.events == []


# --- the Redis bus ----------------------------------------------------------------------------


@pytest.mark.redis
def test_redis_bus_crosses_processes_once(redis_server: Redis) -> None:
    """An event published on bus A reaches B's subscriber; A's own subscriber gets it once."""
    a, b = redis_bus(redis_server), redis_bus(redis_server)
    try:
        assert wait_until(lambda: a.state()["status"] == "ok" and b.state()["status"] == "ok")
        in_a, in_b = Inbox(), Inbox()
        a.subscribe(in_a)
        b.subscribe(in_b)
        e = ev(actor="key:" + new_id())
        t0 = time.monotonic()
        a.publish(e)
        assert in_b.wait_for(lambda evs: len(evs) == 1, 1.0)
        assert time.monotonic() - t0 < 1.0
        assert in_b.events == [e]
        time.sleep(0.2)  # an echo from Redis would have arrived by now
        assert in_a.events == [e]
        assert a.state()["sent"] == 1 and b.state()["received"] == 1
    finally:
        a.close()
        b.close()


@pytest.mark.redis
def test_redis_bus_skips_foreign_and_newer_messages(redis_server: Redis) -> None:
    """Non-JSON, other schemas and bad events on the channel are counted and skipped."""
    bus = redis_bus(redis_server)
    raw = redis.Redis(port=redis_server.port)
    try:
        inbox = Inbox()
        bus.subscribe(inbox)
        assert wait_until(lambda: bus.state()["subscribed"])
        raw.publish(bus.channel, b"not json")
        raw.publish(bus.channel, json.dumps(ev().to_dict() | {"schema": 2}))
        raw.publish(bus.channel, json.dumps(ev().to_dict() | {"kind": "x"}))
        good = ev()
        raw.publish(bus.channel, good.to_json())
        assert inbox.wait_for(lambda evs: len(evs) == 1)
        assert inbox.events == [good] and bus.state()["unreadable"] == 3
    finally:
        raw.close()
        bus.close()


@pytest.mark.redis
@pytest.mark.slow
def test_redis_killed_writes_go_on_and_the_bus_reconnects(
    redis_server: Redis, edb: Database
) -> None:
    """Redis SIGKILLed: writes succeed at full speed, local subscribers still get events, the
    state says degraded; after Redis returns both directions work again."""
    a, b = redis_bus(redis_server), redis_bus(redis_server)
    try:
        assert wait_until(lambda: a.state()["status"] == "ok" and b.state()["status"] == "ok")
        local, remote = Inbox(), Inbox()
        a.subscribe(local)
        b.subscribe(remote)
        user = svc.create_user(edb, unique_email(), "kim")
        p = svc.create_prompt(edb, user.id, "t", "v1", events=a)
        assert remote.wait_for(lambda evs: len(evs) == 1, 1.0)

        redis_server.kill()
        t0 = time.perf_counter()
        for n in range(20):
            svc.edit_prompt(edb, p.id, content=f"v{n + 2}", events=a)
        writes = time.perf_counter() - t0
        assert len(local.events) == 21  # in-process delivery does not need Redis
        # the subscriber and the sender notice the loss independently: wait for both
        assert wait_until(
            lambda: (st := a.state())["status"] == "degraded"
            and st["sending"] == "failing"
            and not st["subscribed"],
            3.0,
        )
        assert writes < 2.0  # 20 embedded writes; a blocking publish would add retries each

        redis_server.start()  # same port
        assert wait_until(lambda: a.state()["status"] == "ok" and b.state()["status"] == "ok", 10)
        assert wait_until(lambda: a.state()["queued"] == 0, 2.0)  # the outage's events went out
        assert a.state()["reconnects"] >= 1 and a.state()["sent"] == 21
        svc.edit_prompt(edb, p.id, content="after", events=a)
        assert remote.wait_for(lambda evs: any(e.version == 22 for e in evs), 1.0)
    finally:
        a.close()
        b.close()


@pytest.mark.redis
def test_hung_redis_never_slows_publish(redis_server: Redis) -> None:
    """SIGSTOP: publish stays sub-millisecond while a direct PUBLISH blocks on its timeout
    (the sensitivity arm: the fault is real, the outbox is what protects the writer)."""
    bus = redis_bus(redis_server)
    raw = redis.Redis(port=redis_server.port, socket_timeout=0.3)
    try:
        assert wait_until(lambda: bus.state()["status"] == "ok")
        raw.ping()
        redis_server.pause()
        t0 = time.perf_counter()
        for _ in range(200):
            bus.publish(ev())
        per_publish = (time.perf_counter() - t0) / 200
        t1 = time.perf_counter()
        with pytest.raises(redis.TimeoutError):
            raw.publish(bus.channel, "x")
        direct = time.perf_counter() - t1
        assert per_publish < 0.005 and direct >= 0.25
        assert wait_until(lambda: bus.state()["status"] == "degraded", 3.0)
        redis_server.resume()
        assert wait_until(lambda: bus.state()["status"] == "ok" and bus.state()["queued"] == 0)
        assert bus.state()["sent"] == 200 and bus.state()["dropped"] == 0
    finally:
        redis_server.resume()
        raw.close()
        bus.close()


@pytest.mark.redis
def test_outbox_is_bounded_while_redis_is_down(redis_server: Redis) -> None:
    """With Redis down, the outbox keeps the newest events up to its size; the rest are counted."""
    redis_server.kill()
    bus = redis_bus(redis_server, outbox_size=50)
    try:
        for _ in range(120):
            bus.publish(ev())
        state = bus.state()
        assert state["queued"] <= 50 and state["dropped"] >= 70
        assert state["published"] == 120 and state["status"] == "degraded"
    finally:
        bus.close()


@pytest.mark.redis
def test_make_bus_by_settings_and_no_secret_in_state(tmp_path: Path, redis_server: Redis) -> None:
    """No AFDB_REDIS_URL: in-process; with it: Redis on afdb:<env>:events; the password appears
    in no repr or state."""
    plain = make_bus(settings_for("embedded", tmp_path))
    assert isinstance(plain, InProcessBus)
    secret = "s3cret-" + new_id()
    settings = Settings.load(
        "staging",
        base_dir=tmp_path,
        data_dir=tmp_path / "data",
        redis_url=redis_server.url,
        redis_password=secret,
    )
    bus: EventBus = make_bus(settings)
    try:
        assert isinstance(bus, RedisBus) and bus.channel == "afdb:staging:events"
        text = repr(bus) + json.dumps(bus.state())
        assert secret not in text and redis_server.url.split("/0")[0].split("//")[1] in text
    finally:
        bus.close()


def test_scheduled_backup_publishes_backup_finished(tmp_path: Path, edb: Database) -> None:
    """A real scheduled backup run reports backup.finished (name, size) through the publisher
    the scheduler is given; a failing run reports ok: false with the error code only."""
    from autoforge_data.events import backup_result_publisher
    from autoforge_data.ops.backup import BackupOptions
    from autoforge_data.ops.schedule import BackupScheduler, ScheduleOptions

    bus = InProcessBus()
    inbox = Inbox()
    bus.subscribe(inbox)
    on_result = backup_result_publisher(bus)
    options = ScheduleOptions(every=3600, backup=BackupOptions(url=(tmp_path / "bk").as_uri()))
    scheduler = BackupScheduler(edb.settings, options, on_result=on_result)
    try:
        info = scheduler.run_once()
    finally:
        scheduler.stop()
    assert info is not None
    (done,) = inbox.events
    assert done.kind == "backup.finished" and done.ids == {"backup": info.manifest.name}
    assert done.data["ok"] is True and done.data["size_bytes"] == info.manifest.size_bytes
    on_result(None, NotFound("backup location /secret/place not found"))
    failed = inbox.events[1]
    assert failed.data == {"ok": False, "error": "not_found"} and failed.ids == {}
