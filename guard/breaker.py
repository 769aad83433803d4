"""A circuit breaker for the store: stop hammering a Redis that is down (hostile cases H32, H33).

Pure (no I/O, no event loop); the clock is injectable so tests step time by hand.

CLOSED: calls go through; ``failures`` consecutive store failures open it. OPEN: calls are refused
at once (the caller applies each list's fail-open/fail-closed policy without touching Redis) until
the cool-down has passed. HALF_OPEN: exactly one call, the probe, goes through; its success closes
the breaker, its failure opens it again for twice the previous cool-down, up to ``max_cooldown``
(slowapi's 2^n re-probe of dead storage; redis-py's ``multidb/circuit.py`` has the same states).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Counts consecutive store failures and decides whether the next call may reach the store."""

    def __init__(
        self,
        *,
        failures: int = 5,
        cooldown: float = 1.0,
        max_cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1:
            raise ValueError(f"failures must be at least 1, got {failures}")
        if not 0 < cooldown <= max_cooldown:
            raise ValueError(
                f"cooldown must be > 0 and <= max_cooldown ({max_cooldown}), got {cooldown}"
            )
        self.failures = failures
        self.cooldown = cooldown
        self.max_cooldown = max_cooldown
        self._clock = clock
        self._state: BreakerState = "closed"
        self._consecutive = 0
        self._current_cooldown = cooldown
        self._probe_at = 0.0
        #: How many times the breaker has opened (for counters and logs).
        self.opened = 0

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def open_for(self) -> float:
        """The cool-down the breaker is in (or was last in): doubles on every failed probe."""
        return self._current_cooldown

    def retry_in(self) -> float:
        """Seconds until a probe may go through (0 when calls go through now)."""
        if self._state != "open":
            return 0.0
        return max(0.0, self._probe_at - self._clock())

    def allow(self) -> bool:
        """True if this call may reach the store. In HALF_OPEN only one caller gets True: the
        probe, which must report back with :meth:`success`, :meth:`failure` or :meth:`release`."""
        if self._state == "closed":
            return True
        if self._state == "open" and self._clock() >= self._probe_at:
            self._state = "half_open"
            return True
        return False

    def success(self) -> None:
        """The store answered: close (from any state; an answer is proof it is reachable)."""
        self._state = "closed"
        self._consecutive = 0
        self._current_cooldown = self.cooldown

    def failure(self) -> None:
        """The store failed (refused, timed out, or the call was abandoned at a deadline)."""
        if self._state == "closed":
            self._consecutive += 1
            if self._consecutive >= self.failures:
                self._open(self.cooldown)
        elif self._state == "half_open":
            self._open(min(self._current_cooldown * 2, self.max_cooldown))
        # OPEN: a call admitted before the breaker opened failed late; it changes nothing.

    def release(self) -> None:
        """The call ended without an answer either way (cancelled early: the client left). A
        half-open probe gives its turn back, so the next call probes; otherwise nothing changes."""
        if self._state == "half_open":
            self._state = "open"
            self._probe_at = self._clock()

    def _open(self, cooldown: float) -> None:
        self._state = "open"
        self._current_cooldown = cooldown
        self._probe_at = self._clock() + cooldown
        self.opened += 1
