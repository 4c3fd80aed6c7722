"""Every file the platform creates is 0600 and every folder 0700, whatever the caller's umask.

The commands run as real `afdb` processes under a permissive umask (022), then the whole tree
they wrote is walked. Commands of other areas (backup, branch, replicate) are included when the
CLI has them, so the check grows as they land.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import typer

from autoforge_data.cli import app
from servers import ROOT

AFDB = str(Path(sys.executable).parent / "afdb")
SECRETS_KEY = "perm-test-key"


def _has_command(*path: str) -> bool:
    group = typer.main.get_command(app)
    for part in path:
        commands = getattr(group, "commands", {})
        if part not in commands:
            return False
        group = commands[part]
    return True


def _run(args: Sequence[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a command with umask 022, so any 0644/0755 it creates shows."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("AFDB_")} | env
    proc = subprocess.run(  # noqa: PLW1510 - checked below
        list(args),
        env=full,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        preexec_fn=lambda: os.umask(0o022),
    )
    assert proc.returncode == 0, (args, proc.stderr)
    return proc


def _loose(root: Path, skip: set[Path]) -> list[str]:
    """Paths under ``root`` that are not 0600 (files) or 0700 (folders)."""
    bad = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            path = Path(dirpath) / name
            mode = stat.S_IMODE(path.lstat().st_mode)
            if path not in skip and not path.is_symlink() and mode != 0o700:
                bad.append(f"{path.relative_to(root)}/ {mode:o}")
        for name in filenames:
            path = Path(dirpath) / name
            mode = stat.S_IMODE(path.lstat().st_mode)
            if path not in skip and not path.is_symlink() and mode != 0o600:
                bad.append(f"{path.relative_to(root)} {mode:o}")
    return bad


@pytest.mark.timeout(600)
def test_everything_we_create_is_private(tmp_path: Path) -> None:
    """init --demo, apikey, keys, secrets encrypt, init-secrets, backup/branch when present."""
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    env = {"AFDB_DATA_DIR": str(work / "data"), "AFDB_SECRETS_KEY": SECRETS_KEY}
    env["AFDB_BACKUP_URL"] = f"file://{work / 'backups'}"
    plain = tmp_path / "plain.env"  # the test's own input, outside the walked tree
    plain.write_text("AFDB_OPENAI_API_KEY=sk-perm\n")
    _run([AFDB, "init", "--demo"], work, env)
    _run([AFDB, "apikey", "create", "--scope", "admin", "--name", "perm"], work, env)
    _run([AFDB, "keys", "generate", "--out", str(work / "keys")], work, env)
    _run([AFDB, "secrets", "encrypt", str(plain), "--out", str(work / ".env.enc")], work, env)
    _run(
        [str(ROOT / "deploy" / "init-secrets"), str(work / "deploy-secrets")],
        work,
        env
        | {
            "PATH": f"{Path(AFDB).parent}{os.pathsep}{os.environ['PATH']}",
            "PYTHON": sys.executable,
        },
    )
    ran = ["init", "apikey", "keys", "secrets", "init-secrets"]
    if _has_command("backup", "create"):
        _run([AFDB, "backup", "create"], work, env)
        ran.append("backup")
    if _has_command("branch", "create"):
        _run([AFDB, "branch", "create", "perm-branch", "--from", "dev"], work, env)
        ran.append("branch")
    bad = _loose(work, skip=set())
    assert not bad, f"after {ran}: {bad}"
    assert (work / "data").is_dir() and any((work / "data").iterdir())
