"""Remote branches: a real sqld's namespace fork; the Turso Platform API against a local fake."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from autoforge_data import cli
from autoforge_data.db import hrana, migrate
from autoforge_data.db.engine import Database
from autoforge_data.errors import (
    AfdbError,
    AuthError,
    ConfigError,
    Conflict,
    InvalidInput,
    NotFound,
    Unavailable,
)
from autoforge_data.ops.branch import (
    BranchOptions,
    check_remote,
    create_branch,
    delete_branch,
    list_branches,
)
from autoforge_data.ops.snapshot import _open_libsql
from autoforge_data.ops.sqld_admin import SqldAdmin, check_admin_url, namespace_of_url
from autoforge_data.ops.turso import TursoPlatform, database_of_url
from autoforge_data.services import prompts as svc
from autoforge_data.settings import Settings
from fake_turso import FakeTurso
from servers import Sqld, free_port, start_sqld

# --- sqld: namespace fork on a real server ---


@pytest.fixture(scope="module")
def ns_sqld(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sqld]:
    """A real sqld with --enable-namespaces and the admin API."""
    server = start_sqld(tmp_path_factory.mktemp("nssqld"), namespaces=True)
    try:
        yield server
    finally:
        server.stop()


def _sql(server: Sqld, namespace: str, *statements: str) -> list[tuple[Any, ...]]:
    """Run statements in one namespace with our Hrana driver; rows of the last one."""
    conn = hrana.connect(server.url, namespace=namespace, isolation_level=None)
    try:
        out: list[tuple[Any, ...]] = []
        for sql in statements:
            out = [tuple(r) for r in conn.execute(sql).fetchall()]
        return out
    finally:
        conn.close()


@pytest.fixture
def source_ns(ns_sqld: Sqld, request: pytest.FixtureRequest) -> str:
    """A fresh source namespace holding a schema stamp and 3 rows."""
    name = f"src{abs(hash(request.node.name)) % 10**8}"
    r = httpx.post(f"{ns_sqld.admin_url}/v1/namespaces/{name}/create", json={}, timeout=10)
    assert r.status_code == 200, r.text
    _sql(
        ns_sqld,
        name,
        "CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)",
        "INSERT INTO alembic_version VALUES ('0003')",
        "CREATE TABLE t (v TEXT)",
        "INSERT INTO t VALUES ('a'), ('b'), ('c')",
    )
    return name


def sqld_settings(tmp: Path, server: Sqld) -> Settings:
    """A profile whose database is on the sqld, with the admin API configured."""
    return Settings.load(
        "prod",
        base_dir=tmp,
        data_dir=tmp / "data",
        database_url=server.url,
        sqld_admin_url=server.admin_url,
    )


def test_sqld_fork_holds_the_data_and_never_shares_writes(
    ns_sqld: Sqld, source_ns: str, tmp_path: Path
) -> None:
    """The fork has the source's rows; later writes to either stay where they were made."""
    settings = sqld_settings(tmp_path, ns_sqld)
    record = create_branch(settings, BranchOptions("fork-a", source_namespace=source_ns))
    assert record.kind == "sqld"
    assert record.migration == "0003"
    assert record.row_counts["t"] == 3
    assert _sql(ns_sqld, "fork-a", "SELECT v FROM t ORDER BY v") == [("a",), ("b",), ("c",)]
    _sql(ns_sqld, "fork-a", "INSERT INTO t VALUES ('branch-only')")
    _sql(ns_sqld, source_ns, "INSERT INTO t VALUES ('source-only')")
    assert _sql(ns_sqld, source_ns, "SELECT count(*) FROM t WHERE v = 'branch-only'") == [(0,)]
    assert _sql(ns_sqld, "fork-a", "SELECT count(*) FROM t WHERE v = 'source-only'") == [(0,)]
    saved = json.loads((tmp_path / "data" / "branches" / "fork-a.json").read_text())
    assert saved["kind"] == "sqld"
    assert saved["use"].startswith("AFDB_DATABASE_URL=http://fork-a.")
    delete_branch(settings, "fork-a")
    with SqldAdmin(ns_sqld.admin_url) as admin:
        assert not admin.exists("fork-a")
        assert admin.exists(source_ns)  # the source is untouched
    assert list_branches(settings) == []


def test_sqld_conflicts_and_replace(ns_sqld: Sqld, source_ns: str, tmp_path: Path) -> None:
    """An existing namespace is a Conflict; --replace never replaces one we did not record."""
    settings = sqld_settings(tmp_path, ns_sqld)
    httpx.post(f"{ns_sqld.admin_url}/v1/namespaces/foreign/create", json={}, timeout=10)
    with pytest.raises(Conflict, match="already exists"):
        create_branch(settings, BranchOptions("foreign", source_namespace=source_ns))
    with pytest.raises(Conflict, match="not a branch recorded"):
        create_branch(settings, BranchOptions("foreign", source_namespace=source_ns, replace=True))
    create_branch(settings, BranchOptions("mine", source_namespace=source_ns))
    with pytest.raises(Conflict):
        create_branch(settings, BranchOptions("mine", source_namespace=source_ns))
    _sql(ns_sqld, source_ns, "INSERT INTO t VALUES ('d')")
    create_branch(settings, BranchOptions("mine", source_namespace=source_ns, replace=True))
    assert _sql(ns_sqld, "mine", "SELECT count(*) FROM t") == [(4,)]
    delete_branch(settings, "mine")


def test_sqld_errors_are_clear(ns_sqld: Sqld, source_ns: str, tmp_path: Path) -> None:
    """Unknown source, a name sqld cannot serve, --at, an unreachable admin API: one clear error."""
    settings = sqld_settings(tmp_path, ns_sqld)
    with pytest.raises(NotFound, match="doesn't exist"):
        create_branch(settings, BranchOptions("x1", source_namespace="nosuchns"))
    with pytest.raises(InvalidInput):
        create_branch(settings, BranchOptions("has.dot", source_namespace=source_ns))
    with pytest.raises(InvalidInput, match="--at"):
        at = datetime.now(UTC) - timedelta(minutes=1)
        create_branch(settings, BranchOptions("x2", source_namespace=source_ns, at=at))
    dead = Settings.load(
        "prod",
        base_dir=tmp_path,
        data_dir=tmp_path / "data",
        database_url=ns_sqld.url,
        sqld_admin_url=f"http://127.0.0.1:{free_port()}",
    )
    with pytest.raises(Unavailable) as info:
        create_branch(dead, BranchOptions("x3", source_namespace=source_ns))
    assert "AFDB_SQLD_ADMIN_URL" in (info.value.hint or "")
    assert not (tmp_path / "data" / "branches" / "x3.json").exists()


def test_sqld_list_check_marks_a_vanished_namespace(
    ns_sqld: Sqld, source_ns: str, tmp_path: Path
) -> None:
    """`branch list --check` asks sqld; a namespace deleted behind our back shows as missing."""
    settings = sqld_settings(tmp_path, ns_sqld)
    create_branch(settings, BranchOptions("gone", source_namespace=source_ns))
    with SqldAdmin(ns_sqld.admin_url) as admin:
        admin.delete("gone")
    records = list_branches(settings)
    check_remote(settings, records)
    assert [(r.name, r.status) for r in records] == [("gone", "missing")]
    delete_branch(settings, "gone")  # removes the stale record
    assert list_branches(settings) == []


def test_namespace_helpers() -> None:
    """The namespace is the host's first label (as sqld reads it); admin URLs are checked."""
    assert namespace_of_url("http://prod.db.internal:8080") == "prod"
    assert check_admin_url("http://127.0.0.1:9/") == "http://127.0.0.1:9"
    for bad in ("ftp://h", "http://u:p@127.0.0.1:9", "http://10.0.0.5:9"):
        with pytest.raises(ConfigError):
            check_admin_url(bad)


# --- Turso Cloud: the Platform API against a local fake ---

ORG = "acme"
API_TOKEN = "platform-token-e3b0c44298fc1c149afb"
DB_TOKEN = "database-token-5feceb66ffc86f38d952"


@pytest.fixture
def turso() -> Iterator[FakeTurso]:
    """The fake Platform API with one existing database, 'prod'."""
    fake = FakeTurso(org=ORG, token=API_TOKEN).start()
    fake.add_database("prod")
    try:
        yield fake
    finally:
        fake.stop()


def turso_settings(tmp: Path, fake: FakeTurso, **extra: Any) -> Settings:
    """A prod profile on Turso Cloud whose Platform API is the fake."""
    values: dict[str, Any] = {
        "database_url": f"libsql://prod-{ORG}.turso.io",
        "auth_token": DB_TOKEN,
        "turso_api_url": fake.url,
        "turso_org": ORG,
        "turso_api_token": API_TOKEN,
    }
    values.update(extra)
    return Settings.load("prod", base_dir=tmp, data_dir=tmp / "data", **values)


def test_turso_branch_is_a_database_seeded_from_the_source(
    turso: FakeTurso, tmp_path: Path
) -> None:
    """create sends name, group and a seed naming the source; the record says how to use it."""
    settings = turso_settings(tmp_path, turso)
    record = create_branch(settings, BranchOptions("dev-copy"))
    method, path, body, _headers = turso.requests[-1]
    assert (method, path) == ("POST", f"/v1/organizations/{ORG}/databases")
    assert body == {
        "name": "dev-copy",
        "group": "default",
        "seed": {"type": "database", "name": "prod"},
    }
    assert record.kind == "turso"
    assert record.location == f"dev-copy-{ORG}.turso.io"
    assert record.use.startswith(f"AFDB_DATABASE_URL=libsql://dev-copy-{ORG}.turso.io")
    assert turso.databases["dev-copy"]["seed"] == {"type": "database", "name": "prod"}


def test_turso_branch_at_a_point_in_time(turso: FakeTurso, tmp_path: Path) -> None:
    """--at becomes the seed's RFC 3339 UTC timestamp."""
    settings = turso_settings(tmp_path, turso)
    at = datetime(2026, 11, 27, 9, 30, 15, tzinfo=UTC)
    create_branch(settings, BranchOptions("pitr", at=at))
    assert turso.requests[-1][2]["seed"]["timestamp"] == "2026-11-27T09:30:15Z"


def test_turso_errors_map_to_clear_messages_without_the_token(
    turso: FakeTurso, tmp_path: Path
) -> None:
    """401, 404, 409 and an unreachable API: our error types with hints; never the token."""
    errors: list[AfdbError] = []
    turso.add_database("taken")
    cases = [
        (turso_settings(tmp_path, turso), BranchOptions("taken"), Conflict),
        (turso_settings(tmp_path, turso), BranchOptions("x", source_database="nope"), NotFound),
        (
            turso_settings(tmp_path, turso, turso_api_token="wrong-" + API_TOKEN),
            BranchOptions("y"),
            AuthError,
        ),
        (turso_settings(tmp_path, turso, turso_group="nogroup"), BranchOptions("z"), NotFound),
        (
            turso_settings(tmp_path, turso, turso_api_url=f"http://127.0.0.1:{free_port()}"),
            BranchOptions("w"),
            Unavailable,
        ),
    ]
    for settings, opts, kind in cases:
        with pytest.raises(kind) as info:
            create_branch(settings, opts)
        assert info.value.hint
        errors.append(info.value)
    for err in errors:
        assert API_TOKEN not in err.one_line()
        assert DB_TOKEN not in err.one_line()
    assert not (tmp_path / "data" / "branches").exists() or not any(
        (tmp_path / "data" / "branches").glob("*.json")
    )
    api = TursoPlatform(turso.url, ORG, turso_settings(tmp_path, turso).turso_api_token)
    assert API_TOKEN not in repr(api)
    api.close()


def test_remote_forks_refuse_anonymize_and_schema_only(turso: FakeTurso, tmp_path: Path) -> None:
    """A server-side fork is a full copy: asking to anonymize it fails before any call."""
    settings = turso_settings(tmp_path, turso)
    for opts in (BranchOptions("a", anonymize=True), BranchOptions("s", schema_only=True)):
        with pytest.raises(InvalidInput, match="not on a turso fork"):
            create_branch(settings, opts)
    assert turso.requests == []


def test_turso_needs_org_and_token(turso: FakeTurso, tmp_path: Path) -> None:
    """Without AFDB_TURSO_ORG or the API token there is nothing to call: ConfigError."""
    for missing in ({"turso_org": None}, {"turso_api_token": None}):
        settings = turso_settings(tmp_path, turso, **missing)
        with pytest.raises(ConfigError):
            create_branch(settings, BranchOptions("n", backend="turso"))
    with pytest.raises(ConfigError, match="https"):
        TursoPlatform(
            "http://api.example.com", ORG, turso_settings(tmp_path, turso).turso_api_token
        )


def test_turso_list_check_and_delete(turso: FakeTurso, tmp_path: Path) -> None:
    """list --check sees a database deleted elsewhere; delete removes database and record."""
    settings = turso_settings(tmp_path, turso)
    create_branch(settings, BranchOptions("b1"))
    create_branch(settings, BranchOptions("b2"))
    del turso.databases["b2"]
    records = list_branches(settings)
    check_remote(settings, records)
    assert {r.name: r.status for r in records} == {"b1": "ok", "b2": "missing"}
    delete_branch(settings, "b1")
    delete_branch(settings, "b2")
    assert "b1" not in turso.databases
    assert "prod" in turso.databases  # never the source
    assert list_branches(settings) == []
    assert database_of_url(f"libsql://prod-{ORG}.aws-eu-west-1.turso.io", ORG) == "prod"


def test_turso_cli(
    turso: FakeTurso,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`afdb branch create --from prod` with the profile in .env.prod; output has no token."""
    (tmp_path / ".env.prod").write_text(
        f"AFDB_DATABASE_URL=libsql://prod-{ORG}.turso.io\nAFDB_AUTH_TOKEN={DB_TOKEN}\n"
        f"AFDB_TURSO_API_URL={turso.url}\nAFDB_TURSO_ORG={ORG}\nAFDB_TURSO_API_TOKEN={API_TOKEN}\n"
    )
    (tmp_path / ".env").write_text(
        f"AFDB_TURSO_API_URL={turso.url}\nAFDB_TURSO_ORG={ORG}\nAFDB_TURSO_API_TOKEN={API_TOKEN}\n"
    )
    codes = []
    for argv in (
        ["branch", "create", "cli-copy", "--from", "prod", "--json"],
        ["branch", "list", "--check"],
        ["branch", "delete", "cli-copy", "--yes"],
        ["branch", "create", "cli-copy2", "--from", "prod", "--source-db", "missing"],
    ):
        try:
            codes.append(cli.run(argv))
        except SystemExit as exc:
            codes.append(int(exc.code or 0))
    out = capsys.readouterr()
    assert codes == [0, 0, 0, 2]
    assert API_TOKEN not in out.out + out.err
    assert DB_TOKEN not in out.out + out.err
    assert "could not find database with name missing" in out.err
    assert "cli-copy" not in turso.databases


def test_branch_of_an_embedded_replica_is_a_local_anonymizable_copy(
    fresh_sqld: Sqld, tmp_path: Path
) -> None:
    """A replica profile without an admin API branches its synced local file (anonymize works)."""
    remote = Settings.load("prod", base_dir=tmp_path, database_url=fresh_sqld.url)
    with Database(remote) as db:
        migrate.upgrade(db)
        svc.create_user(db, "replicated@example.com", "rep")
    replica = Settings.load(
        "prod",
        base_dir=tmp_path,
        data_dir=tmp_path / "data",
        database_url=str(tmp_path / "replica" / "local.db"),
        sync_url=fresh_sqld.url,
    )
    record = create_branch(replica, BranchOptions("from-replica", anonymize=True))
    assert record.kind == "embedded"
    assert record.row_counts["users"] == 1
    with _open_libsql(Path(record.location)) as conn:
        emails = [r[0] for r in conn.execute("SELECT email FROM users").fetchall()]
    assert len(emails) == 1
    assert emails[0].endswith("@example.invalid")
