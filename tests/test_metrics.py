"""/metrics: what it measures, bounded label sets whatever the traffic, nothing secret in it."""

from __future__ import annotations

import uuid
from pathlib import Path

from fastapi.testclient import TestClient

from autoforge_data.api.app import create_app
from autoforge_data.api.stats import histogram_summary
from autoforge_data.db.engine import Database
from autoforge_data.observability import Observability, statement_kind, subscribe_statements
from autoforge_data.services import prompts as svc
from conftest import settings_for
from obs_helpers import app_client, samples, total, value
from servers import Redis

CANARY = "canary-secret-9d2e7b"


def _user(client: TestClient) -> str:
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    r = client.post("/api/v1/users", json={"email": email, "username": "obs"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_series_stay_bounded_under_hostile_traffic(tmp_path: Path) -> None:
    """Hundreds of distinct paths, ids, queries, methods and errors: under 1,000 series, and
    no raw path or query text in any label."""
    settings = settings_for("embedded", tmp_path)
    with Database(settings) as db, app_client(settings, db) as client:
        owner = _user(client)
        markers = []
        for i in range(150):
            marker = uuid.uuid4().hex
            markers.append(marker)
            client.get(f"/no/such/{marker}")  # 404, unmatched
            client.get(f"/api/v1/prompts/{marker}")  # 404 through a template
            client.get("/api/v1/search", params={"q": f"query {marker}", "k": i % 20 + 1})
            client.get("/api/v1/search", params={"q": "", "k": -i})  # 422
            client.request("BREW", f"/coffee/{marker}")  # a method nobody routes
            if i % 10 == 0:
                body = {"owner_id": owner, "title": f"t {marker}", "content": f"c {marker}"}
                assert client.post("/api/v1/prompts", json=body).status_code == 201
                client.post("/api/v1/prompts", json={"owner_id": marker})  # 422
                client.delete(f"/api/v1/prompts/{marker}")  # 405 on a known path
        text = client.get("/metrics").text
    series = samples(text)
    assert 100 < len(series) < 1000, len(series)
    assert not any(m in text for m in markers)
    requests = [lab for n, lab, _ in series if n == "afdb_http_requests_total"]
    routes = {(lab["method"], lab["route"]) for lab in requests}
    assert ("GET", "/api/v1/prompts/{prompt_id}") in routes
    assert ("other", "unmatched") in routes


def test_statement_latency_by_kind_and_pools(tmp_path: Path) -> None:
    """Writes through the use cases and the engine's own queries land in their kinds."""
    settings = settings_for("embedded", tmp_path)
    with Database(settings) as db, app_client(settings, db) as client:
        count = "afdb_db_statement_duration_seconds_count"
        before = value(client.get("/metrics").text, count, kind="insert") or 0.0
        user = svc.create_user(db, f"{uuid.uuid4().hex[:10]}@example.com", "kinds")
        svc.create_prompt(db, user.id, "kinds", "statement kinds")
        text = client.get("/metrics").text
        assert (value(text, count, kind="insert") or 0) >= before + 2
        assert (value(text, count, kind="select") or 0) > 0
        kinds = {lab["kind"] for n, lab, _ in samples(text) if n == count}
        assert kinds <= {"select", "insert", "update", "delete", "other"}
        assert value(text, "afdb_db_pool_connections", pool="all", state="size") == 8
        assert (value(text, "afdb_wal_bytes") or 0) > 0


def test_search_cache_and_embedding_metrics(tmp_path: Path, redis_server: Redis) -> None:
    """A repeated search is a cache hit; index latency, candidates and embedding time exist."""
    settings = settings_for("embedded", tmp_path, redis_url=redis_server.url)
    with Database(settings) as db, app_client(settings, db) as client:
        owner = _user(client)
        for title in ("Release notes writer", "Meeting minutes", "SQL reviewer"):
            body = {"owner_id": owner, "title": title, "content": f"{title}: do it well"}
            assert client.post("/api/v1/prompts", json=body).status_code == 201
        for _ in range(3):
            r = client.get("/api/v1/search", params={"q": "write release notes", "mode": "vector"})
            assert r.status_code == 200 and r.json()["items"]
        text = client.get("/metrics").text
        assert total(text, "afdb_cache_events_total", event="hit") >= 2
        assert total(text, "afdb_vector_search_duration_seconds_count", backend="memory") >= 1
        assert total(text, "afdb_vector_candidates_scanned_sum", backend="memory") >= 3
        assert total(text, "afdb_embedding_duration_seconds_count", model="hash-384") >= 1
        stats = client.get("/api/v1/stats").json()
        assert stats["cache"]["hits"] >= 2 and 0 < stats["cache"]["hit_ratio"] <= 1
        assert stats["search"]["count"] >= 1
        assert stats["health"]["checks"]["cache"]["backend"] == "redis"


def test_no_secret_in_metrics_stats_or_page(tmp_path: Path) -> None:
    """Secrets in the settings never reach /metrics, /api/v1/stats, health or the page."""
    settings = settings_for("embedded", tmp_path, openai_api_key=CANARY, backup_hmac_key=CANARY)
    with Database(settings) as db, app_client(settings, db) as client:
        bodies = [
            client.get("/metrics").text,
            client.get("/api/v1/stats").text,
            client.get("/health/ready").text,
            client.get("/", headers={"accept": "text/html"}).text,
        ]
    for body in bodies:
        assert CANARY not in body
        assert str(tmp_path) not in body


def test_each_app_has_its_own_registry(tmp_path: Path) -> None:
    """Two apps in one process count their own requests; a stopped app stops counting."""
    settings = settings_for("embedded", tmp_path)
    with Database(settings) as db, app_client(settings, db, search=False) as first:
        for _ in range(5):
            first.get("/health/live")
        with TestClient(create_app(settings, db=db)) as second:
            second.get("/health/live")
            name, live = "afdb_http_request_duration_seconds_count", "/health/live"
            one = value(first.get("/metrics").text, name, method="GET", route=live)
            two = value(second.get("/metrics").text, name, method="GET", route=live)
        assert (one, two) == (5.0, 1.0)


def test_statement_subscription_ends() -> None:
    """After unsubscribing, an Observability no longer sees unit-of-work statements."""
    obs = Observability()
    unsubscribe = subscribe_statements(obs)
    from autoforge_data.observability import _dispatch

    _dispatch("insert", 0.001)
    unsubscribe()
    _dispatch("insert", 0.001)
    assert histogram_summary(obs.statement_latency, kind="insert")["count"] == 1


def test_statement_kinds_and_quantiles() -> None:
    """SQL and unit-of-work kinds map to five labels; quantiles interpolate like Prometheus."""
    assert statement_kind("  SELECT 1") == "select"
    assert statement_kind("with x as (select 1) select * from x") == "select"
    assert statement_kind("INSERT INTO t VALUES (1)") == "insert"
    assert statement_kind("begin") == "other" and statement_kind("commit") == "other"
    assert statement_kind("") == "other"
    obs = Observability()
    for _ in range(99):
        obs.observe_statement("select", 0.0007)  # bucket (0.0005, 0.001]
    obs.observe_statement("select", 3.0)  # bucket (2.5, 5]
    summary = histogram_summary(obs.statement_latency)
    assert summary["count"] == 100
    assert 0.5 < (summary["p50_ms"] or 0) <= 1.0
    assert 0.5 < (summary["p99_ms"] or 0) <= 1.0  # the 99th of 100 is still a fast one


def test_history_windows_show_only_their_own_traffic() -> None:
    """Each history point is the difference from the previous one: a slow first window does
    not hide a fast second one (a p99 since start would)."""
    from autoforge_data.api.stats import History

    obs = Observability()
    history = History(obs)
    for _ in range(50):
        obs.observe_statement("select", 2.0)  # a slow window
        obs.observe_request("GET", "/x", 200, 2.0)
    history.sample()
    for _ in range(500):
        obs.observe_statement("select", 0.0002)  # then a fast one
        obs.observe_request("GET", "/x", 200, 0.002)
    history.sample()
    slow, fast = history.points()[:2]
    assert (slow["statement_p99_ms"] or 0) > 1000
    assert (fast["statement_p99_ms"] or 0) < 1
    assert (fast["request_p99_ms"] or 0) <= 2.5
    assert fast["request_rate"] > 0 and slow["request_rate"] > 0
    assert fast["hit_ratio"] is None  # no cache lookups: no ratio, not 0
    assert (histogram_summary(obs.statement_latency)["p99_ms"] or 0) > 1000  # since start
