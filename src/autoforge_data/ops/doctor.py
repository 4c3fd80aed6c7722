"""`afdb doctor`: a list of checks, each (name, ok, detail); no secret in any detail."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable

import httpx

from autoforge_data.db import migrate
from autoforge_data.db.engine import Database
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.errors import AfdbError
from autoforge_data.settings import Mode, Settings

Check = tuple[str, bool, str]


def run_checks(settings: Settings) -> list[Check]:
    """Run every check that applies to the settings' mode; never raises for a failing check."""
    rows: list[Check] = [("settings", True, f"{settings.env}, {settings.target.describe()}")]
    try:
        db = Database(settings)
    except AfdbError as exc:
        return [*rows, ("open database", False, exc.one_line())]
    try:
        rows.append(("driver", True, db.driver))
        for name, fn in _checks(db):
            try:
                rows.append((name, *fn()))
            except AfdbError as exc:
                rows.append((name, False, exc.one_line()))
    finally:
        db.close()
    return rows


def _checks(db: Database) -> list[tuple[str, Callable[[], tuple[bool, str]]]]:
    checks: list[tuple[str, Callable[[], tuple[bool, str]]]] = [
        ("connectivity", lambda: _round_trip(db)),
        ("server version", lambda: _version(db)),
        ("migrations", lambda: _migrations(db)),
    ]
    if db.mode is Mode.EMBEDDED:
        checks += [("pragmas", lambda: _pragmas(db)), ("file permissions", lambda: _perms(db))]
    if db.replica is not None:
        checks.append(("replica lag", lambda: _replica(db)))
    return checks


def _round_trip(db: Database) -> tuple[bool, str]:
    start = time.perf_counter()
    with UnitOfWork(db) as uow:
        uow.fetchone("SELECT 1")
    return True, f"SELECT 1 in {(time.perf_counter() - start) * 1000:.1f} ms"


def _version(db: Database) -> tuple[bool, str]:
    with UnitOfWork(db) as uow:
        row = uow.fetchone("SELECT sqlite_version()")
    text = f"SQLite {row[0]}"
    url = db.target.url
    if url is not None:
        try:
            r = httpx.get(f"{url}/version", timeout=db.settings.connect_timeout)
            if r.status_code == 200 and len(r.text) < 200:
                text += f", server {r.text.strip()}"
        except httpx.HTTPError:
            pass  # Turso Cloud does not serve /version; the SQL round trip above is what counts
    return True, text


def _migrations(db: Database) -> tuple[bool, str]:
    rev = migrate.check_not_newer(db)
    head = migrate.code_head()
    if rev is None:
        return False, "no schema (run: afdb init)"
    if rev != head:
        return False, f"database at {rev}, code at {head} (run: afdb migrate)"
    return True, f"at head {head}"


def _pragmas(db: Database) -> tuple[bool, str]:
    with UnitOfWork(db) as uow:
        journal = uow.fetchone("PRAGMA journal_mode")[0]
        fks = uow.fetchone("PRAGMA foreign_keys")[0]
        sync = uow.fetchone("PRAGMA synchronous")[0]
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    ok = str(journal).lower() == "wal" and fks == 1
    return ok, f"journal_mode={journal}, foreign_keys={fks}, synchronous={names.get(sync, sync)}"


def _perms(db: Database) -> tuple[bool, str]:
    path = db.target.path
    assert path is not None
    fmode = stat.S_IMODE(os.stat(path).st_mode)
    dmode = stat.S_IMODE(os.stat(path.parent).st_mode)
    ok = fmode & 0o077 == 0 and dmode & 0o077 == 0
    return ok, f"file {fmode:o}, folder {dmode:o}" + ("" if ok else " (want 600 / 700)")


def _replica(db: Database) -> tuple[bool, str]:
    lag = db.replica.lag_seconds()
    if lag is None:
        return False, "never synced"
    return lag < 60, f"{lag:.2f} s since the last successful sync"
