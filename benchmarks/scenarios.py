"""The scenarios: full syncs of N patients, the record path, a whole account, incremental runs."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from accounts import HERE, ROOT, dataset
from contenders import TAP_CONTENDERS
from limit import (
    Run,
    Skipped,
    predicted_seconds,
)
from measure import round_trip, run_once

RUNS_FILE = HERE / "runs.json"  # every figure of the last run: --report-only renders it again
LATENCIES = (300, 600)
SIZES = [1_000, 4_000, 10_000, 100_000]
QUICK_SIZES = [1_000, 4_000]
WHOLE_PATIENTS, QUICK_WHOLE_PATIENTS = 1_000, 50
SLOW_LIMIT = 120.0  # max_concurrency 1 and 2 run only where predicted to take less (seconds)


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    memory = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}){memory}, Python {platform.python_version()},"
        f" {platform.system()} {platform.release()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def plain(value: Any) -> Any:
    return dict(value) if isinstance(value, Counter) else value


class Bench:
    """Runs the scenarios in turn and keeps every run (and every run it chose to skip)."""

    def __init__(self) -> None:
        self.runs: list[Run] = []
        self.skipped: list[Skipped] = []
        self.machine = machine()
        self.commit = git_commit()

    def save(self, sizes: list[int], whole: int, quick: bool) -> None:
        figures = {
            "machine": self.machine,
            "commit": self.commit,
            "sizes": sizes,
            "whole": whole,
            "quick": quick,
            # Not asdict(): it rebuilds a Counter from (key, count) pairs, counting the pairs.
            "runs": [
                {f.name: plain(getattr(run, f.name)) for f in fields(run)} for run in self.runs
            ],
            "skipped": [asdict(skip) for skip in self.skipped],
        }
        RUNS_FILE.write_text(json.dumps(figures, indent=1) + "\n")

    @classmethod
    def load(cls) -> tuple[Bench, list[int], int, bool]:
        figures = json.loads(RUNS_FILE.read_text())
        bench = cls()
        bench.machine, bench.commit = figures["machine"], figures["commit"]
        counters = ("requests", "short", "per_stream", "records_per_stream")
        for data in figures["runs"]:
            run = Run(**data)
            for name in counters:
                setattr(run, name, Counter(data[name]))
            bench.runs.append(run)
        bench.skipped = [Skipped(**data) for data in figures["skipped"]]
        return bench, figures["sizes"], figures["whole"], figures["quick"]

    def find(self, contender: str, scenario: str, n: int, latency: float = 0) -> Run | None:
        return next(
            (
                r
                for r in self.runs
                if (r.contender, r.scenario, r.n, r.latency_ms) == (contender, scenario, n, latency)
            ),
            None,
        )

    def add(self, pair: tuple[Run, dict[str, Any] | None]) -> dict[str, Any] | None:
        self.runs.append(pair[0])
        return pair[1]

    def slow_ones(
        self, scenario: str, n: int, latency: float, first: Run
    ) -> Iterator[tuple[str, float]]:
        """The slower tap settings worth running: predicted under SLOW_LIMIT from c8's run."""
        for contender in TAP_CONTENDERS[1:]:
            flight = int(contender.removeprefix("tap c"))
            guess = predicted_seconds(first.total_requests, first.r, flight) + first.startup
            if guess <= SLOW_LIMIT:
                yield contender, guess
            else:
                self.skipped.append(Skipped(contender, scenario, n, latency, guess))

    def record_path(self, n: int) -> None:
        with dataset(n) as data:
            for contender in ("tap", "sdk-default", "dlt"):
                self.add(run_once(contender, "record path", n, data))

    def full_sync(self, n: int, latency: float) -> None:
        with dataset(n) as data:
            r = round_trip(str(n), data, n, 0.0, latency)
            c8 = run_once("tap c8", "full sync", n, data, latency_ms=latency, r=r)[0]
            self.runs.append(c8)
            self.add(run_once("dlt", "full sync", n, data, latency_ms=latency, r=r))
            for contender, _ in self.slow_ones("full sync", n, latency, c8):
                self.add(run_once(contender, "full sync", n, data, latency_ms=latency, r=r))

    def whole_account(self, patients: int, latency: float) -> None:
        with dataset(patients, 1.0) as data:
            self._whole_account(patients, latency, data)

    def _whole_account(self, patients: int, latency: float, data: Path) -> None:
        """Every default stream of a whole account, then two incremental runs on its state."""
        r = round_trip(f"whole-{patients}", data, patients, 1.0, latency)

        def run(contender: str, scenario: str, state: dict[str, Any] | None = None) -> Any:
            return run_once(
                contender,
                scenario,
                patients,
                data,
                collections=1.0,
                latency_ms=latency,
                state=state,
                r=r,
            )

        c8, state = run("tap c8", "whole account")
        self.runs.append(c8)
        # The first incremental run may learn (and store) what a route refuses; the second is
        # the steady state of a quiet account.
        state = self.add(run("tap c8", "incremental 1", state))
        self.add(run("tap c8", "incremental 2", state))
        for contender, _ in self.slow_ones("whole account", patients, latency, c8):
            self.add(run(contender, "whole account"))
