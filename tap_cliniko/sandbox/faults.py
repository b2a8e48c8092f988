"""Fault injection for tests and benchmarks: off unless asked for."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Faults:
    """The live fault settings of a local Cliniko; change them while it runs."""

    latency_ms: float = 0.0
    error_rate: float = 0.0
    drop_rate: float = 0.0
    truncate_rate: float = 0.0
    html_200_rate: float = 0.0
    midbody_drop_rate: float = 0.0  # headers and part of the body, then the socket closes
    seed: int = 0
    #: Cliniko's clock stopped at this UNIX time (None: it runs): Date headers and the
    #: stamps of changes then fall in a second a test chose, however slow the machine.
    clock_stopped_at: float | None = None
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _fail_next: list[int] = field(default_factory=list, repr=False)
    _delay_next: list[float] = field(default_factory=list, repr=False)
    _redirect_next: list[str] = field(default_factory=list, repr=False)
    _throttle_until: float = 0.0
    _throttle_header: str = "X-RateLimit-Reset"

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def fail_next(self, count: int, status: int = 503) -> None:
        """Answer the next count requests with status."""
        with self._lock:
            self._fail_next.extend([status] * count)

    def delay_next(self, count: int, seconds: float) -> None:
        """Hold the next count requests for seconds before answering them (a client times out)."""
        with self._lock:
            self._delay_next.extend([seconds] * count)

    def redirect_next(self, url: str, count: int = 1) -> None:
        """Answer the next count requests with 302 Found pointing at url."""
        with self._lock:
            self._redirect_next.extend([url] * count)

    def throttle_for(self, seconds: float, header: str = "X-RateLimit-Reset") -> None:
        """Answer 429 to every request for seconds, telling when it ends in header."""
        with self._lock:
            self._throttle_until = time.time() + seconds
            self._throttle_header = header

    def forced_status(self) -> int | None:
        """A status the next request must get from fail_next, if any."""
        with self._lock:
            return self._fail_next.pop(0) if self._fail_next else None

    def forced_delay(self) -> float:
        """Seconds the next request must wait from delay_next (0: none)."""
        with self._lock:
            return self._delay_next.pop(0) if self._delay_next else 0.0

    def forced_redirect(self) -> str | None:
        """Where the next request must be sent from redirect_next, if anywhere."""
        with self._lock:
            return self._redirect_next.pop(0) if self._redirect_next else None

    def throttled(self) -> tuple[float, str] | None:
        """(until, header) while a throttle_for storm lasts."""
        with self._lock:
            if time.time() < self._throttle_until:
                return self._throttle_until, self._throttle_header
            return None

    def roll(self, rate: float) -> bool:
        """True with probability rate (seeded)."""
        if rate <= 0:
            return False
        with self._lock:
            return self._rng.random() < rate

    def pick_error(self) -> int:
        with self._lock:
            return self._rng.choice([500, 502, 503])
