"""Shared fixtures: a local Cliniko per test and an in-process tap run that captures output."""

from __future__ import annotations

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


def selecting(config: dict[str, Any], streams: Iterable[str]) -> dict[str, Any]:
    """The discovered catalog with exactly these streams selected (all their fields)."""
    catalog = TapCliniko(config=config).catalog_dict
    wanted = set(streams)
    for entry in catalog["streams"]:
        for metadata in entry["metadata"]:
            if metadata["breadcrumb"] == []:
                metadata["metadata"]["selected"] = entry["tap_stream_id"] in wanted
    return catalog


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
