"""Migrations: pytest-alembic's built-in tests against an embedded file and a real sqld."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_alembic.tests import (  # noqa: F401 - collected here, run by pytest
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from sqlalchemy import Engine

from autoforge_data.db import migrate
from autoforge_data.db.engine import Database
from autoforge_data.errors import SchemaError
from conftest import settings_for
from servers import start_sqld


@pytest.fixture
def alembic_config() -> object:
    """Our packaged migrations."""
    return migrate.alembic_config()


@pytest.fixture(params=["embedded", "remote"])
def alembic_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty database: an embedded file, or a fresh real sqld."""
    server = start_sqld(tmp_path) if request.param == "remote" else None
    try:
        db = Database(settings_for(request.param, tmp_path, server))
        try:
            yield db.engine
        finally:
            db.close()
    finally:
        if server is not None:
            server.stop()


def test_vector_column_is_a_real_libsql_vector_type(tmp_path: Path) -> None:
    """The default model's embedding column is declared F32_BLOB(384) in the database."""
    db = Database(settings_for("embedded", tmp_path))
    try:
        migrate.upgrade(db)
        with db.engine.connect() as conn:
            sql = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'emb_all_minilm_l6_v2'"
            ).scalar_one()
        assert "F32_BLOB(384)" in sql
        assert migrate.drift(db) == []
    finally:
        db.close()


def test_newer_database_is_refused(tmp_path: Path) -> None:
    """A database migrated by newer code is refused with a clear SchemaError."""
    db = Database(settings_for("embedded", tmp_path))
    try:
        migrate.upgrade(db)
        with db.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
        with pytest.raises(SchemaError, match="newer than this code"):
            migrate.check_not_newer(db)
        with pytest.raises(SchemaError):
            migrate.upgrade(db)
    finally:
        db.close()


def test_drift_is_detected(tmp_path: Path) -> None:
    """A table changed by hand shows up in drift()."""
    db = Database(settings_for("embedded", tmp_path))
    try:
        migrate.upgrade(db)
        with db.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE users ADD COLUMN shoe_size INTEGER")
        assert any("shoe_size" in d for d in migrate.drift(db))
    finally:
        db.close()
