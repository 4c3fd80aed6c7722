"""Replication state for `afdb env show`, health and metrics, and sqld replica lag measurement.

:func:`replication_status` returns plain numbers and words (no secret, no exception text):

* ``embedded_replica`` (replica mode): seconds since the last successful sync of the local file
  (``db/replica.py``), failures, the sync interval. Only known inside a process that has the
  database open: pass ``db``.
* ``litestream`` (embedded mode): whether ``afdb replicate`` runs (its state file), restarts,
  the last restore drill (``verified_at``, ``verify_ok``), and how far the replica is behind the
  local Litestream position: transaction ids (TXIDs) of the newest local and replica LTX files,
  and ``lag_seconds`` = age of the oldest local LTX file the replica does not have yet (0 when
  caught up). Commits Litestream has not read from the WAL yet (at most its monitor interval,
  1 s) are not counted.

:func:`measure_sqld_lag` measures a sqld read replica: write a marker on the primary, poll the
replica until it is visible, repeat; p50/p99 in seconds.
"""

from __future__ import annotations

import contextlib
import os
import re
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoforge_data.errors import AfdbError, InvalidInput
from autoforge_data.settings import Mode, Settings

_LTX = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.ltx$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def replication_status(settings: Settings, db: Any = None) -> dict[str, Any]:
    """The replication state of the configured database, as plain values."""
    mode = settings.target.mode
    out: dict[str, Any] = {"mode": mode.value, "embedded_replica": None, "litestream": None}
    if mode is Mode.REPLICA:
        out["embedded_replica"] = embedded_replica_status(settings, db)
    elif mode is Mode.EMBEDDED:
        out["litestream"] = litestream_status(settings)
    return out


def embedded_replica_status(settings: Settings, db: Any = None) -> dict[str, Any]:
    """Lag of the embedded replica open in this process (``db.replica``), else unknowns."""
    replica = getattr(db, "replica", None)
    interval = settings.sync_interval or 1.0
    if replica is None:
        return {
            "open": False,
            "lag_seconds": None,
            "sync_failures": None,
            "sync_interval": interval,
        }
    lag = replica.lag_seconds()
    return {
        "open": True,
        "lag_seconds": None if lag is None else round(lag, 3),
        "sync_failures": int(replica.failures),
        "last_sync_ok": replica.last_error is None,
        "sync_interval": interval,
    }


def litestream_status(settings: Settings) -> dict[str, Any]:
    """State of `afdb replicate` for the embedded database (see the module docstring)."""
    from autoforge_data.ops import litestream

    path = settings.target.path
    assert path is not None
    state_path = litestream.state_dir(path) / f"{path.name}.state.json"
    state = litestream.read_state(state_path)
    url = state.replica if state else (settings.replicate_url or "")
    out: dict[str, Any] = {
        "configured": bool(state or settings.replicate_url),
        "replica": url or None,
        "state": _live_state(state),
        "restarts": state.restarts if state else 0,
        "sync_interval": state.sync_interval if state else settings.replicate_sync_interval,
        "verified_at": state.verified_at if state else None,  # last restore drill (unix time)
        "verify_ok": state.verify_ok if state else None,
        "local_txid": None,
        "replica_txid": None,
        "lag_seconds": None,
    }
    local = _ltx_files(Path(f"{path.parent}/.{path.name}-litestream") / "ltx")
    out["local_txid"] = max((f[1] for f in local), default=None)
    replica_txid = _replica_txid(settings, path, url) if url else None
    out["replica_txid"] = replica_txid
    if out["local_txid"] is not None and replica_txid is not None:
        out["lag_seconds"] = _lag(local, replica_txid)
    return out


def _live_state(state: Any) -> str:
    if state is None:
        return "not started"
    if state.state in ("stopped", "failed"):
        return str(state.state)
    return str(state.state) if _pid_alive(state.supervisor_pid) else "dead"


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ltx_files(root: Path) -> list[tuple[int, int, float]]:
    """(min txid, max txid, mtime) of every LTX file under ``root/<level>/``."""
    files = []
    with contextlib.suppress(OSError):
        for level in root.iterdir():
            with contextlib.suppress(OSError):
                for entry in os.scandir(level):
                    m = _LTX.match(entry.name)
                    if m:
                        with contextlib.suppress(OSError):
                            mtime = entry.stat().st_mtime
                            files.append((int(m.group(1), 16), int(m.group(2), 16), mtime))
    return files


def _lag(local: list[tuple[int, int, float]], replica_txid: int) -> float:
    behind = [mtime for lo, hi, mtime in local if hi > replica_txid]
    return 0.0 if not behind else round(max(0.0, time.time() - min(behind)), 3)


def _replica_txid(settings: Settings, db_path: Path, url: str) -> int | None:
    from autoforge_data.ops import litestream

    try:
        replica = litestream.parse_replica_url(url)
    except InvalidInput:
        return None
    if replica.path is not None:
        return max((f[1] for f in _ltx_files(replica.path / "ltx")), default=None)
    return _remote_replica_txid(settings, db_path)


def _remote_replica_txid(settings: Settings, db_path: Path) -> int | None:
    """Ask Litestream (``litestream ltx``) for the replica's newest TXID; None on any failure."""
    from autoforge_data.ops import litestream

    config = litestream.state_dir(db_path) / f"{db_path.name}.yml"
    if not config.exists():
        return None
    try:
        argv = [litestream.litestream_binary(), "ltx", "-no-expand-env", "-config", str(config)]
        done = subprocess.run(  # noqa: S603 - fixed argv, secrets only in the env
            [*argv, str(db_path)],
            capture_output=True,
            timeout=5,
            env=litestream.child_env(settings),
            check=False,
        )
    except (subprocess.TimeoutExpired, AfdbError, OSError):
        return None
    txids = []
    for line in done.stdout.decode(errors="replace").splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 3 and re.fullmatch(r"[0-9a-f]{16}", cols[2]):
            txids.append(int(cols[2], 16))
    return max(txids, default=None)


# --- sqld read replica lag ---------------------------------------------------------------------


@dataclass(frozen=True)
class LagStats:
    """Seconds from a commit on the primary until the replica served it."""

    samples: list[float]

    @property
    def p50(self) -> float:
        """Median lag in seconds."""
        return statistics.median(self.samples)

    @property
    def p99(self) -> float:
        """99th percentile lag in seconds (nearest rank)."""
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]

    @property
    def max(self) -> float:
        """Largest lag in seconds."""
        return max(self.samples)


def measure_sqld_lag(
    primary: Callable[[], Any],
    replica: Callable[[], Any],
    *,
    table: str,
    samples: int = 50,
    timeout: float = 10.0,
    poll: float = 0.002,
) -> LagStats:
    """Write ``samples`` markers into ``table`` on the primary; time until the replica has each.

    ``primary``/``replica`` make DB-API connections (our Hrana driver); ``table`` is a scratch
    table the caller owns (created if missing), never a table of the app's schema.
    """
    if not _IDENT.match(table) or samples < 1 or timeout <= 0:
        raise InvalidInput("invalid lag probe", hint="a plain table name, samples >= 1")
    wconn, rconn = primary(), replica()
    try:
        wconn.execute(f"CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY, at REAL)")
        wconn.commit()
        out = [_one_lag(wconn, rconn, table, timeout, poll) for _ in range(samples)]
    finally:
        wconn.close()
        rconn.close()
    return LagStats(out)


def _one_lag(wconn: Any, rconn: Any, table: str, timeout: float, poll: float) -> float:
    marker = uuid.uuid4().hex
    wconn.execute(f"INSERT INTO {table} (id, at) VALUES (?, ?)", (marker, time.time()))
    wconn.commit()
    committed = time.perf_counter()
    while True:
        row = rconn.execute(f"SELECT 1 FROM {table} WHERE id = ?", (marker,)).fetchone()
        rconn.rollback()
        if row is not None:
            return time.perf_counter() - committed
        if time.perf_counter() - committed > timeout:
            raise AfdbError(
                f"the replica did not show a primary write within {timeout:g}s",
                hint="check the replica's --primary-grpc-url and the primary's gRPC port",
            )
        time.sleep(poll)
