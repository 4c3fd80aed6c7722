"""A circuit breaker for the Redis level: stop calling a server that keeps failing, probe it later.

Closed: calls go through; ``threshold`` consecutive failures open it. Open: calls are refused
(the cache falls back to the loader) until ``cooldown`` seconds have passed; then one caller is
let through as a probe (half-open). The probe's success closes the breaker, its failure opens it
for another cool-down. Failures are counted, never raised: the breaker only answers ``allow()``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]


class Breaker:
    """Consecutive-failure circuit breaker; thread-safe."""

    def __init__(
        self,
        *,
        threshold: int = 3,
        cooldown: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1 or cooldown <= 0:
            raise ValueError("threshold must be >= 1 and cooldown > 0")
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._state: State = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probe_started = 0.0
        self.opened = 0  # how many times it opened (a metric)
        self.last_opened_at: float | None = None  # clock() when it last opened

    @property
    def state(self) -> State:
        """closed, open or half_open."""
        return self._state

    def allow(self) -> bool:
        """May the caller use the server now? In half-open state only the probe may."""
        if self._state == "closed":  # the hot path reads one attribute, no lock
            return True
        with self._lock:
            now = self._clock()
            if self._state == "open" and now - self._opened_at >= self.cooldown:
                self._state = "half_open"
                self._probe_started = now
                return True
            # a probe that never reported (its thread died) must not wedge the breaker open
            if self._state == "half_open" and now - self._probe_started >= self.cooldown:
                self._probe_started = now
                return True
            return self._state == "closed"  # type: ignore[comparison-overlap]  # closed by another thread meanwhile

    def success(self) -> None:
        """The server answered: reset the failure count, close if half-open."""
        if self._state == "closed" and self._failures == 0:
            return
        with self._lock:
            self._failures = 0
            self._state = "closed"

    def trip(self) -> None:
        """Open now: another observer (the pub/sub heartbeat) saw the server stop answering."""
        with self._lock:
            if self._state != "open":
                self._open()

    def failure(self) -> None:
        """The server failed (refused, timed out, cluster down): count, maybe open."""
        with self._lock:
            self._failures += 1
            if self._state == "half_open" or (
                self._state == "closed" and self._failures >= self.threshold
            ):
                self._open()

    def _open(self) -> None:
        self._state = "open"
        self._opened_at = self._clock()
        self.last_opened_at = self._opened_at
        self.opened += 1
