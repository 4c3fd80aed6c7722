"""`/ws` end to end: real uvicorn servers on free ports, the `websockets` client, real
redis-server processes. Writes go through the use cases with the app's bus, as the routes do.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from autoforge_data.api import events as events_api
from autoforge_data.api.app import create_app
from autoforge_data.db import migrate
from autoforge_data.db.engine import Database
from autoforge_data.domain import Prompt, User
from autoforge_data.ids import new_id
from autoforge_data.services import prompts as svc
from autoforge_data.settings import Settings
from autoforge_data.vector.embedders import HASH_384
from autoforge_data.vector.store import activate_model, register_model
from conftest import settings_for, unique_email
from servers import Redis
from ws_helpers import (
    LiveServer,
    ServeProcess,
    StalledClient,
    next_of_type,
    recv_json,
    ws_connect,
)


@dataclass
class Site:
    """A running app: its server, database and a user with a prompt."""

    server: LiveServer
    db: Database
    user: User
    prompt: Prompt

    @property
    def bus(self) -> Any:
        """The app's event bus (what the routes pass as ``events=``)."""
        return self.server.app.state.events

    @property
    def hub(self) -> events_api.Hub:
        """The app's WebSocket hub."""
        hub: events_api.Hub = self.server.app.state.events_hub
        return hub

    def edit(self, content: str) -> Prompt:
        """An edit through the use case, publishing on the app's bus."""
        return svc.edit_prompt(self.db, self.prompt.id, content=content, events=self.bus)


@contextlib.contextmanager
def start_site(tmp: Path, *, sndbuf: int | None = None, **overrides: Any) -> Iterator[Site]:
    """A migrated embedded database and an app served by uvicorn; everything closed after."""
    settings: Settings = settings_for("embedded", tmp, **({"api_auth": "off"} | overrides))
    db = Database(settings)
    migrate.upgrade(db)
    register_model(db, HASH_384, 384)  # search opens at once (no MiniLM load competing for CPU)
    activate_model(db, HASH_384)
    user = svc.create_user(db, unique_email(), "wes")
    prompt = svc.create_prompt(db, user.id, "title", "v1")
    try:
        with LiveServer(create_app(settings, db=db), sndbuf=sndbuf) as server:
            yield Site(server, db, user, prompt)
    finally:
        db.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """One app, in-process bus, no API keys asked."""
    with start_site(tmp_path) as s:
        yield s


def ready(ws: ClientConnection) -> dict[str, Any]:
    """The ready message (the client is subscribed from then on)."""
    msg = recv_json(ws, 5)
    assert msg["type"] == "ready", msg
    return msg


def refused(ws: ClientConnection, timeout: float = 3.0) -> tuple[dict[str, Any], int | None]:
    """The error message and the close code that follow a refused connection."""
    error = recv_json(ws, timeout)
    assert error["type"] == "error", error
    with pytest.raises(ConnectionClosed):
        ws.recv(timeout=timeout)
    return error["error"], ws.close_code


# --- delivery ---------------------------------------------------------------------------------


def test_client_sees_an_edit_within_a_second(site: Site) -> None:
    """Connected to /ws, a client gets prompt.edited with the new version in under 1 s."""
    with ws_connect(site.server.ws_url) as ws:
        hello = ready(ws)
        assert hello["schema"] == 1 and hello["filters"] == {"user": None, "prompt": None}
        t0 = time.monotonic()
        updated = site.edit("v2")
        msg = next_of_type(ws, "event", 1.0)
        assert time.monotonic() - t0 < 1.0
        assert msg["kind"] == "prompt.edited" and msg["version"] == updated.current_version == 2
        assert msg["ids"] == {"prompt": site.prompt.id, "user": site.user.id}
        assert msg["schema"] == 1 and msg["at"] == updated.updated_at


def test_filters_by_user_and_prompt(site: Site) -> None:
    """?user= sees only that user's prompts, ?prompt= only that prompt; unfiltered sees all."""
    other = svc.create_user(site.db, unique_email(), "otto")
    url = site.server.ws_url
    with (
        ws_connect(url) as everyone,
        ws_connect(f"{url}?user={other.id}") as by_user,
        ws_connect(f"{url}?prompt={site.prompt.id}") as by_prompt,
    ):
        for ws in (everyone, by_user, by_prompt):
            ready(ws)
        theirs = svc.create_prompt(site.db, other.id, "t", "c", events=site.bus)
        site.edit("mine")
        svc.add_evaluation(site.db, theirs.id, 1, 0.5, events=site.bus)
        kinds = [next_of_type(everyone, "event")["kind"] for _ in range(3)]
        assert kinds == ["prompt.created", "prompt.edited", "evaluation.added"]
        got_user = [next_of_type(by_user, "event") for _ in range(2)]
        assert [m["ids"]["prompt"] for m in got_user] == [theirs.id, theirs.id]
        got_prompt = next_of_type(by_prompt, "event")
        assert got_prompt["ids"]["prompt"] == site.prompt.id
        with pytest.raises(TimeoutError):  # nothing else came through the filters
            by_user.recv(timeout=0.3)
        with pytest.raises(TimeoutError):
            by_prompt.recv(timeout=0.01)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?user=nope", "invalid user id"),
        ("?prompt=1&prompt=2", "more than once"),
        ("?owner=x", "unknown query parameter"),
        ("?key=afdb_secret", "not accepted in the URL"),
    ],
)
def test_bad_query_is_refused_with_4400(site: Site, query: str, message: str) -> None:
    """Invalid filters, unknown parameters and a key in the URL close with 4400 and a hint."""
    with ws_connect(site.server.ws_url + query) as ws:
        error, code = refused(ws)
    assert code == 4400 and error["code"] == "invalid_input" and message in error["message"]
    assert "afdb_secret" not in json.dumps(error)


def test_heartbeat_ping_and_unknown_messages(site: Site) -> None:
    """Idle clients get heartbeats; ping gets pong; an unknown message an error, not a close."""
    site.hub.heartbeat = 0.2
    with ws_connect(site.server.ws_url) as ws:
        ready(ws)
        assert next_of_type(ws, "heartbeat", 1.0)["at"]
        ws.send(json.dumps({"type": "ping"}))
        assert next_of_type(ws, "pong", 1.0)
        ws.send("hello?")
        assert next_of_type(ws, "error", 1.0)["error"]["code"] == "invalid_input"
        site.edit("still open")
        assert next_of_type(ws, "event", 1.0)["kind"] == "prompt.edited"


def test_clean_close_on_shutdown(site: Site) -> None:
    """Stopping the server closes connected clients with a going-away/restart code, promptly."""
    with ws_connect(site.server.ws_url) as ws:
        ready(ws)
        t0 = time.monotonic()
        site.server.stop()
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=5)
        assert ws.close_code in (1001, 1012) and time.monotonic() - t0 < 5
    assert not site.hub.clients


# --- slow clients -----------------------------------------------------------------------------


def _timed_edits(site: Site, n: int) -> float:
    """The median time of ``n`` edits (robust to the other load on a shared machine)."""
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        site.edit(f"content {i}")
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _tally(messages: list[dict[str, Any]], after: int) -> tuple[list[int], int]:
    """Versions of the events newer than ``after``, and the sum of the drop notices."""
    versions = [m["version"] for m in messages if m["type"] == "event" and m["version"] > after]
    return versions, sum(m["dropped"] for m in messages if m["type"] == "notice")


def test_slow_client_never_slows_writers_and_gets_a_drop_notice(tmp_path: Path) -> None:
    """A client that stops reading: N writes take about as long as without it; when it reads
    again it gets what fitted, then a drop notice, and delivered + dropped == N exactly (for
    the other, reading client too, which gets the newest event as well)."""
    n = 1000
    with start_site(tmp_path, sndbuf=8192, events_queue_size=64) as site:
        with ws_connect(site.server.ws_url) as fast:
            ready(fast)
            _timed_edits(site, 50)  # warm up
            baseline = _timed_edits(site, n)
            start_version = site.prompt.current_version + 50 + n
            _drain(fast)
            slow = StalledClient(site.server.ws_url)
            with_slow = _timed_edits(site, n)
            print(f"\nwrite p50: {baseline * 1e3:.3f} ms alone, {with_slow * 1e3:.3f} ms stalled")
            assert with_slow < 1.5 * baseline + 0.001
            fast_msgs = _drain(fast)
            slow_msgs = slow.read(timeout=1.0)
            for name, msgs in (("fast", fast_msgs), ("stalled", slow_msgs)):
                versions = [m["version"] for m in msgs if m["type"] == "event"]
                dropped = sum(m["dropped"] for m in msgs if m["type"] == "notice")
                print(f"{name} client: {len(versions)} delivered, {dropped} dropped")
                assert len(versions) + dropped == n
                assert versions == sorted(versions) and versions[-1] == start_version + n
            assert any(m["type"] == "notice" for m in slow_msgs)
            assert site.hub.stats()["dropped"] >= n - len(
                [m for m in slow_msgs if m["type"] == "event"]
            )
            slow.close()


def _drain(ws: ClientConnection) -> list[dict[str, Any]]:
    out = []
    while True:
        try:
            out.append(recv_json(ws, 0.5))
        except TimeoutError:
            return out


def test_client_that_stays_behind_is_closed_with_4408(tmp_path: Path) -> None:
    """A queue full for longer than stall_close: the server sends the error and closes with
    4408 (if the client reads within SEND_TIMEOUT; else it drops the connection) and counts
    the kick; the server stays responsive to others."""
    with start_site(tmp_path, sndbuf=8192) as site:
        url = site.server.ws_url
        hub, bus, event = site.hub, site.bus, _event(site)
        hub.stall_close = 0.3
        slow = StalledClient(url)
        deadline = time.monotonic() + 10
        while hub.kicked == 0 and time.monotonic() < deadline:
            for _ in range(100):
                bus.publish(event)
            time.sleep(0.05)
        assert hub.kicked == 1
        messages = slow.read(timeout=3.0)  # reading at once: the error frame gets through
        errors = [m["error"]["code"] for m in messages if m["type"] == "error"]
        assert errors == ["too_slow"] and slow.close_code == 4408 and slow.closed
        assert _wait(lambda: not hub.clients, 5)
        with ws_connect(url) as other:
            ready(other)
        slow.close()


def _event(site: Site) -> Any:
    from autoforge_data.events import Event

    return Event("prompt.edited", ids={"prompt": site.prompt.id, "user": site.user.id}, version=2)


def _wait(pred: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return bool(pred())


# --- API keys ---------------------------------------------------------------------------------


@pytest.fixture
def keyed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    """An app that requires API keys, with a short auth deadline."""
    monkeypatch.setattr(events_api, "AUTH_DEADLINE", 0.5)
    with start_site(tmp_path, api_auth="required") as s:
        yield s


def test_auth_required_refuses_missing_and_wrong_keys(keyed: Site) -> None:
    """No key within the deadline, a wrong key (header or message), a revoked key: 4401."""
    from autoforge_data.services import apikeys

    url = keyed.server.ws_url
    with ws_connect(url) as ws:  # says nothing
        error, code = refused(ws)
        assert code == 4401 and "no API key" in error["message"]
    wrong = "afdb_" + new_id() + "_" + "x" * 43
    with ws_connect(url, key=wrong) as ws:
        error, code = refused(ws)
        assert code == 4401 and error["code"] == "unauthorized"
    with ws_connect(url) as ws:
        ws.send(json.dumps({"type": "auth", "key": wrong}))
        assert refused(ws)[1] == 4401
    with ws_connect(url) as ws:
        ws.send(json.dumps({"type": "subscribe"}))
        assert refused(ws)[1] == 4401
    new = apikeys.create_key(keyed.db, "ws-revoked", "read")
    apikeys.revoke_key(keyed.db, new.key.id)
    with ws_connect(url, key=new.secret) as ws:
        error, code = refused(ws)
        assert code == 4401 and new.secret not in json.dumps(error)


def test_auth_with_header_or_first_message(keyed: Site) -> None:
    """A read key in the header or in the first message opens the stream; events stamped with
    the writer's key id arrive."""
    from autoforge_data.services import apikeys

    reader = apikeys.create_key(keyed.db, "ws-reader", "read")
    writer = apikeys.create_key(keyed.db, "ws-writer", "write")
    url = keyed.server.ws_url
    with ws_connect(url, key=reader.secret) as by_header, ws_connect(url) as by_message:
        assert ready(by_header)["key"] == reader.key.id
        by_message.send(json.dumps({"type": "auth", "key": reader.secret}))
        assert ready(by_message)["key"] == reader.key.id
        sink = events_api.sink(keyed.server.app, writer.key)
        svc.set_status(keyed.db, keyed.prompt.id, "active", events=sink)
        for ws in (by_header, by_message):
            msg = next_of_type(ws, "event", 1.0)
            assert msg["kind"] == "prompt.status_changed" and msg["data"] == {"status": "active"}
            assert msg["actor"] == f"key:{writer.key.id}"


# --- two instances over Redis -----------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.slow
def test_two_instances_over_redis_and_redis_killed(tmp_path: Path, redis_server: Redis) -> None:
    """An edit through instance A reaches a client on instance B (`afdb serve`, another
    process) within 1 s. Redis killed: writes on A still succeed and A's own clients still get
    events. Redis back: the buses reconnect and B gets A's edits again."""
    db_path = tmp_path / "shared.db"
    with start_site(tmp_path, redis_url=redis_server.url, database_url=str(db_path)) as a:
        env = {"AFDB_DATABASE_URL": str(db_path), "AFDB_REDIS_URL": redis_server.url}
        with ServeProcess(tmp_path, env | {"AFDB_API_AUTH": "off"}) as b:
            url_b = f"{b.ws_url}?prompt={a.prompt.id}"
            with ws_connect(a.server.ws_url) as on_a, ws_connect(url_b) as on_b:
                ready(on_a)
                ready(on_b)
                assert _wait(lambda: a.bus.state()["status"] == "ok", 5)
                t0 = time.monotonic()
                a.edit("v2")
                assert next_of_type(on_b, "event", 1.0)["version"] == 2
                assert time.monotonic() - t0 < 1.0
                assert next_of_type(on_a, "event", 1.0)["version"] == 2

                redis_server.kill()
                t0 = time.perf_counter()
                for i in range(10):
                    a.edit(f"offline {i}")
                assert time.perf_counter() - t0 < 2.0
                versions = [next_of_type(on_a, "event", 1.0)["version"] for _ in range(10)]
                assert versions == list(range(3, 13))
                assert _wait(lambda: a.bus.state()["status"] == "degraded", 3)

                redis_server.start()
                assert _wait(lambda: a.bus.state()["status"] == "ok", 10)
                got = None
                deadline = time.monotonic() + 8  # B's subscriber reconnects on its own backoff
                while got is None and time.monotonic() < deadline:
                    a.edit("back")
                    with contextlib.suppress(TimeoutError):
                        got = next_of_type(on_b, "event", 0.5)
                assert got is not None and got["version"] >= 3
                _drain(on_b)
                t0 = time.monotonic()
                latest = a.edit("and again").current_version
                assert next_of_type(on_b, "event", 1.0)["version"] == latest
                assert time.monotonic() - t0 < 1.0


def test_http_writes_reach_ws_clients(site: Site) -> None:
    """Edits, status changes and evaluations made over the HTTP API are streamed on /ws."""
    import httpx

    base = site.server.ws_url.replace("ws://", "http://").rsplit("/ws", 1)[0]
    with ws_connect(site.server.ws_url) as ws, httpx.Client(base_url=base, timeout=10) as http:
        ready(ws)
        pid = site.prompt.id
        assert http.patch(f"/api/v1/prompts/{pid}", json={"content": "v2"}).status_code == 200
        edited = next_of_type(ws, "event", 2.0)
        assert edited["kind"] == "prompt.edited" and edited["version"] == 2
        r = http.put(f"/api/v1/prompts/{pid}/status", json={"status": "active"})
        assert r.status_code == 200
        assert next_of_type(ws, "event", 2.0)["kind"] == "prompt.status_changed"
        body = {"version": 2, "score": 0.9}
        assert http.post(f"/api/v1/prompts/{pid}/evaluations", json=body).status_code == 201
        assert next_of_type(ws, "event", 2.0)["kind"] == "evaluation.added"
        created = http.post(
            "/api/v1/prompts", json={"owner_id": site.user.id, "title": "t", "content": "c"}
        )
        assert created.status_code == 201
        msg = next_of_type(ws, "event", 2.0)
        assert msg["kind"] == "prompt.created" and msg["ids"]["prompt"] == created.json()["id"]
