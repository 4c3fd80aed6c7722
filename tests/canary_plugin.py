"""Opt-in whole-suite canary: ``AFDB_CANARY=1 PYTHONPATH=tests .venv/bin/pytest -p canary_plugin``.

With AFDB_CANARY=1, every test runs with unique values in the environment for the secret settings
that do not change how a test connects (OpenAI key, S3 secret, Turso token, backup keys); tests
that set their own keep theirs. During the session it scans every log record created (any level
enabled), each test's captured output, logs and failure text, and every process's command line;
at the end it scans every file under the session's temporary folder (logs, manifests, data).
Findings are listed in the summary and fail the session. Without AFDB_CANARY=1 it does nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

import pytest

from canary import ProcWatcher, Scanner, canary_values, env_for

INERT = (
    "openai_api_key",
    "s3_secret_access_key",
    "turso_api_token",
    "backup_hmac_key",
    "backup_encryption_key",
)


class CanaryRun:
    """State of one canary session."""

    def __init__(self) -> None:
        values = canary_values("cnrysuite")
        self.env = env_for({k: v for k, v in values.items() if k in INERT})
        self.scanner = Scanner({f"AFDB_{k.upper()}": v for k, v in self.env.items()})
        self.watcher = ProcWatcher(self.scanner, interval=0.2)
        self._factory: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()

    def start(self) -> None:
        """Watch command lines and every log record created from now on."""
        self.watcher.__enter__()
        previous = self._factory
        scanner = self.scanner

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            with contextlib.suppress(Exception):  # a bad %-format is the logger's problem
                scanner.text(f"log record {record.name}", record.getMessage())
            return record

        logging.setLogRecordFactory(factory)

    def stop(self) -> None:
        """Stop watching."""
        logging.setLogRecordFactory(self._factory)
        self.watcher.__exit__(None, None, None)


_RUN: CanaryRun | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Start the canary when AFDB_CANARY=1."""
    global _RUN  # noqa: PLW0603 - one session, one canary
    if os.environ.get("AFDB_CANARY") == "1":
        _RUN = CanaryRun()
        _RUN.start()


@pytest.fixture(autouse=True)
def _canary_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the suite's own env cleaning, put the canary values into the environment."""
    if _RUN is not None:
        if "_clean_env" in request.fixturenames:
            request.getfixturevalue("_clean_env")
        for name, value in _RUN.env.items():
            monkeypatch.setenv(name, value)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Scan what the test printed, logged and, on failure, its error text."""
    if _RUN is None:
        return
    where = f"{report.nodeid} ({report.when})"
    _RUN.scanner.text(f"{where} output", report.capstdout + report.capstderr)
    _RUN.scanner.text(f"{where} log", report.caplog)
    if report.failed:
        _RUN.scanner.text(f"{where} failure", report.longreprtext)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Scan the session's temporary files; fail the session on any finding."""
    if _RUN is None:
        return
    _RUN.stop()
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None:
        _RUN.scanner.files(factory.getbasetemp())
    if _RUN.scanner.findings:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """List the findings (labels and places only, never the values)."""
    if _RUN is None:
        return
    found = sorted(set(_RUN.scanner.findings))
    terminalreporter.section("secret canary")
    terminalreporter.write_line(
        f"{_RUN.scanner.checked} texts scanned, {len(_RUN.watcher.seen)} command lines watched, "
        f"{len(found)} findings"
    )
    for line in found:
        terminalreporter.write_line(f"  {line}")
