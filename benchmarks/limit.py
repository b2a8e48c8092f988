"""The limit T(M) of a sync (issue 12) and a run: what it cost, and whether it met the target."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

CLINIKO_PER_MINUTE = 200  # what the local Cliniko enforces, in any rolling 60 s
BUDGET = 190  # B: the tap's default max_requests_per_minute
CONCURRENCY = 8  # C: the tap's default max_concurrency
TOLERANCE = 1.15  # wall <= TOLERANCE * T(M) + start-up


def limit_seconds(
    requests: int, r: float, budget: int = BUDGET, flight: int = CONCURRENCY
) -> float:
    """T(M): the fewest seconds any client needs for `requests` requests (issue 12)."""
    if requests <= 0:
        return 0.0
    return max((requests - 1) // budget * 60 + r, math.ceil(requests / flight) * r)


def old_bound_seconds(requests: int) -> float:
    """The old bound: the requests at Cliniko's 200 a minute."""
    return requests / CLINIKO_PER_MINUTE * 60


def predicted_seconds(requests: int, r: float, flight: int) -> float:
    """What a client with `flight` requests in flight should take (to skip the slow ones)."""
    return limit_seconds(requests, r, BUDGET, flight)


@dataclass
class Run:
    """One contender's run: what it cost, what it sent and what it got."""

    contender: str
    scenario: str
    n: int
    latency_ms: float
    wall: float
    cpu: float
    rss_mb: float
    records: int
    exit_code: int
    total_requests: int = 0  # M: every request the server saw
    throttled: int = 0
    startup: float = 0.0
    r: float = 0.0
    requests: Counter[str] = field(default_factory=Counter)  # per path
    pages: dict[str, int] = field(default_factory=dict)  # ceil(rows/100) per patient route
    short: Counter[str] = field(default_factory=Counter)  # answers of fewer than 100 rows
    per_stream: Counter[str] = field(default_factory=Counter)
    records_per_stream: Counter[str] = field(default_factory=Counter)
    routes_per_stream: dict[str, int] = field(default_factory=dict)
    progress_lines: int = 0

    @property
    def limit(self) -> float:
        return limit_seconds(self.total_requests, self.r)

    @property
    def allowed(self) -> float:
        return TOLERANCE * self.limit + self.startup

    @property
    def ratio(self) -> float:
        base = self.limit + self.startup
        return self.wall / base if base else 0.0

    @property
    def met(self) -> bool:
        return self.exit_code == 0 and self.throttled == 0 and self.wall <= self.allowed

    @property
    def per_second(self) -> float:
        return self.records / self.wall if self.wall else 0.0

    @property
    def per_cpu_second(self) -> float:
        return self.records / self.cpu if self.cpu else 0.0


@dataclass
class Skipped:
    contender: str
    scenario: str
    n: int
    latency_ms: float
    predicted: float
