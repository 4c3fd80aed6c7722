"""Embedded branches: snapshot, schema only, anonymization, records, names, replace, delete, CLI."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from autoforge_data.db import migrate
from autoforge_data.db.engine import Database
from autoforge_data.errors import Busy, Conflict, InvalidInput, NotFound, SchemaError
from autoforge_data.ops.branch import (
    BranchOptions,
    create_branch,
    delete_branch,
    list_branches,
    parse_timestamp,
)
from autoforge_data.ops.snapshot import _open_libsql
from autoforge_data.services import prompts as svc
from autoforge_data.settings import Settings

PLANT = "zqplantedprod7731"  # one token: FTS5 indexes it as a single term
MODEL = "all-MiniLM-L6-v2"


def prod_settings(tmp: Path, **extra: Any) -> Settings:
    """The prod profile of a project rooted in ``tmp``."""
    return Settings.load("prod", base_dir=tmp, data_dir=tmp / "data", **extra)


def make_prod(tmp: Path, *, libsql: bool = False, prompts: int = 4) -> Settings:
    """A migrated prod database holding users, prompts, versions, evaluations with PLANT."""
    settings = prod_settings(tmp, **({"db_driver": "libsql"} if libsql else {}))
    db = Database(settings)
    try:
        migrate.upgrade(db)
        user = svc.create_user(
            db,
            f"{PLANT}@example.com",
            f"{PLANT}-name",
            clerk_id=f"clerk_{PLANT}",
            metadata={"phone": PLANT},
        )
        svc.create_user(db, "bob@example.com", "bob")
        for i in range(prompts):
            p = svc.create_prompt(db, user.id, f"title {PLANT} {i}", f"text {PLANT} number {i}")
            svc.edit_prompt(db, p.id, content=f"second {PLANT} version {i}")
            svc.add_evaluation(db, p.id, 2, 0.5, metrics={"note": PLANT})
        if libsql:
            _embed(db)
    finally:
        db.close()
    return settings


def _embed(db: Database) -> None:
    """Vectors for every prompt and libSQL's DiskANN index over them."""
    from autoforge_data.services.search import reindex
    from autoforge_data.vector.embedders import HashEmbedder
    from autoforge_data.vector.libsql_index import ensure_index
    from autoforge_data.vector.store import get_model

    reindex(db, embedder=HashEmbedder(384))
    ensure_index(db, get_model(db, MODEL))


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Run one query on a file with the libSQL engine."""
    with _open_libsql(path) as conn:
        return [tuple(r) for r in conn.execute(sql).fetchall()]


def schema(path: Path) -> list[tuple[Any, ...]]:
    """Every schema object of a file (type, name, sql), sorted."""
    return sorted(rows(path, "SELECT type, name, coalesce(sql, '') FROM sqlite_master"))


def file_bytes(path: Path) -> bytes:
    """The file and any WAL/journal beside it."""
    out = path.read_bytes()
    for suffix in ("-wal", "-journal"):
        side = Path(f"{path}{suffix}")
        if side.exists():
            out += side.read_bytes()
    return out


@pytest.fixture
def prod(tmp_path: Path) -> Settings:
    """A plain prod database (stdlib sqlite3 driver)."""
    return make_prod(tmp_path)


def test_branch_is_a_full_independent_copy(prod: Settings, tmp_path: Path) -> None:
    """A branch holds every row of its source; writes to either never reach the other."""
    record = create_branch(prod, BranchOptions("feature-1"))
    path = Path(record.location)
    assert path == tmp_path / "data" / "branches" / "feature-1.db"
    source = prod.target.path
    assert source is not None
    for table in ("users", "prompts", "prompt_versions", "evaluations", "prompts_fts"):
        sql = f"SELECT count(*) FROM {table}"
        assert rows(path, sql) == rows(source, sql)
    assert record.row_counts["prompts"] == 4
    assert record.migration == migrate.code_head()
    assert record.models == [MODEL]
    dev = Settings.load("dev", base_dir=tmp_path, database_url=str(path))
    with Database(dev) as db:
        svc.create_user(db, "only-in-branch@example.com", "b")
    with Database(prod) as db:
        svc.create_user(db, "only-in-prod@example.com", "p")
    assert rows(source, "SELECT count(*) FROM users WHERE email LIKE 'only-in-branch%'") == [(0,)]
    assert rows(path, "SELECT count(*) FROM users WHERE email LIKE 'only-in-prod%'") == [(0,)]


def test_branch_files_are_private_and_recorded(prod: Settings, tmp_path: Path) -> None:
    """Branch file and record are 0600 in a 0700 folder; the record says where it came from."""
    record = create_branch(prod, BranchOptions("rec"))
    folder = tmp_path / "data" / "branches"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in ("rec.db", "rec.json"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    saved = json.loads((folder / "rec.json").read_text())
    assert saved["source_env"] == "prod"
    assert saved["kind"] == "embedded"
    assert saved["migration"] == record.migration
    assert saved["models"] == [MODEL]
    assert saved["options"] == {
        "schema_only": False,
        "anonymize": False,
        "drop_content": False,
        "at": None,
    }
    assert datetime.fromisoformat(saved["created_at"].replace("Z", "+00:00")) <= datetime.now(UTC)
    assert saved["use"] == f"AFDB_DATABASE_URL={folder / 'rec.db'}".replace(f"{tmp_path}/", "")
    assert sorted(p.name for p in folder.iterdir()) == ["rec.db", "rec.json"]  # no leftovers


def test_git_commit_recorded_when_cwd_is_a_repo(prod: Settings, tmp_path: Path) -> None:
    """Inside a git work tree the record names the commit; outside it is null."""
    import subprocess

    assert create_branch(prod, BranchOptions("nogit")).git_commit is None
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@e",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@e",
    }
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(
        ["git", "commit", "-q", "--allow-empty", "-m", "x"], cwd=tmp_path, check=True, env=env
    )
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert create_branch(prod, BranchOptions("withgit")).git_commit == head


def test_schema_only_keeps_every_schema_object_and_no_rows(tmp_path: Path) -> None:
    """--schema-only: identical schema (tables, triggers, FTS, vector index), no data rows."""
    prod = make_prod(tmp_path, libsql=True)
    source = prod.target.path
    assert source is not None
    record = create_branch(prod, BranchOptions("empty", schema_only=True))
    path = Path(record.location)
    assert schema(path) == schema(source)
    assert any(t == "index" and "libsql_vector_idx" in sql for t, _, sql in schema(path))
    for table in ("users", "prompts", "prompt_versions", "evaluations", "emb_all_minilm_l6_v2"):
        assert rows(path, f"SELECT count(*) FROM {table}") == [(0,)]
    assert rows(path, "SELECT count(*) FROM prompts_fts") == [(0,)]
    assert rows(path, "SELECT version_num FROM alembic_version") == [(migrate.code_head(),)]
    assert rows(path, "SELECT name FROM embedding_models") == [(MODEL,)]
    assert rows(path, "PRAGMA integrity_check") == [("ok",)]
    assert PLANT.encode() not in file_bytes(path)
    # the empty branch works as a database: the triggers came back
    dev = Settings.load("dev", base_dir=tmp_path, database_url=str(path), db_driver="libsql")
    with Database(dev) as db:
        u = svc.create_user(db, "new@example.com", "new")
        p = svc.create_prompt(db, u.id, "fresh", "fresh words here")
    assert rows(path, "SELECT count(*) FROM prompts_fts WHERE prompts_fts MATCH 'fresh'") == [(1,)]
    with pytest.raises(Exception, match="immutable"), _open_libsql(path) as conn:
        conn.execute("DELETE FROM prompt_versions WHERE prompt_id = ?", (p.id,))


def test_anonymize_pseudonymizes_users_and_keeps_content(prod: Settings) -> None:
    """--anonymize: emails/usernames replaced (unique, not the originals), ids and metadata gone."""
    record = create_branch(prod, BranchOptions("anon", anonymize=True))
    path = Path(record.location)
    users = rows(path, "SELECT email, username, clerk_id, metadata FROM users ORDER BY email")
    assert len(users) == 2
    assert len({u[0] for u in users}) == 2
    for email, username, clerk_id, metadata in users:
        assert email.endswith("@example.invalid")
        assert PLANT not in email + username
        assert "bob" not in email + username
        assert clerk_id is None
        assert metadata == "{}"
    assert rows(
        path,
        "SELECT count(*) FROM prompts WHERE content LIKE '%' || ? || '%'".replace(
            "?", f"'{PLANT}'"
        ),
    ) == [(4,)]


@pytest.mark.parametrize("libsql", [False, True], ids=["sqlite3", "libsql-vector-index"])
def test_anonymize_leaves_no_personal_data_in_the_file(tmp_path: Path, libsql: bool) -> None:
    """The replaced emails, usernames, Clerk ids and metadata are nowhere in the file's bytes."""
    prod = make_prod(tmp_path, libsql=libsql, prompts=2)
    with Database(prod) as db:
        for i in range(30):  # enough rows that the users table and its indexes span pages
            svc.create_user(
                db,
                f"carol{i}.private@corp.example",
                f"carolpriv{i}",
                clerk_id=f"clerk_carolpriv{i}",
                metadata={"phone": f"555-0199-{i}"},
            )
    source = prod.target.path
    assert source is not None
    personal = (b"carol", b"clerk_carol", b"555-0199", b"bob@example.com")
    assert all(p in file_bytes(source) for p in personal)  # sensitivity: the plants are there
    record = create_branch(prod, BranchOptions("anon-bytes", anonymize=True))
    data = file_bytes(Path(record.location))
    assert [p for p in personal if p in data] == []
    assert PLANT.encode() in data  # prompt text stays without --drop-content
    assert rows(Path(record.location), "PRAGMA integrity_check") == [("ok",)]


def test_anonymized_branches_are_unlinkable(prod: Settings) -> None:
    """Two anonymized branches of the same source give the same user different pseudonyms."""
    a = create_branch(prod, BranchOptions("anon-a", anonymize=True))
    b = create_branch(prod, BranchOptions("anon-b", anonymize=True))
    sql = "SELECT email FROM users ORDER BY id"
    emails_a, emails_b = rows(Path(a.location), sql), rows(Path(b.location), sql)
    assert emails_a != emails_b
    assert not set(emails_a) & set(emails_b)


@pytest.mark.parametrize("libsql", [False, True], ids=["sqlite3", "libsql-vector-index"])
def test_drop_content_leaves_no_prod_text_in_the_file(tmp_path: Path, libsql: bool) -> None:
    """--anonymize --drop-content: the planted prod string is nowhere in the branch's bytes."""
    prod = make_prod(tmp_path, libsql=libsql)
    source = prod.target.path
    assert source is not None
    assert PLANT.encode() in file_bytes(source)  # sensitivity: the plant is there to find
    record = create_branch(prod, BranchOptions("clean", anonymize=True, drop_content=True))
    path = Path(record.location)
    assert PLANT.encode() not in file_bytes(path)
    assert b"bob@example.com" not in file_bytes(path)
    assert rows(path, "PRAGMA integrity_check") == [("ok",)]
    assert rows(path, "SELECT count(*) FROM prompts") == [(4,)]
    assert rows(path, "SELECT count(*) FROM prompt_versions") == [(8,)]
    assert rows(path, "SELECT count(*) FROM emb_all_minilm_l6_v2") == [(0,)]
    fts = f"SELECT count(*) FROM prompts_fts WHERE prompts_fts MATCH '{PLANT}'"
    assert rows(path, fts) == [(0,)]
    assert rows(path, "SELECT count(*) FROM prompts_fts WHERE prompts_fts MATCH 'redacted'") == [
        (4,)
    ]
    assert schema(path) == schema(source)


def test_existing_branch_is_refused_unless_replace(prod: Settings) -> None:
    """A second create with the same name fails; --replace swaps in a fresh copy."""
    first = create_branch(prod, BranchOptions("same"))
    with pytest.raises(Conflict):
        create_branch(prod, BranchOptions("same"))
    with Database(prod) as db:
        svc.create_user(db, "later@example.com", "later")
    second = create_branch(prod, BranchOptions("same", replace=True))
    assert second.location == first.location
    assert rows(Path(second.location), "SELECT count(*) FROM users") == [(3,)]


def test_a_branch_in_use_is_neither_replaced_nor_deleted(prod: Settings, tmp_path: Path) -> None:
    """A branch file open in a process (an app using it) is refused by --replace and delete."""
    record = create_branch(prod, BranchOptions("busy"))
    dev = Settings.load("dev", base_dir=tmp_path, database_url=record.location)
    with Database(dev) as db:
        svc.create_user(db, "in-use@example.com", "u")
        with pytest.raises(Busy):
            create_branch(prod, BranchOptions("busy", replace=True))
        with pytest.raises(Busy):
            delete_branch(prod, "busy")
    assert rows(Path(record.location), "SELECT count(*) FROM users") == [(3,)]
    delete_branch(prod, "busy")


def test_a_branch_never_replaces_its_source(tmp_path: Path) -> None:
    """A source that lives where the branch would go is refused, even with --replace."""
    folder = tmp_path / "data" / "branches"
    prod = make_prod(tmp_path)
    moved = Settings.load("prod", base_dir=tmp_path, database_url=str(folder / "self.db"))
    folder.mkdir(mode=0o700)
    assert prod.target.path is not None
    os.replace(prod.target.path, folder / "self.db")
    before = (folder / "self.db").read_bytes()
    with pytest.raises(InvalidInput, match="own source"):
        create_branch(moved, BranchOptions("self", replace=True, branches_dir=folder))
    assert (folder / "self.db").read_bytes() == before


BAD_NAMES = [
    "../../etc/passwd",
    "%2e%2e/x",
    "\uff0e\uff0e/x",  # fullwidth dots
    "a\x00b",
    "-o/tmp/x",
    "x" * 300,
    "UPPER",
    "",
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: repr(n)[:20])
def test_bad_names_are_rejected_before_any_io(prod: Settings, tmp_path: Path, name: str) -> None:
    """Traversal, encodings, NUL, option-like and overlong names: refused, nothing written."""
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(InvalidInput):
        create_branch(prod, BranchOptions(name))
    with pytest.raises(InvalidInput):
        delete_branch(prod, name)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_planted_symlinks_are_refused(prod: Settings, tmp_path: Path) -> None:
    """A symlink at the branch file, its record or the folder: refused, nothing written there."""
    folder = tmp_path / "data" / "branches"
    folder.mkdir(mode=0o700)
    outside = tmp_path / "outside"
    outside.mkdir()
    (folder / "trap.db").symlink_to(outside / "victim.db")
    with pytest.raises(InvalidInput, match="symlink"):
        create_branch(prod, BranchOptions("trap", replace=True))
    (folder / "trap2.json").symlink_to(outside / "victim.json")
    with pytest.raises(InvalidInput, match="symlink"):
        create_branch(prod, BranchOptions("trap2", replace=True))
    linked = tmp_path / "linked"
    linked.symlink_to(outside)
    with pytest.raises(InvalidInput, match="symlink"):
        create_branch(prod, BranchOptions("x", branches_dir=linked))
    assert list(outside.iterdir()) == []


def test_options_are_checked_before_any_io(prod: Settings, tmp_path: Path) -> None:
    """Contradictory or impossible options fail before a file is touched."""
    future = datetime.now(UTC) + timedelta(hours=1)
    for opts in (
        BranchOptions("a", drop_content=True),
        BranchOptions("a", schema_only=True, anonymize=True),
        BranchOptions("a", at=future),
        BranchOptions("a", at=datetime(2026, 1, 1)),
        BranchOptions("a", backend="cloud"),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidInput):
            create_branch(prod, opts)
    assert not (tmp_path / "data" / "branches").exists()
    assert parse_timestamp("2026-11-27T10:00:00Z") == datetime(2026, 11, 27, 10, tzinfo=UTC)
    assert parse_timestamp("2026-11-27T12:00:00+02:00").hour == 10
    with pytest.raises(InvalidInput):
        parse_timestamp("yesterday")


def test_at_without_backups_is_a_clear_error(prod: Settings, tmp_path: Path) -> None:
    """--at on an embedded source needs a verified backup at or before that time."""
    with pytest.raises(NotFound, match="no verified backup") as info:
        create_branch(prod, BranchOptions("past", at=datetime.now(UTC) - timedelta(days=1)))
    assert info.value.hint and "backup" in info.value.hint
    assert not (tmp_path / "data" / "branches" / "past.db").exists()


def test_at_restores_the_newest_verified_backup_before_t(prod: Settings) -> None:
    """--at T: the newest *verified* backup taken at or before T, never a later one."""
    from autoforge_data.ops.backup import create_backup
    from autoforge_data.ops.backup_verify import VerifyOptions, verify_backup

    with Database(prod) as db:
        first = create_backup(db)
    assert verify_backup(prod, VerifyOptions(name=first.manifest.name)).ok
    with Database(prod) as db:
        svc.create_user(db, "second@example.com", "second")
        create_backup(db)  # taken before T, never verified: not used
    at = datetime.now(UTC)
    with Database(prod) as db:
        svc.create_user(db, "after-t@example.com", "late")
        later = create_backup(db)
    assert verify_backup(prod, VerifyOptions(name=later.manifest.name)).ok
    record = create_branch(prod, BranchOptions("past", at=at))
    path = Path(record.location)
    assert rows(path, "SELECT count(*) FROM users") == [(2,)]
    assert record.source.startswith(f"backup {first.manifest.name} ")
    assert record.at == at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert rows(path, "PRAGMA integrity_check") == [("ok",)]
    with pytest.raises(NotFound, match="no verified backup"):
        create_branch(
            prod,
            BranchOptions(
                "older",
                at=datetime.fromisoformat(first.manifest.created_at.replace("Z", "+00:00"))
                - timedelta(seconds=1),
            ),
        )


def test_a_source_without_schema_is_refused(tmp_path: Path) -> None:
    """Branching an empty profile says to run init."""
    with pytest.raises(Exception, match="no schema"):
        create_branch(prod_settings(tmp_path), BranchOptions("x"))


def test_list_and_delete(prod: Settings, tmp_path: Path) -> None:
    """list shows recorded branches (and an unrecorded file); delete removes file and record."""
    create_branch(prod, BranchOptions("one"))
    create_branch(prod, BranchOptions("two", schema_only=True))
    folder = tmp_path / "data" / "branches"
    (folder / "three.db").write_bytes((folder / "one.db").read_bytes())
    listed = {r.name: r for r in list_branches(prod)}
    assert set(listed) == {"one", "two", "three"}
    assert listed["three"].status == "unrecorded"
    assert listed["two"].options["schema_only"] is True
    (folder / "one.db").unlink()
    assert {r.name: r.status for r in list_branches(prod)}["one"] == "missing"
    for name in ("one", "two", "three"):
        delete_branch(prod, name)
    assert list(folder.iterdir()) == []
    with pytest.raises(NotFound):
        delete_branch(prod, "one")
    assert prod.target.path is not None and prod.target.path.exists()


def test_the_profile_database_is_never_deleted_as_a_branch(prod: Settings, tmp_path: Path) -> None:
    """A profile pointed at a branch cannot delete it (switch first)."""
    record = create_branch(prod, BranchOptions("inuse"))
    dev = Settings.load("dev", base_dir=tmp_path, database_url=record.location)
    with pytest.raises(InvalidInput, match="own database"):
        delete_branch(dev, "inuse")
    assert Path(record.location).exists()


def test_cli_create_list_delete(prod: Settings, tmp_path: Path, run_cli: Any) -> None:
    """The CLI: create prints how to use the branch, list --json, bad names exit 2 in one line."""
    code, out, _ = run_cli("branch", "create", "web", "--from", "prod", "--anonymize")
    assert code == 0, out
    assert "AFDB_DATABASE_URL=data/branches/web.db" in out
    code, out, _ = run_cli("branch", "list", "--json")
    assert code == 0
    listed = json.loads(out)
    assert [b["name"] for b in listed] == ["web"]
    assert listed[0]["options"]["anonymize"] is True
    for bad in ("../x", "%2e%2e", "x" * 300):
        code, _, err = run_cli("branch", "create", "--from", "prod", "--", bad)
        assert code == 2
        assert err.count("\n") == 1 and "hint:" in err
    code, _, err = run_cli("branch", "create", "-o/tmp/x", "--from", "prod")
    assert code == 2
    code, out, _ = run_cli("branch", "delete", "web", "--yes")
    assert code == 0
    assert not (tmp_path / "data" / "branches" / "web.db").exists()


def test_library_call_with_an_open_database(prod: Settings) -> None:
    """create_branch takes an open Database too (the benchmark times it that way)."""
    with Database(prod) as db:
        record = create_branch(db, BranchOptions("lib"))
        assert record.seconds is not None and record.seconds >= 0
        assert record.size_bytes and record.size_bytes > 0
    again = replace(BranchOptions("lib"), replace=True)
    assert create_branch(prod, again).name == "lib"


def test_an_encrypted_source_gives_an_encrypted_branch(tmp_path: Path) -> None:
    """With AFDB_ENCRYPTION_KEY the branch is encrypted with the same key, and cleaned too."""
    key = "branch-test-key-0123456789abcdef"
    prod = Settings.load("prod", base_dir=tmp_path, data_dir=tmp_path / "data", encryption_key=key)
    with Database(prod) as db:
        migrate.upgrade(db)
        svc.create_user(db, f"{PLANT}@example.com", "enc")
    record = create_branch(prod, BranchOptions("enc", anonymize=True, drop_content=True))
    path = Path(record.location)
    assert not path.read_bytes().startswith(b"SQLite format 3")
    with _open_libsql(path, key) as conn:
        emails = [r[0] for r in conn.execute("SELECT email FROM users").fetchall()]
    assert len(emails) == 1 and PLANT not in emails[0]
    assert record.row_counts["users"] == 1


def test_anonymize_refuses_a_schema_newer_than_the_code(prod: Settings) -> None:
    """Unknown tables might hold personal data: anonymizing a newer schema is refused."""
    with Database(prod) as db, db.writes.connection() as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(SchemaError, match="newer"):
        create_branch(prod, BranchOptions("newer", anonymize=True))
    assert create_branch(prod, BranchOptions("newer")).migration == "9999"  # a plain copy is fine


def test_half_made_branches_of_dead_processes_are_removed(prod: Settings, tmp_path: Path) -> None:
    """A SIGKILLed create leaves a .partial file or a half-written record; the next create
    removes them (their pid is dead) and keeps a live writer's."""
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    folder = tmp_path / "data" / "branches"
    folder.mkdir(mode=0o700)
    stale = folder / f".x.db.{dead.pid}-abc123.partial"
    stale_inner = folder / f"..x.db.{dead.pid}-abc123.partial.k2j3.partial"
    stale_record = folder / f".x.json.{dead.pid}-h_7zpo8r.tmp"
    alive = folder / f".y.db.{os.getpid()}-abc123.partial"
    alive_record = folder / f".y.json.{os.getpid()}-k2j3_x.tmp"
    for path in (stale, stale_inner, stale_record, alive, alive_record):
        path.write_bytes(b"half")
    create_branch(prod, BranchOptions("after"))
    assert not stale.exists() and not stale_inner.exists() and not stale_record.exists()
    assert alive.exists() and alive_record.exists()
    assert not [p for p in list_branches(prod) if p.name != "after"]
