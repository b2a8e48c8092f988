"""Fault injection for tests and benchmarks: off unless asked for."""

from __future__ import annotations

import fnmatch
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


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
    _fail_next: list[tuple[int, Callable[[str, Any], bool] | None]] = field(
        default_factory=list, repr=False
    )
    _delay_next: list[float] = field(default_factory=list, repr=False)
    _redirect_next: list[str] = field(default_factory=list, repr=False)
    _route_faults: dict[str, list[int]] = field(default_factory=dict, repr=False)
    _drip_next: list[float] = field(default_factory=list, repr=False)
    #: Each dripped response once it ended: True sent whole, False the client hung up first.
    dripped: list[bool] = field(default_factory=list, repr=False)
    _throttle_until: float = 0.0
    _throttle_header: str = "X-RateLimit-Reset"
    #: List pages glitched per path: (kind, first request glitched, how many), requests seen.
    _glitches: dict[str, tuple[str, int, int]] = field(default_factory=dict, repr=False)
    _list_requests: dict[str, int] = field(default_factory=dict, repr=False)
    #: q[] filter prefixes a path's lists drop (a proxy, an endpoint not honouring them).
    _ignored_filters: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)
    #: q[] filter prefixes a path's lists answer 400 for (an account refusing a filter).
    _refused_filters: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def fail_next(
        self, count: int, status: int = 503, where: Callable[[str, Any], bool] | None = None
    ) -> None:
        """Answer the next count requests with status (only those where(path, args) picks)."""
        with self._lock:
            self._fail_next.extend([(status, where)] * count)

    def delay_next(self, count: int, seconds: float) -> None:
        """Hold the next count requests for seconds before answering them (a client times out)."""
        with self._lock:
            self._delay_next.extend([seconds] * count)

    def drip_next(self, count: int, every_ms: float) -> None:
        """Answer the next count good GETs with headers, then the body a byte every every_ms."""
        with self._lock:
            self._drip_next.extend([every_ms] * count)

    def redirect_next(self, url: str, count: int = 1) -> None:
        """Answer the next count requests with 302 Found pointing at url."""
        with self._lock:
            self._redirect_next.extend([url] * count)

    def throttle_for(self, seconds: float, header: str = "X-RateLimit-Reset") -> None:
        """Answer 429 to every request for seconds, telling when it ends in header."""
        with self._lock:
            self._throttle_until = time.time() + seconds
            self._throttle_header = header

    def fail_route_after(self, route: str, answered: int, status: int = 403) -> None:
        """Answer status on route once `answered` of its requests were let through.

        route: a path without /v1, `*` for any part (`/businesses/*/practitioners`). 403:
        the key's user loses a permission mid-sync (an administrator may change a role at
        any time); 500: the route breaks for good half-way through a read.
        """
        with self._lock:
            self._route_faults[route] = [answered, status]

    def heal_routes(self) -> None:
        """Stop every fail_route_after."""
        with self._lock:
            self._route_faults.clear()

    def route_status(self, path: str) -> int | None:
        """A status a request for path (without /v1) must get from fail_route_after, if any."""
        with self._lock:
            for route, fault in self._route_faults.items():
                if fnmatch.fnmatchcase(path, route):
                    fault[0] -= 1
                    return fault[1] if fault[0] < 0 else None
            return None

    def forced_status(self, path: str = "", args: Any = None) -> int | None:
        """A status this request must get from fail_next, if any."""
        with self._lock:
            for n, (status, where) in enumerate(self._fail_next):
                if where is None or where(path, args):
                    del self._fail_next[n]
                    return status
            return None

    def forced_delay(self) -> float:
        """Seconds the next request must wait from delay_next (0: none)."""
        with self._lock:
            return self._delay_next.pop(0) if self._delay_next else 0.0

    def forced_drip(self) -> float:
        """Milliseconds between the next answer's bytes from drip_next (0: no drip)."""
        with self._lock:
            return self._drip_next.pop(0) if self._drip_next else 0.0

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

    def glitch_pages(self, path: str, kind: str, start: int = 1, times: int = 1) -> None:
        """Glitch `times` list answers of path from its start-th list request on.

        kind: 'empty' (no rows; total_entries and links kept), 'no_next' (the rows without
        links.next), 'loop' (links.next back at page 1). times=0 ends the glitch.
        """
        if kind not in ("empty", "no_next", "loop"):
            raise ValueError("kind must be 'empty', 'no_next' or 'loop'")
        with self._lock:
            seen = self._list_requests.get(path, 0)
            self._glitches[path] = (kind, seen + start, times)

    def page_glitch(self, path: str) -> str | None:
        """The glitch of this list request of path, if any (counts the request)."""
        with self._lock:
            number = self._list_requests[path] = self._list_requests.get(path, 0) + 1
            kind, first, times = self._glitches.get(path, ("", 0, 0))
            return kind if first <= number < first + times else None

    def ignore_filters(self, path: str, *prefixes: str) -> None:
        """Make path's lists drop q[] filters starting with any of prefixes (none: drop none)."""
        with self._lock:
            self._ignored_filters[path] = prefixes

    def honours(self, path: str, query: str) -> bool:
        """Whether path's lists apply the q[] filter query."""
        with self._lock:
            prefixes = self._ignored_filters.get(path)
        return not (prefixes and query.startswith(prefixes))

    def refuse_filters(self, path: str, *prefixes: str) -> None:
        """Make path's lists answer 400 to q[] filters starting with any of prefixes."""
        with self._lock:
            self._refused_filters[path] = prefixes

    def refuses(self, path: str, query: str) -> bool:
        """Whether path's lists answer 400 to the q[] filter query."""
        with self._lock:
            prefixes = self._refused_filters.get(path, ())
        return bool(prefixes) and query.startswith(prefixes)
