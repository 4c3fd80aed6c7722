"""Embedded replica: reads from a local libSQL file kept in sync with the primary.

* Reads go to one local libsql-experimental connection (a replica file has one replicator; its
  reads cost ~80 µs, so one serialised connection is plenty).
* Writes never go through the replica connection: they go to the primary through our Hrana driver
  (bounded timeouts, no GIL held while the network waits). After a write commits, the replica is
  synced before the unit of work returns, so the caller reads its own writes.
* ``sync()`` of libsql-experimental holds the GIL and has no timeout, so we never call it against
  a server that does not answer: a short HTTP probe of the primary comes first, and a failed probe
  skips the sync (the lag grows and is reported; reads keep working from the local file).
* A background thread syncs every ``AFDB_SYNC_INTERVAL`` seconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import Any

import httpx

from autoforge_data.db.engine import Factory, hrana_factory
from autoforge_data.errors import Busy, Unavailable
from autoforge_data.fsutil import ensure_private_dir
from autoforge_data.settings import Settings

log = logging.getLogger(__name__)
DEFAULT_SYNC_INTERVAL = 1.0


class LocalPool:
    """The read "pool" of a replica: one local connection, used under the replica's lock.

    Reads and ``sync()`` never overlap; a checkout waits at most ``wait`` seconds.
    """

    def __init__(self, replica: Replica, wait: float) -> None:
        self._replica = replica
        self._wait = wait

    def checkout(self) -> Any:
        """Take the local connection (Busy if a long sync or read holds it past the wait)."""
        if not self._replica.lock.acquire(timeout=self._wait):
            raise Busy("the local replica is busy", hint="retry; a sync may be running")
        return self._replica.conn

    def checkin(self, conn: Any, *, discard: bool = False) -> None:
        """Give the connection back (it is never closed here: it is the only one)."""
        self._replica.lock.release()

    def close(self) -> None:
        """Nothing to close here; :meth:`Replica.close` closes the connection."""


class Replica:
    """The local replica of a primary; see the module docstring."""

    def __init__(self, settings: Settings) -> None:
        os.environ.setdefault("RUST_LOG", "error")  # libsql's replicator logs every handshake
        import libsql_experimental

        target = settings.target
        assert target.path is not None
        assert target.url is not None
        self.path = target.path
        self.url = target.url
        self.settings = settings
        self.primary_factory: Factory = hrana_factory(settings, target.url)
        token = settings.auth_token.get_secret_value() if settings.auth_token else None
        ensure_private_dir(self.path.parent)
        kwargs: dict[str, Any] = {"sync_url": self.url}
        if token:
            kwargs["auth_token"] = token
        self.conn = libsql_experimental.connect(str(self.path), **kwargs)
        self.lock = threading.RLock()
        self.last_sync: float | None = None  # monotonic time of the last successful sync
        self.last_error: str | None = None
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            self.sync()
        except Unavailable:
            log.warning("replica: primary unreachable at start; serving local data")
        if settings.sync_interval != 0:
            self._thread = threading.Thread(
                target=self._loop,
                args=(settings.sync_interval or DEFAULT_SYNC_INTERVAL,),
                name="afdb-replica-sync",
                daemon=True,
            )
            self._thread.start()

    def read_pool(self) -> LocalPool:
        """The pool that read units of work use."""
        return LocalPool(self, self.settings.db_timeout)

    def _probe(self) -> None:
        try:
            r = httpx.get(f"{self.url}/health", timeout=self.settings.connect_timeout)
        except httpx.HTTPError:
            raise Unavailable(
                "the primary did not answer; the replica serves possibly stale data",
                hint="check AFDB_SYNC_URL and the primary's health",
            ) from None
        if r.status_code >= 500:
            raise Unavailable("the primary is unhealthy", hint="check the primary's logs")

    def sync(self) -> None:
        """Pull the primary's new frames now (after a probe that bounds the wait)."""
        try:
            self._probe()
            with self.lock:
                self.conn.sync()
        except Unavailable as exc:
            self.failures += 1
            self.last_error = exc.message
            raise
        except Exception as exc:
            self.failures += 1
            self.last_error = type(exc).__name__
            raise Unavailable(
                "replica sync failed", hint="check the primary and the token"
            ) from None
        self.last_sync = time.monotonic()
        self.last_error = None

    def after_write(self, replication_index: int | None) -> None:
        """Make the primary's committed write visible locally (read-your-writes).

        The write has committed on the primary whatever happens here: a failed sync is recorded
        (lag grows) and not raised, so a caller never retries a write that succeeded.
        """
        try:
            self.sync()
        except Unavailable:
            log.warning("replica: sync after write failed; local reads may be stale")

    def lag_seconds(self) -> float | None:
        """Seconds since the last successful sync (None if it never succeeded)."""
        return None if self.last_sync is None else time.monotonic() - self.last_sync

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            with contextlib.suppress(Unavailable):  # counted in failures; the next tick retries
                self.sync()

    def close(self) -> None:
        """Stop the background sync and close the local connection."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.connect_timeout + 5)
        with self.lock:
            self.conn.close()
