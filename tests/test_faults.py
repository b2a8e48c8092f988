"""Rate limits, server faults and interruption: retried where right, never a silent loss."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tap_cliniko.client import RequestBudget
from tap_cliniko.tap import TapCliniko
from tests.conftest import STATUS_STREAM, run_tap, tap_config


class RecordingSleep:
    """Stands in for time.sleep: records each wait, then really sleeps it (capped)."""

    def __init__(self, cap: float = 5.0) -> None:
        self.waits: list[float] = []
        self.cap = cap

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        time.sleep(min(seconds, self.cap))


def patch_sleep(sleep: RecordingSleep) -> Any:
    def prepare(tap: TapCliniko) -> None:
        tap.api._sleep = sleep
        tap.api.budget.sleep = sleep

    return prepare


@pytest.mark.parametrize("header", ["X-RateLimit-Reset", "Retry-After"])
def test_429_waits_as_the_header_says_then_continues(sandbox: Any, header: str) -> None:
    with sandbox(patients=60, seed=31) as server:
        server.faults.throttle_for(2.5, header=header)
        sleep = RecordingSleep()
        result = run_tap(tap_config(server.base_url), prepare=patch_sleep(sleep))
        throttled = [r for r in server.requests if r.status == 429]
        expected = {e["status"] for e in server.store.snapshot().values()}
    assert throttled, "the server throttled"
    assert sleep.waits and 1.0 <= sleep.waits[0] <= 3.5, sleep.waits
    assert len(throttled) <= 3, "the tap waited instead of hammering"
    assert {s for s, rows in result.records.items() if rows} == {STATUS_STREAM[s] for s in expected}


@pytest.mark.parametrize("header", ["X-RateLimit-Reset", "Retry-After"])
def test_429_storm_longer_than_a_minute_completes_without_sending_early(
    sandbox: Any, header: str
) -> None:
    with sandbox(patients=30, seed=32) as server:
        server.faults.throttle_for(65, header=header)
        started = time.monotonic()
        result = run_tap(tap_config(server.base_url))
        elapsed = time.monotonic() - started
        throttled = [r.time for r in server.requests if r.status == 429]
    assert elapsed >= 60, "the storm lasted over a minute and the sync outlived it"
    assert result.records["patients"], "the sync completed after the storm"
    assert len(throttled) <= 3, f"sent {len(throttled)} requests into the storm"


def test_5xx_bursts_are_retried_with_growing_waits(sandbox: Any) -> None:
    with sandbox(patients=80, seed=33) as server:
        server.faults.fail_next(3, status=503)
        sleep = RecordingSleep()
        result = run_tap(tap_config(server.base_url, per_page=20), prepare=patch_sleep(sleep))
        statuses = [r.status for r in server.requests]
        active = {i for i, e in server.store.snapshot().items() if e["status"] == "active"}
    assert statuses[:3] == [503, 503, 503]
    assert sleep.waits[:3] == [1, 2, 4]
    assert set(result.ids("patients")) == active


@pytest.mark.parametrize("fault", ["error_rate", "drop_rate", "truncate_rate", "html_200_rate"])
def test_random_faults_are_retried_and_lose_nothing(sandbox: Any, fault: str) -> None:
    with sandbox(patients=150, seed=34, fault_seed=7, **{fault: 0.3}) as server:
        sleep = RecordingSleep(cap=0.05)
        result = run_tap(tap_config(server.base_url, per_page=20), prepare=patch_sleep(sleep))
        server.faults.__dict__.update({fault: 0.0})
        snapshot = server.store.snapshot()
    assert sleep.waits, "faults were injected and retried"
    for stream in ("patients", "archived_patients", "deleted_patients"):
        expected = {i for i, e in snapshot.items() if STATUS_STREAM[e["status"]] == stream}
        assert set(result.ids(stream)) == expected


def test_budget_never_exceeds_its_rolling_minute() -> None:
    now = [0.0]
    sent: list[float] = []

    def sleep(seconds: float) -> None:
        now[0] += seconds

    budget = RequestBudget(5, clock=lambda: now[0], sleep=sleep)
    for _ in range(17):
        budget.acquire()
        sent.append(now[0])
        now[0] += 1.0
    for i, moment in enumerate(sent):
        assert sum(1 for s in sent[i:] if s - moment < 60) <= 5
    budget.pause(30)
    before = now[0]
    budget.acquire()
    assert now[0] - before >= 30


def test_sigkill_at_random_points_never_loses_a_patient(tmp_path: Path, sandbox: Any) -> None:
    """Kill the tap mid-sync again and again; rerun from the last state the target got."""
    rng = random.Random(35)
    with sandbox(patients=400, seed=35, latency_ms=15, collections=0) as server:
        config = tmp_path / "config.json"
        config.write_text(json.dumps(tap_config(server.base_url, per_page=20)))
        received: dict[str, set[str]] = {s: set() for s in STATUS_STREAM.values()}
        state: dict[str, Any] | None = None
        for attempt in range(6):
            args = [sys.executable, "-c", "from tap_cliniko.tap import main; main()"]
            args += ["--config", str(config)]
            if state is not None:
                (tmp_path / "state.json").write_text(json.dumps(state))
                args += ["--state", str(tmp_path / "state.json")]
            process = subprocess.Popen(
                args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=dict(os.environ)
            )
            if attempt < 5:
                time.sleep(rng.uniform(0.5, 2.5))
                process.send_signal(signal.SIGKILL)
            output, _ = process.communicate(timeout=120)
            for line in output.decode().splitlines():
                try:
                    message = json.loads(line)
                except ValueError:
                    break  # the kill cut this line: the target would drop it too
                if message["type"] == "RECORD":
                    received.setdefault(message["stream"], set()).add(message["record"]["id"])
                elif message["type"] == "STATE":
                    state = message["value"]
            if attempt == 5:
                assert process.returncode == 0
        snapshot = server.store.snapshot()
    for patient_id, entry in snapshot.items():
        assert patient_id in received[STATUS_STREAM[entry["status"]]], patient_id
