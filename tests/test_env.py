"""`afdb env list|show`: every profile's mode, database, schema, size, backups and replication."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from autoforge_data.db import migrate
from autoforge_data.db.engine import Database
from autoforge_data.ops.envs import env_info, list_envs
from autoforge_data.settings import Settings
from servers import Sqld

SECRET = "db-token-never-printed-9c1f7e"  # the remote profile's token


@pytest.fixture
def project(tmp_path: Path, fresh_sqld: Sqld) -> Path:
    """dev: no database yet; staging: a migrated sqld with a token; prod: a migrated file."""
    prod = Settings.load("prod", base_dir=tmp_path)
    with Database(prod) as db:
        migrate.upgrade(db)
    (tmp_path / ".env.staging").write_text(
        f"AFDB_DATABASE_URL={fresh_sqld.url}\nAFDB_AUTH_TOKEN={SECRET}\n"
    )
    with Database(Settings.load("staging", base_dir=tmp_path)) as db:
        migrate.upgrade(db)
    return tmp_path


def test_list_shows_each_profile(project: Path) -> None:
    """Three rows: dev without a file (none created), staging remote, prod embedded at head."""
    rows = {r.profile: r for r in list_envs(project)}
    assert list(rows) == ["dev", "staging", "prod"]
    head = migrate.code_head()
    assert rows["dev"].mode == "embedded"
    assert rows["dev"].migration == "no database yet"
    assert not (project / "data" / "dev.db").exists()
    assert rows["staging"].mode == "remote"
    assert rows["staging"].migration == head
    assert rows["staging"].replication == "server-side (sqld / Turso)"
    assert rows["prod"].migration == head
    assert rows["prod"].size_bytes and rows["prod"].size_bytes > 0
    assert rows["prod"].database == f"embedded: {project / 'data' / 'prod.db'}"
    assert rows["prod"].replication and rows["prod"].replication.startswith("none")
    assert rows["prod"].details["backup_location"] == str(project / "data" / "backups" / "prod")
    assert all(r.error is None for r in rows.values())


def test_cli_list_table_and_json_never_show_the_token(project: Path, run_cli: Any) -> None:
    """Table and JSON: every profile, no credential anywhere."""
    code, out, err = run_cli("env", "list")
    assert code == 0, err
    for word in ("dev", "staging", "prod", "embedded", "remote"):
        assert word in out
    code, out_json, _ = run_cli("env", "list", "--json")
    assert code == 0
    data = json.loads(out_json)
    assert [d["profile"] for d in data] == ["dev", "staging", "prod"]
    assert {"mode", "database", "migration", "size_bytes", "last_backup", "replication"} <= set(
        data[0]
    )
    assert SECRET not in out + out_json + err


def test_show_one_profile(project: Path, run_cli: Any) -> None:
    """`env show prod --json` has the details; `env show` defaults to the current profile."""
    code, out, _ = run_cli("env", "show", "prod", "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["profile"] == "prod"
    assert shown["details"]["code_head"] == migrate.code_head()
    assert shown["details"]["branches"] == str(project / "data" / "branches")
    code, out, _ = run_cli("--env", "staging", "env", "show")
    assert code == 0
    assert "remote" in out
    assert SECRET not in out


def test_a_broken_profile_is_one_row_with_an_error(project: Path) -> None:
    """An invalid profile does not break the list: its row carries the one-line error."""
    (project / ".env.dev").write_text("AFDB_DATABASE_URL=ftp://nowhere/db\n")
    rows = {r.profile: r for r in list_envs(project)}
    assert rows["dev"].error and "unknown scheme" in rows["dev"].error
    assert rows["prod"].error is None


def test_litestream_replica_url_is_reported_without_credentials(tmp_path: Path) -> None:
    """With AFDB_REPLICATE_URL the embedded profile says Litestream is configured, and where."""
    target = tmp_path / "replica"
    settings = Settings.load("dev", base_dir=tmp_path, replicate_url=f"file://{target}")
    info = env_info("dev", tmp_path, settings=settings)
    assert info.replication and info.replication.startswith(f"litestream to file://{target}")


def test_embedded_replica_reports_lag(fresh_sqld: Sqld, tmp_path: Path) -> None:
    """Replica mode: the primary's URL and the lag after opening (a sync just happened)."""
    with Database(Settings.load("dev", base_dir=tmp_path, database_url=fresh_sqld.url)) as db:
        migrate.upgrade(db)
    settings = Settings.load(
        "dev",
        base_dir=tmp_path,
        database_url=str(tmp_path / "replica" / "local.db"),
        sync_url=fresh_sqld.url,
    )
    info = env_info("dev", tmp_path, settings=settings)
    assert info.mode == "replica"
    assert info.replication and info.replication.startswith(f"embedded replica of {fresh_sqld.url}")
    assert "lag" in info.replication
    assert info.migration == migrate.code_head()


def test_last_backup_is_shown(project: Path) -> None:
    """After `backup create`, prod's row names the backup and its age; dev has none."""
    from autoforge_data.ops.backup import create_backup

    prod = Settings.load("prod", base_dir=project)
    with Database(prod) as db:
        info = create_backup(db)
    rows = {r.profile: r for r in list_envs(project)}
    shown = rows["prod"].last_backup or ""
    assert info.manifest.name in shown
    assert shown.endswith("not verified)")
    assert shown.startswith(datetime.now(UTC).strftime("%Y-%m-%d"))
    assert rows["dev"].last_backup == "none"
