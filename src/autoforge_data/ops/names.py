"""Names that become file or object names (backups, branches): validated, never a path.

A name is lower-case ASCII letters, digits, ``.``, ``_`` and ``-``, 1-63 characters, starting
with a letter or digit (so it can never be read as a command-line option), with no ``..``
(never a parent folder). Anything else (separators, NUL, percent-encoding, fullwidth dots and
every other non-ASCII character, upper case) is rejected, not "cleaned": a name the user did
not type never names a file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from autoforge_data.errors import InvalidInput

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
MAX_LEN = 63
_HINT = "use 1-63 characters a-z 0-9 . _ - starting with a letter or digit, without '..'"


def check_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is a safe name, else raise InvalidInput with a hint."""
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"the {what} is empty", hint=_HINT)
    shown = ascii(name[:40]) + ("…" if len(name) > 40 else "")
    if len(name) > MAX_LEN:
        raise InvalidInput(f"the {what} is {len(name)} characters long (max {MAX_LEN})", hint=_HINT)
    if name.startswith("-"):
        raise InvalidInput(f"the {what} {shown} starts with '-'", hint=_HINT)
    if ".." in name:
        raise InvalidInput(f"the {what} {shown} contains '..'", hint=_HINT)
    if not NAME_RE.fullmatch(name):
        raise InvalidInput(f"the {what} {shown} has characters that are not allowed", hint=_HINT)
    return name


def child_path(folder: Path, name: str, suffix: str = "") -> Path:
    """The path ``folder/name+suffix``, checked to stay inside ``folder``.

    Refuses an invalid name or suffix, a folder that is a symlink (or resolves elsewhere than
    it says), and a symlink planted at the target. The target itself may or may not exist.
    """
    check_name(name)
    if suffix and not re.fullmatch(r"[a-z0-9._-]{1,24}", suffix):
        raise InvalidInput(f"invalid file suffix {suffix!a}")
    folder = Path(folder)
    absolute = Path(os.path.abspath(folder))
    if folder.is_symlink():
        raise InvalidInput(
            f"the folder {absolute} is a symlink",
            hint="point the backup/branch location at a real folder",
        )
    target = absolute / f"{name}{suffix}"
    if target.is_symlink():
        raise InvalidInput(
            f"{target} is a symlink", hint="remove it; a symlink there could redirect the write"
        )
    if target.parent != absolute or target.resolve().parent != absolute.resolve():
        raise InvalidInput(f"the name {name!a} leaves its folder", hint=_HINT)
    return target
