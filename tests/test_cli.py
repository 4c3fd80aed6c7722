"""The `afdb` command line: help everywhere, the happy path, and one clear line per failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from autoforge_data.cli import app, run
from servers import Sqld, free_port

AFDB = str(Path(sys.executable).parent / "afdb")


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in group.commands.items():
        out.append((*prefix, name))
        if hasattr(cmd, "commands"):
            out += _commands(cmd, (*prefix, name))
    return out


def test_every_command_has_help_with_an_example() -> None:
    """Each command and group documents itself with an example line."""
    root = typer.main.get_command(app)
    paths = _commands(root)
    assert ("prompts", "add") in paths and ("doctor",) in paths
    for path in paths:
        cmd: Any = root
        for part in path:
            cmd = cmd.commands[part]
        assert cmd.help and "Example:" in cmd.help, f"afdb {' '.join(path)} lacks an example"


def test_happy_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """init --demo, then users, prompts add/edit/list/show/history and migrate --check."""
    assert run(["init", "--demo"]) == 0
    assert "10 prompts" in capsys.readouterr().out
    assert run(["users", "list", "--json"]) == 0
    users = json.loads(capsys.readouterr().out)
    owner = users[0]["id"]
    assert run(["prompts", "add", "--owner", owner, "--title", "CLI", "--content", "hi"]) == 0
    pid = capsys.readouterr().out.strip()
    assert run(["prompts", "edit", pid, "--content", "hello"]) == 0
    assert "version 2" in capsys.readouterr().out
    assert run(["prompts", "history", pid, "--json"]) == 0
    assert [v["content"] for v in json.loads(capsys.readouterr().out)] == ["hi", "hello"]
    assert run(["prompts", "list", "--owner", owner, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["items"][0]["id"] == pid
    assert run(["prompts", "show", pid]) == 0
    assert "hello" in capsys.readouterr().out
    assert run(["migrate", "--check"]) == 0
    assert run(["doctor"]) == 0


def _afdb(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("AFDB_")} | env
    return subprocess.run(  # noqa: PLW1510 - the tests read the return code themselves
        [AFDB, *args], env=full, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def _one_clear_line(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]
    assert "hint:" in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"AFDB_DATABASE_URL": "ftp://x/y"}, "unknown scheme"),
        ({"AFDB_DATABASE_URL": "http://db.example.com", "AFDB_AUTH_TOKEN": "x"}, "plain http"),
        ({"AFDB_DATABASE_URL": "libsql://db.example.com"}, "AFDB_AUTH_TOKEN is not set"),
        ({"AFDB_SYNC_INTERVAL": "5"}, "needs AFDB_SYNC_URL"),
        ({"AFDB_DATA_DIR": "/proc/afdb"}, "not writable"),
        ({"AFDB_ENV": "qa"}, "unknown profile"),
    ],
)
def test_invalid_settings_one_line(tmp_path: Path, env: dict[str, str], needle: str) -> None:
    """Each invalid setting is one line with a hint and exit code 2, no traceback."""
    _one_clear_line(_afdb(["doctor"], env, tmp_path), needle)


def test_unreachable_server_one_line(tmp_path: Path) -> None:
    """A server that is not there: one line, quickly."""
    url = f"http://127.0.0.1:{free_port()}"
    proc = _afdb(
        ["prompts", "list", "--owner", "01J0000000000000000000000A"],
        {"AFDB_DATABASE_URL": url},
        tmp_path,
    )
    _one_clear_line(proc, "unreachable")


def test_newer_migration_head_one_line(tmp_path: Path) -> None:
    """A database migrated by newer code is refused with one line."""
    assert _afdb(["init"], {}, tmp_path).returncode == 0
    import sqlite3

    conn = sqlite3.connect(tmp_path / "data" / "dev.db")
    conn.execute("UPDATE alembic_version SET version_num = 'ffff'")
    conn.commit()
    conn.close()
    _one_clear_line(_afdb(["users", "list"], {}, tmp_path), "newer than this code")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    """--debug is the way to see the traceback."""
    proc = _afdb(["--debug", "doctor"], {"AFDB_DATABASE_URL": "ftp://x"}, tmp_path)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_usage_error_one_line(tmp_path: Path) -> None:
    """A wrong option is one line with a hint too."""
    _one_clear_line(_afdb(["prompts", "list", "--bogus"], {}, tmp_path), "--bogus")


def test_no_schema_yet(tmp_path: Path) -> None:
    """Commands before `afdb init` say so."""
    _one_clear_line(_afdb(["users", "list"], {}, tmp_path), "afdb init")


def test_wrong_token_one_line(tmp_path: Path, jwt_sqld: Sqld) -> None:
    """A token the server rejects: one line that does not contain the token."""
    token = "eyJhbGciOiJFZERTQSJ9.eyJ4IjoxfQ.c2lnbmF0dXJl"
    proc = _afdb(
        ["prompts", "list", "--owner", "01J0000000000000000000000A"],
        {"AFDB_DATABASE_URL": jwt_sqld.url, "AFDB_AUTH_TOKEN": token},
        tmp_path,
    )
    _one_clear_line(proc, "rejected the credentials")
    assert token not in proc.stderr + proc.stdout
