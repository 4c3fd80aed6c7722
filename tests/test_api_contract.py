"""The HTTP API contract, run against the embedded default and against remote sqld + Redis."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api_helpers import api_client, prepare
from autoforge_data.db.engine import Database
from autoforge_data.ids import new_id
from conftest import settings_for
from servers import start_redis, start_sqld

V1 = "/api/v1"


@pytest.fixture(scope="module", params=["embedded", "remote+redis"])
def client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """An app with an admin key over an embedded file, or over its own sqld and redis-server."""
    tmp = tmp_path_factory.mktemp(request.param.replace("+", "_"))
    servers = []
    if request.param == "embedded":
        settings = settings_for("embedded", tmp)
    else:
        sqld, redis = start_sqld(tmp), start_redis(tmp)
        servers = [sqld, redis]
        settings = settings_for("remote", tmp, sqld, redis_url=redis.url)
    db = Database(settings)
    try:
        prepare(db)
        with api_client(settings, db) as c:
            yield c
    finally:
        db.close()
        for server in servers:
            server.stop()


def _user(client: TestClient) -> dict[str, Any]:
    r = client.post(
        f"{V1}/users", json={"email": f"u{uuid.uuid4().hex[:10]}@ex.io", "username": "u"}
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def _prompt(client: TestClient, owner: str, **extra: Any) -> dict[str, Any]:
    body = {"owner_id": owner, "title": "A prompt", "content": "some text", **extra}
    r = client.post(f"{V1}/prompts", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _error(r: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"code", "message", "hint"}
    if code is not None:
        assert err["code"] == code
    return dict(err)


def test_users_create_get_list(client: TestClient) -> None:
    """A created user reads back; a taken email is 409; bad input 422; unknown ids 404."""
    user = _user(client)
    assert client.get(f"{V1}/users/{user['id']}").json() == user
    again = client.post(f"{V1}/users", json={"email": user["email"], "username": "x"})
    _error(again, 409, "conflict")
    _error(client.post(f"{V1}/users", json={"email": "nope", "username": "x"}), 422)
    _error(client.post(f"{V1}/users", json={"email": "a@b.io", "username": "bad name!"}), 422)
    _error(client.get(f"{V1}/users/{new_id()}"), 404, "not_found")
    _error(client.get(f"{V1}/users/..%2Fetc"), 404)
    _user(client)
    page = client.get(f"{V1}/users", params={"limit": 1}).json()
    assert len(page["items"]) == 1 and page["next_cursor"]


def test_prompt_lifecycle(client: TestClient) -> None:
    """Create, edit (new version), stale edit 409, status, history, get."""
    owner = _user(client)["id"]
    p = _prompt(client, owner, metadata={"team": "core"})
    assert p["current_version"] == 1 and p["status"] == "draft"
    edited = client.patch(
        f"{V1}/prompts/{p['id']}", json={"content": "new text", "expected_version": 1}
    )
    assert edited.status_code == 200 and edited.json()["current_version"] == 2
    stale = client.patch(f"{V1}/prompts/{p['id']}", json={"content": "x", "expected_version": 1})
    _error(stale, 409, "conflict")
    _error(client.patch(f"{V1}/prompts/{p['id']}", json={}), 422)
    r = client.put(f"{V1}/prompts/{p['id']}/status", json={"status": "active"})
    assert r.json()["status"] == "active"
    _error(client.put(f"{V1}/prompts/{p['id']}/status", json={"status": "gone"}), 422)
    got = client.get(f"{V1}/prompts/{p['id']}").json()
    assert got["content"] == "new text" and got["status"] == "active"
    history = client.get(f"{V1}/prompts/{p['id']}/versions").json()
    assert [v["content"] for v in history] == ["some text", "new text"]
    _error(client.get(f"{V1}/prompts/{new_id()}/versions"), 404)
    _error(
        client.post(f"{V1}/prompts", json={"owner_id": new_id(), "title": "t", "content": "c"}), 404
    )


def test_prompt_list_keyset_paging(client: TestClient) -> None:
    """Pages of 2 walk all 5 prompts newest first, no repeats; a bad cursor is 422."""
    owner = _user(client)["id"]
    made = [_prompt(client, owner, title=f"p{i}")["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"owner": owner, "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"{V1}/prompts", params=params).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(made))
    _error(client.get(f"{V1}/prompts", params={"owner": owner, "cursor": "zzz"}), 422)
    _error(client.get(f"{V1}/prompts", params={"owner": owner, "limit": 0}), 422)
    _error(client.get(f"{V1}/prompts"), 422)  # owner is required


def test_evaluations(client: TestClient) -> None:
    """Scores are recorded per version and listed newest first; bad scores and versions 4xx."""
    p = _prompt(client, _user(client)["id"])
    url = f"{V1}/prompts/{p['id']}/evaluations"
    first = client.post(url, json={"version": 1, "score": 0.5, "metrics": {"bleu": 0.1}})
    assert first.status_code == 201
    second = client.post(url, json={"version": 1, "score": 0.75})
    assert [e["id"] for e in client.get(url).json()["items"]] == [
        second.json()["id"],
        first.json()["id"],
    ]
    _error(client.post(url, json={"version": 9, "score": 1.0}), 404)
    nan = client.post(
        url, content=b'{"version": 1, "score": NaN}', headers={"content-type": "application/json"}
    )
    _error(nan, 422, "invalid_input")
    _error(client.post(url, json={"version": 1, "score": 1, "extra": 1}), 422)


def test_search_finds_writes_at_once(client: TestClient) -> None:
    """A prompt is found right after it is created and after an edit; filters apply."""
    owner = _user(client)["id"]
    word = "zq" + uuid.uuid4().hex[:8]
    p = _prompt(client, owner, content=f"explain {word} clearly", metadata={"lang": "en"})
    for mode in ("keyword", "hybrid", "vector"):
        hits = client.get(f"{V1}/search", params={"q": f"explain {word} clearly", "mode": mode})
        assert hits.status_code == 200
        assert p["id"] in [h["prompt_id"] for h in hits.json()["items"]], mode
    params: dict[str, Any] = {"q": word, "mode": "keyword", "owner": owner}
    assert client.get(f"{V1}/search", params=params).json()["items"][0]["prompt_id"] == p["id"]
    assert client.get(f"{V1}/search", params={**params, "status": "active"}).json()["items"] == []
    assert client.get(f"{V1}/search", params={**params, "meta.lang": "de"}).json()["items"] == []
    assert (
        len(client.get(f"{V1}/search", params={**params, "meta.lang": "en"}).json()["items"]) == 1
    )
    other = "zq" + uuid.uuid4().hex[:8]
    client.patch(f"{V1}/prompts/{p['id']}", json={"content": f"now about {other}"})
    hits = client.get(f"{V1}/search", params={"q": other, "mode": "keyword"}).json()["items"]
    assert hits[0]["prompt_id"] == p["id"] and hits[0]["version"] == 2
    vec = client.get(f"{V1}/search", params={"q": f"now about {other}", "mode": "vector"})
    assert vec.json()["items"][0]["prompt_id"] == p["id"]


@pytest.mark.parametrize(
    "params",
    [
        {"q": "x", "k": 0},
        {"q": "x", "k": 5000},
        {"q": "x", "mode": "fuzzy"},
        {"q": ""},
        {"q": "x", "created_after": "not a date"},
        {"q": "x", "status": "gone"},
        {"q": "x", "meta.bad-key!": "1"},
    ],
)
def test_search_bad_input_is_422(client: TestClient, params: dict[str, Any]) -> None:
    """Every malformed search parameter is a 422 in the error shape."""
    _error(client.get(f"{V1}/search", params=params), 422)


def test_vectors_upsert_query_delete(client: TestClient) -> None:
    """Raw vectors: stored, found by query, deleted; wrong dimension, NaN, unknown model 4xx."""
    p = _prompt(client, _user(client)["id"])
    vec = [0.0] * 384
    vec[7] = 1.0
    put = client.put(
        f"{V1}/vectors",
        json={"model": "hash-384", "items": [{"prompt_id": p["id"], "vector": vec}]},
    )
    assert put.json() == {"model": "hash-384", "count": 1}
    hits = client.post(f"{V1}/vectors/query", json={"vector": vec, "k": 1}).json()["items"]
    assert hits[0]["prompt_id"] == p["id"] and hits[0]["score"] > 0.99
    bad = {"model": "hash-384", "items": [{"prompt_id": p["id"], "vector": [1.0, 2.0]}]}
    _error(client.put(f"{V1}/vectors", json=bad), 422)
    unknown = {"model": "no-such-model", "items": [{"prompt_id": p["id"], "vector": vec}]}
    _error(client.put(f"{V1}/vectors", json=unknown), 404)
    nan = (
        b'{"model": "hash-384", "items": [{"prompt_id": "%s", "vector": [NaN]}]}' % p["id"].encode()
    )
    _error(
        client.put(f"{V1}/vectors", content=nan, headers={"content-type": "application/json"}), 422
    )
    huge = {"model": "hash-384", "items": [{"prompt_id": p["id"], "vector": [1e300] * 384}]}
    _error(client.put(f"{V1}/vectors", json=huge), 422)
    _error(client.post(f"{V1}/vectors/query", json={"vector": [1.0] * 3}), 422)
    _error(client.post(f"{V1}/vectors/query", json={"vector": vec, "model": "nope"}), 404)
    assert client.delete(f"{V1}/vectors/hash-384/{p['id']}").status_code == 200
    _error(client.delete(f"{V1}/vectors/hash-384/{p['id']}"), 404)
    after = client.post(f"{V1}/vectors/query", json={"vector": vec, "k": 5}).json()["items"]
    assert p["id"] not in [h["prompt_id"] for h in after]


def test_errors_have_one_shape(client: TestClient) -> None:
    """Routing 404/405, bad JSON, oversized bodies (declared and chunked) all use the shape."""
    _error(client.get("/api/v1/nothing-here"), 404, "not_found")
    _error(client.delete(f"{V1}/users"), 405, "method_not_allowed")
    bad_json = client.post(
        f"{V1}/users", content=b"{not json", headers={"content-type": "application/json"}
    )
    _error(bad_json, 422, "invalid_input")
    _error(client.post(f"{V1}/users", content=b"x" * 2_000_000), 413, "too_large")

    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b" " * 65_536

    _error(client.post(f"{V1}/users", content=chunks()), 413, "too_large")


def test_ops_routes(client: TestClient) -> None:
    """Admin routes: cache stats and flush, index stats and rebuild."""
    stats = client.get(f"{V1}/ops/cache").json()
    assert "hit_ratio" in stats and "backend" in stats
    assert client.post(f"{V1}/ops/cache/flush", params={"kind": "search"}).status_code == 200
    _error(client.post(f"{V1}/ops/cache/flush", params={"kind": "Bad Kind"}), 422)
    index = client.get(f"{V1}/ops/index").json()
    assert index["model"] == "hash-384" and index["vectors"] >= 0
    rebuilt = client.post(f"{V1}/ops/index/rebuild")
    assert rebuilt.status_code == 200 and rebuilt.json()["vectors"] == index["vectors"]


def test_openapi_is_served(client: TestClient) -> None:
    """The schema lists every resource and the bearer scheme."""
    schema = client.get("/openapi.json").json()
    for path in (
        "/api/v1/users",
        "/api/v1/prompts/{prompt_id}",
        "/api/v1/search",
        "/api/v1/vectors",
    ):
        assert path in schema["paths"]
    assert "HTTPBearer" in schema["components"]["securitySchemes"]


def test_backups_create_and_list(client: TestClient) -> None:
    """An admin takes a backup over HTTP and finds it in the list, without storage paths."""
    made = client.post(f"{V1}/ops/backups", json={"name": f"api-{uuid.uuid4().hex[:8]}"})
    if client.app.state.db.mode.value == "remote":  # type: ignore[attr-defined]
        _error(made, 409, "conflict")  # sqld has no file to snapshot: said clearly, a 4xx
        return
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["raw_size_bytes"] > 0 and body["migration"]
    listed = client.get(f"{V1}/ops/backups")
    assert listed.status_code == 200
    assert body["name"] in [b["name"] for b in listed.json()]
    assert "path" not in listed.text
    _error(client.post(f"{V1}/ops/backups", json={"name": "../escape"}), 422)


def test_strict_query_parameters(client: TestClient) -> None:
    """?k=1&k=5 and unknown names are 422 (FastAPI alone would keep the last, or ignore);
    repeated status is a list; meta.* is the search filter."""
    _error(client.get(f"{V1}/users", params={"limt": 5}), 422)
    assert client.get(f"{V1}/search", params={"q": "x", "meta.topic": "sql"}).status_code == 200
    _error(client.get(f"{V1}/search", params=[("q", "x"), ("k", "1"), ("k", "5")]), 422)
    ok = client.get(f"{V1}/search", params=[("q", "x"), ("status", "draft"), ("status", "active")])
    assert ok.status_code == 200


def test_concurrent_writes_are_all_searchable(client: TestClient) -> None:
    """Writes answered concurrently (their embeddings batched) are each found right after."""
    owner = _user(client)["id"]
    words = ["zq" + uuid.uuid4().hex[:8] for _ in range(12)]
    made: dict[str, str] = {}

    def create(word: str) -> None:
        made[word] = _prompt(client, owner, content=f"about {word} only")["id"]

    threads = [threading.Thread(target=create, args=(w,)) for w in words]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(made) == len(words)
    for word, pid in made.items():
        hits = client.get(f"{V1}/search", params={"q": f"about {word} only", "mode": "vector"})
        assert hits.json()["items"][0]["prompt_id"] == pid
