"""Shared fixtures: a local Cliniko per test and an in-process tap run that captures output.

Also how the suite is split and spread (README's Tests): every test under tests/e2e/ is
marked `e2e`, tests/test_no_loss.py `property`; under pytest-xdist the e2e tests share one
worker (their installs and session servers), a module whose tests share a module- or
class-scoped fixture stays on one worker, and the longest stages are handed out first.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tap_cliniko.sandbox import SandboxConfig, SandboxServer
from tap_cliniko.tap import TapCliniko

SANDBOX_KEY = "sandbox0test0key-au1"
USER_AGENT = "tap-cliniko tests (tests@example.com)"
STREAMS = ("patients", "archived_patients", "deleted_patients")
STATUS_STREAM = {
    "active": "patients",
    "archived": "archived_patients",
    "deleted": "deleted_patients",
}


#: Tiers by path: `python3 dev.py test --quick` runs neither.
TIERS = {"e2e": "tests/e2e/", "property": "tests/test_no_loss.py"}
#: Tests that must stay slow, and why (marked `slow`: the whole suite runs them, --quick not).
SLOW = {
    "tests/test_faults.py::test_sigkill_at_random_points_never_loses_a_patient": (
        "dozens of tap processes killed at random points of 900-patient syncs, each rerun"
    ),
    "tests/test_faults.py::test_429_storm_longer_than_a_minute_completes_without_sending_early": (
        "the storm lasts over a minute of real time: waiting it out is what is tested"
    ),
    "tests/test_api_drift.py::test_every_collection_arrives_whole_when_the_api_drifts": (
        "every collection read through the drift fallbacks (created_at pages, no id order)"
    ),
    "tests/test_faults.py::test_unreachable_host_is_one_line_from_the_command_line": (
        "a real tap process waits out its retries against a closed port"
    ),
}
#: The order work is handed to the xdist workers: the longest first, so none is left last.
RANK = {"e2e": 0, "property": 1, "slow": 2}


def _tier(nodeid: str) -> str | None:
    path = nodeid.split("::", 1)[0]
    return next((tier for tier, prefix in TIERS.items() if path.startswith(prefix)), None)


def _shares_a_fixture(item: pytest.Item) -> bool:
    """Whether the test uses a fixture kept across tests of its module (or class)."""
    info = getattr(item, "_fixtureinfo", None)
    for definitions in getattr(info, "name2fixturedefs", {}).values():
        if any(d.scope in ("module", "class", "package") for d in definitions):
            return True
    return False


@pytest.hookimpl(tryfirst=True)  # before xdist's worker reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tiers by path, group what must share a worker, put the longest stages first."""
    for item in items:
        tier = _tier(item.nodeid)
        if tier:
            item.add_marker(getattr(pytest.mark, tier))
        if item.nodeid.split("[", 1)[0] in SLOW:
            item.add_marker(pytest.mark.slow)
        if tier == "e2e":
            item.add_marker(pytest.mark.xdist_group("e2e"))
        elif _shares_a_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
    items.sort(key=_rank)


def _rank(item: pytest.Item) -> int:
    """Modules stay whole: a tier is a path, and a slow test's file holds no module fixture."""
    tier = _tier(item.nodeid) or ("slow" if item.get_closest_marker("slow") else "")
    return RANK.get(tier, len(RANK))


#: Seconds spent in each test file (setup, call and teardown), reported at the end.
FILE_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    path = report.nodeid.split("::", 1)[0]
    FILE_SECONDS[path] = FILE_SECONDS.get(path, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Which files and tiers cost the time (summed over workers: more than the wall time)."""
    if not FILE_SECONDS:
        return
    tiers: dict[str, float] = {}
    for path, seconds in FILE_SECONDS.items():
        tier = _tier(path) or "other"
        tiers[tier] = tiers.get(tier, 0.0) + seconds
    terminalreporter.write_sep("=", "seconds in tests per tier and per file (all workers)")
    terminalreporter.write_line(", ".join(f"{t} {s:.0f} s" for t, s in sorted(tiers.items())))
    for path, seconds in sorted(FILE_SECONDS.items(), key=lambda kv: -kv[1])[:15]:
        terminalreporter.write_line(f"{seconds:8.1f} s  {path}")


@dataclass
class SyncResult:
    """What one tap run wrote: records per stream and in order, every STATE, the raw lines."""

    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    states: list[dict[str, Any]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    sequence: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def state(self) -> dict[str, Any] | None:
        """The last STATE the tap emitted."""
        return self.states[-1] if self.states else None

    def ids(self, stream: str) -> list[str]:
        """Ids of the stream's records, in the order emitted."""
        return [r["id"] for r in self.records.get(stream, [])]

    def bookmark(self, stream: str) -> str | None:
        """The stream's replication_key_value in the last STATE."""
        bookmarks = (self.state or {}).get("bookmarks", {})
        return bookmarks.get(stream, {}).get("replication_key_value")


def parse_output(text: str) -> SyncResult:
    """Split Singer output into records and states."""
    result = SyncResult(records={name: [] for name in STREAMS})
    for line in text.splitlines():
        if not line.strip():
            continue
        result.lines.append(line)
        message = json.loads(line)
        if message["type"] == "RECORD":
            result.records.setdefault(message["stream"], []).append(message["record"])
            result.sequence.append((message["stream"], message["record"]))
        elif message["type"] == "STATE":
            result.states.append(message["value"])
    return result


def tap_config(base_url: str, **overrides: Any) -> dict[str, Any]:
    """A config for the local Cliniko: no client throttle, small retry waits."""
    config: dict[str, Any] = {
        "api_key": SANDBOX_KEY,
        "user_agent": USER_AGENT,
        "base_url": base_url,
        "max_requests_per_minute": 200,
    }
    config.update(overrides)
    return config


def _discovery_config(config: dict[str, Any]) -> dict[str, Any]:
    """The settings discovery reads: not where Cliniko is (one catalog per shape of config)."""
    return {k: v for k, v in config.items() if k != "base_url"}


@functools.lru_cache(maxsize=32)
def _discovered(config_json: str) -> dict[str, Any]:
    """The catalog a tap with this config discovers (a tap start-up saved per run_tap)."""
    return TapCliniko(config=json.loads(config_json)).catalog_dict


def selecting(config: dict[str, Any], streams: Iterable[str]) -> dict[str, Any]:
    """The discovered catalog with exactly these streams selected (all their fields)."""
    discovered = _discovered(json.dumps(_discovery_config(config), sort_keys=True))
    wanted = set(streams)

    def select(entry: dict[str, Any]) -> dict[str, Any]:
        chosen = entry["tap_stream_id"] in wanted
        metadata = [
            {**m, "metadata": {**m["metadata"], "selected": chosen}} if m["breadcrumb"] == [] else m
            for m in entry["metadata"]
        ]
        return {**entry, "metadata": metadata}

    # New dicts where selection changes; the rest is shared (the tap copies what it reads).
    return {**discovered, "streams": [select(entry) for entry in discovered["streams"]]}


def run_tap(
    config: dict[str, Any],
    state: dict[str, Any] | None = None,
    catalog: dict[str, Any] | None = None,
    prepare: Callable[[TapCliniko], None] | None = None,
    streams: Iterable[str] | None = STREAMS,
) -> SyncResult:
    """Run a sync in this process and parse what it wrote to stdout.

    Without a catalog, only `streams` are selected (the patient streams unless told;
    None: every stream selected by default).
    """
    if catalog is None and streams is not None:
        catalog = selecting(config, streams)
    buffer = io.BytesIO()
    out = io.TextIOWrapper(buffer, encoding="utf-8", write_through=True)
    with redirect_stdout(out):
        tap = TapCliniko(config=config, state=state, catalog=catalog, validate_config=True)
        if prepare:
            prepare(tap)
        tap.sync_all()
        out.flush()
    return parse_output(buffer.getvalue().decode("utf-8"))


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start local Cliniko servers for a test: `with sandbox(patients=50) as server:`."""

    @contextmanager
    def start(**settings: Any) -> Iterator[SandboxServer]:
        settings.setdefault("api_key", SANDBOX_KEY)
        settings.setdefault("data_dir", tmp_path / f"cliniko-{len(list(tmp_path.iterdir()))}")
        with SandboxServer(SandboxConfig(**settings)) as server:
            yield server

    yield start
