"""API keys: stored hashed, scopes ordered, expiry and revocation, the CLI, the HTTP policy."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api_helpers import prepare
from autoforge_data.api.app import create_app
from autoforge_data.api.auth import auth_required
from autoforge_data.cli import run
from autoforge_data.db import migrate
from autoforge_data.db.engine import Database
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.errors import InvalidInput, NotFound
from autoforge_data.services import apikeys
from autoforge_data.services.apikeys import InvalidKey
from conftest import settings_for


@pytest.fixture
def edb(tmp_path: Path) -> Iterator[Database]:
    """A migrated embedded database."""
    database = Database(settings_for("embedded", tmp_path))
    try:
        migrate.upgrade(database)
        yield database
    finally:
        database.close()


def test_secret_is_stored_only_as_a_hash(edb: Database) -> None:
    """The table holds sha256 of the key, never the key; repr hides the secret."""
    new = apikeys.create_key(edb, "ci", "write")
    assert new.secret.startswith("afdb_") and len(new.secret) == apikeys.KEY_LENGTH
    assert new.secret not in repr(new)
    with UnitOfWork(edb) as uow:
        rows = uow.fetchall("SELECT * FROM api_keys")
    assert len(rows) == 1
    flat = " ".join(str(v) for v in rows[0])
    assert new.secret not in flat
    assert apikeys.hash_key(new.secret) in flat


def test_authenticate_accepts_the_key_and_refuses_others(edb: Database) -> None:
    """The right key authenticates; a changed character, a foreign id or junk does not."""
    new = apikeys.create_key(edb, "reader", "read")
    key = apikeys.authenticate(edb, new.secret)
    assert key.id == new.key.id and key.scope == "read"
    other = apikeys.create_key(edb, "other", "read")
    tampered = new.secret[:-1] + ("A" if new.secret[-1] != "A" else "B")
    swapped = new.secret[: len("afdb_") + 26] + other.secret[len("afdb_") + 26 :]
    for bad in (tampered, swapped, "", "afdb_", "Bearer x", "x" * apikeys.KEY_LENGTH):
        with pytest.raises(InvalidKey):
            apikeys.authenticate(edb, bad)


def test_scopes_are_ordered(edb: Database) -> None:
    """read < write < admin: a key allows its scope and the ones below."""
    admin = apikeys.create_key(edb, "a", "admin").key
    read = apikeys.create_key(edb, "r", "read").key
    assert admin.allows("read") and admin.allows("write") and admin.allows("admin")
    assert read.allows("read") and not read.allows("write")
    with pytest.raises(InvalidInput):
        apikeys.create_key(edb, "x", "root")


def test_expired_and_revoked_keys_are_refused(edb: Database) -> None:
    """A key past its expiry, or revoked, no longer authenticates; revoking is idempotent."""
    new = apikeys.create_key(edb, "short", "read", expires="1h")
    apikeys.authenticate(edb, new.secret)
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat(timespec="milliseconds")
    with UnitOfWork(edb, write=True) as uow:
        uow.execute("UPDATE api_keys SET expires_at = ? WHERE id = ?", (past, new.key.id))
        uow.commit()
    with pytest.raises(InvalidKey, match="expired"):
        apikeys.authenticate(edb, new.secret)
    live = apikeys.create_key(edb, "live", "read")
    first = apikeys.revoke_key(edb, live.key.id)
    assert apikeys.revoke_key(edb, live.key.id).revoked_at == first.revoked_at
    with pytest.raises(InvalidKey, match="revoked"):
        apikeys.authenticate(edb, live.secret)
    with pytest.raises(NotFound):
        apikeys.revoke_key(edb, "01" * 13)


def test_last_used_is_written_at_most_once_a_minute(edb: Database) -> None:
    """The first use records last_used_at; uses right after do not write again."""
    new = apikeys.create_key(edb, "busy", "read")
    apikeys.authenticate(edb, new.secret)
    first = apikeys.get_key(edb, new.key.id).last_used_at
    assert first is not None
    apikeys.authenticate(edb, new.secret)
    assert apikeys.get_key(edb, new.key.id).last_used_at == first


@pytest.mark.parametrize("bad", ["0d", "yesterday", "2000-01-01T00:00:00Z", "5y"])
def test_bad_expiry_is_refused(edb: Database, bad: str) -> None:
    """Durations must be positive m/h/d/w and times in the future."""
    with pytest.raises(InvalidInput):
        apikeys.create_key(edb, "x", "read", expires=bad)


def test_cli_create_list_revoke(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`afdb apikey create` prints the secret once on stdout; list never shows it; revoke works."""
    monkeypatch.setenv("AFDB_DATA_DIR", str(tmp_path / "data"))
    assert run(["init"]) == 0
    capsys.readouterr()
    assert run(["apikey", "create", "--scope", "write", "--name", "ci", "--expires", "30d"]) == 0
    out = capsys.readouterr()
    secret = out.out.strip()
    assert secret.startswith("afdb_") and secret not in out.err
    assert run(["apikey", "list", "--json"]) == 0
    listed = capsys.readouterr().out
    assert secret not in listed and '"scope": "write"' in listed
    key_id = secret[5:31]
    assert run(["apikey", "revoke", key_id]) == 0
    assert "revoked" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        run(["apikey", "create", "--scope", "root", "--name", "x"])
    assert exc.value.code == 2
    assert "unknown scope" in capsys.readouterr().err


def test_auth_policy(tmp_path: Path) -> None:
    """auto: off only for dev on loopback; required and off are what they say."""
    assert not auth_required(settings_for("embedded", tmp_path))
    assert auth_required(settings_for("embedded", tmp_path, host="0.0.0.0"))  # noqa: S104
    assert auth_required(settings_for("embedded", tmp_path, api_auth="required"))
    assert not auth_required(settings_for("embedded", tmp_path, host="10.0.0.1", api_auth="off"))


def test_http_401_403_and_scopes(edb: Database, caplog: pytest.LogCaptureFixture) -> None:
    """No or a bad key: 401 with WWW-Authenticate; read key on a write route: 403; write: 201;
    no key appears in any log record."""
    caplog.set_level("DEBUG")
    prepare(edb)
    settings = edb.settings.model_copy(update={"api_auth": "required"})
    read = apikeys.create_key(edb, "r", "read").secret
    write = apikeys.create_key(edb, "w", "write").secret
    with TestClient(create_app(settings, db=edb)) as client:
        r = client.get("/api/v1/users")
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["error"]["code"] == "unauthorized"
        bad = client.get("/api/v1/users", headers={"Authorization": "Bearer " + read[:-2] + "zz"})
        assert bad.status_code == 401 and read not in bad.text
        auth = {"Authorization": f"Bearer {read}"}
        assert client.get("/api/v1/users", headers=auth).status_code == 200
        body = {"email": "k@example.com", "username": "k"}
        denied = client.post("/api/v1/users", json=body, headers=auth)
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"
        ok = client.post("/api/v1/users", json=body, headers={"Authorization": f"Bearer {write}"})
        assert ok.status_code == 201
        ops = client.get("/api/v1/ops/cache", headers={"Authorization": f"Bearer {write}"})
        assert ops.status_code == 403
        assert client.get("/health/live").status_code == 200  # health needs no key
    for secret in (read, write):
        assert secret not in caplog.text and secret[31:] not in caplog.text
