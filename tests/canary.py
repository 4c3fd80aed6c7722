"""Canary secrets: unique values for every secret setting, and scanners that look for them.

Used by tests/test_canary.py (bounded, part of `make test`) and by the opt-in whole-suite plugin
tests/canary_plugin.py (``AFDB_CANARY=1 .venv/bin/pytest -p canary_plugin``).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from autoforge_data.settings import Settings


def secret_fields() -> list[str]:
    """Names of every SecretStr setting (found from the model, so new ones are covered)."""
    out = []
    for name, info in Settings.model_fields.items():
        if "SecretStr" in repr(info.annotation):
            out.append(name)
    return out


def canary_values(prefix: str = "cnry") -> dict[str, str]:
    """A unique, greppable value per secret setting (``cnry-<field>-<hex>``)."""
    return {
        name: f"{prefix}-{name.replace('_', '')}-{uuid.uuid4().hex}" for name in secret_fields()
    }


def env_for(values: dict[str, str]) -> dict[str, str]:
    """The values as AFDB_* environment variables."""
    return {f"AFDB_{name.upper()}": value for name, value in values.items()}


def needles_of(secret: str) -> list[str]:
    """What to search for: the value, and for a JWT also its signature alone."""
    out = [secret]
    if secret.count(".") == 2 and secret.startswith("ey"):
        out.append(secret.rsplit(".", 1)[1])
    return out


@dataclass
class Scanner:
    """Collects every place where a secret showed up; ``findings`` stays empty when all is well."""

    secrets: dict[str, str]  # label -> secret value
    findings: list[str] = field(default_factory=list)
    checked: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, label: str, secret: str) -> None:
        """Start looking for one more secret (e.g. an API key minted during the run)."""
        with self._lock:
            self.secrets[label] = secret

    def text(self, where: str, content: str | bytes) -> None:
        """Look for every secret in one text or byte string."""
        data = content if isinstance(content, bytes) else content.encode("utf-8", "replace")
        with self._lock:
            self.checked += 1
            items = list(self.secrets.items())
        for label, secret in items:
            for needle in needles_of(secret):
                if needle.encode() in data:
                    with self._lock:
                        self.findings.append(f"{label} in {where}")
                    break

    def files(self, root: Path, *, skip: Iterable[Path] = ()) -> int:
        """Look in every file under ``root`` except ``skip`` (files or folders); returns count."""
        skipped = [p.resolve() for p in skip]
        count = 0
        for path in sorted(root.rglob("*")):
            real = path.resolve()
            if not path.is_file() or any(real == s or s in real.parents for s in skipped):
                continue
            try:
                self.text(f"file {path.relative_to(root)}", path.read_bytes())
            except OSError:
                continue
            count += 1
        return count


class ProcWatcher:
    """Polls /proc/*/cmdline of every process on the machine while running."""

    def __init__(self, scanner: Scanner, interval: float = 0.1) -> None:
        self.scanner = scanner
        self.interval = interval
        self.seen: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ProcWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.interval)

    def poll(self) -> None:
        """One pass over every process's command line."""
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                raw = Path(entry.path, "cmdline").read_bytes()
            except OSError:
                continue
            pid = int(entry.name)
            text = raw.replace(b"\0", b" ")
            if pid not in self.seen or self.seen[pid] != text.decode("utf-8", "replace"):
                self.seen[pid] = text.decode("utf-8", "replace")
                self.scanner.text(f"command line of pid {pid} ({text[:60]!r})", text)


def secret_repr_ok(value: object) -> bool:
    """True when ``value`` is a SecretStr or None (so it prints masked)."""
    return value is None or isinstance(value, SecretStr)
