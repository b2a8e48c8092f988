"""A stream read only in part (refused with 403, or failing half-way) marks nothing done.

ACTIVATE_VERSION tells an SQL target that every row of an older version is gone, so it goes
out only after the last record of a complete read; a permission lost mid-sync fails the run
in one line and leaves the stream's bookmark where it was.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tap_cliniko.resources import BY_NAME
from tests.conftest import run_tap, selecting, tap_config

TAP = [sys.executable, "-c", "from tap_cliniko.tap import main; main()"]
FULL_TABLE = ["taxes", "users", "services", "business_practitioners"]


@dataclass
class Run:
    """One run of the tap's command line: its exit code, Singer messages and stderr."""

    code: int
    messages: list[dict[str, Any]]
    stderr: str

    def state(self, before: dict[str, Any] | None) -> dict[str, Any] | None:
        """The state a runner keeps for the next run: the last STATE, else the one it had."""
        states = [m["value"] for m in self.messages if m["type"] == "STATE"]
        return states[-1] if states else before

    def records(self, stream: str) -> list[dict[str, Any]]:
        return [
            m["record"] for m in self.messages if m["type"] == "RECORD" and m["stream"] == stream
        ]

    def activations(self, stream: str) -> list[int]:
        """Indexes of the stream's ACTIVATE_VERSION messages."""
        return [
            i
            for i, m in enumerate(self.messages)
            if m["type"] == "ACTIVATE_VERSION" and m["stream"] == stream
        ]

    @property
    def errors(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("tap-cliniko: error:")]


def run_cli(
    tmp_path: Path, config: dict[str, Any], streams: list[str], state: dict[str, Any] | None = None
) -> Run:
    """Run `tap-cliniko --config --catalog [--state]` as a process, as an orchestrator would."""
    files = {"config": config, "catalog": selecting(config, streams)}
    if state is not None:
        files["state"] = state
    args = [*TAP]
    for kind, document in files.items():
        path = tmp_path / f"{kind}.json"
        path.write_text(json.dumps(document))
        args += [f"--{kind}", str(path)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    messages = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return Run(result.returncode, messages, result.stderr)


def assert_failed_in_one_line(run: Run, *words: str) -> None:
    """Exit 1, one error line holding each word, no traceback, no 'skipped' warning."""
    assert run.code == 1, run.stderr[-2000:]
    assert len(run.errors) == 1, run.stderr[-2000:]
    for word in words:
        assert word in run.errors[0], run.errors[0]
    assert "Traceback" not in run.stderr
    assert "skipped" not in run.stderr, run.stderr[-2000:]


def bookmark(state: dict[str, Any] | None, stream: str) -> Any:
    return ((state or {}).get("bookmarks", {}).get(stream) or {}).get("replication_key_value")


def test_activate_version_follows_the_last_record_of_each_full_table_stream(sandbox: Any) -> None:
    with sandbox(patients=20, seed=5) as server:
        result = run_tap(tap_config(server.base_url, per_page=2), streams=[*FULL_TABLE, "contacts"])
    messages = [json.loads(line) for line in result.lines]
    for stream in FULL_TABLE:
        records = [
            i for i, m in enumerate(messages) if m["type"] == "RECORD" and m["stream"] == stream
        ]
        activations = [
            i
            for i, m in enumerate(messages)
            if m["type"] == "ACTIVATE_VERSION" and m["stream"] == stream
        ]
        assert len(records) >= 2 and len(activations) == 1, stream
        assert activations[0] > records[-1], f"{stream}: ACTIVATE_VERSION before its last record"
        version = messages[activations[0]]["version"]
        assert {messages[i]["version"] for i in records} == {version}, stream
    assert not any(m["type"] == "ACTIVATE_VERSION" and m["stream"] == "contacts" for m in messages)


def test_a_run_starting_in_the_second_of_the_last_one_has_a_later_version(sandbox: Any) -> None:
    """An SQL target retires rows of versions below the one activated: a run right after
    another (a retry) with the same version would never retire a row Cliniko deleted."""
    with sandbox(patients=5, seed=5) as server:
        config = tap_config(server.base_url)
        run_tap(config, streams=["taxes"])  # warm: the next two runs take a few ms each
        while time.time() % 1 > 0.2:  # both runs start early in one second
            time.sleep(0.01)
        versions = []
        for _ in range(2):
            result = run_tap(config, streams=["taxes"])
            messages = [json.loads(line) for line in result.lines]
            versions += [m["version"] for m in messages if m["type"] == "ACTIVATE_VERSION"]
    assert len(versions) == 2 and versions[1] > versions[0], versions


def test_a_stream_skipped_on_403_sends_no_activate_version(sandbox: Any) -> None:
    with sandbox(patients=20, seed=5, forbidden=("users",)) as server:
        result = run_tap(tap_config(server.base_url, per_page=2), streams=["taxes", "users"])
    kinds = [(m["type"], m.get("stream")) for m in map(json.loads, result.lines)]
    assert ("ACTIVATE_VERSION", "users") not in kinds
    assert ("ACTIVATE_VERSION", "taxes") in kinds
    assert result.records["taxes"] and not result.records.get("users")


def test_a_child_stream_missing_a_parents_route_sends_no_activate_version(sandbox: Any) -> None:
    """A 404 on one parent's nested route (the parent went away, or Cliniko dropped the
    route): the rows of the others arrive, and the target keeps the ones it has of it."""
    with sandbox(patients=20, seed=5) as server:
        config = tap_config(server.base_url, per_page=2)
        whole = run_tap(config, streams=["business_practitioners"])
        rows = whole.records["business_practitioners"]
        parent = str(rows[0]["business_id"])
        server.faults.fail_route_after(f"/businesses/{parent}/practitioners", 0, status=404)
        result = run_tap(config, streams=["business_practitioners"])
    kinds = [(m["type"], m.get("stream")) for m in map(json.loads, result.lines)]
    assert ("ACTIVATE_VERSION", "business_practitioners") in [
        (m["type"], m.get("stream")) for m in map(json.loads, whole.lines)
    ]
    assert ("ACTIVATE_VERSION", "business_practitioners") not in kinds
    others = {r["id"] + r["business_id"] for r in rows if str(r["business_id"]) != parent}
    got = {r["id"] + r["business_id"] for r in result.records["business_practitioners"]}
    assert others and others <= got, "the other parents' rows must all arrive"


@pytest.mark.parametrize("status", [500, 403])
def test_a_stream_failing_half_way_sends_no_activate_version(
    sandbox: Any, tmp_path: Path, status: int
) -> None:
    with sandbox(patients=20, seed=5) as server:
        # Two pages answered (page one and the top page), then every request fails.
        server.faults.fail_route_after("/users", 2, status)
        config = tap_config(server.base_url, per_page=2, max_retry_seconds=1)
        run = run_cli(tmp_path, config, ["users"])
    assert run.records("users"), "the failure should come after rows were sent"
    assert not run.activations("users")
    if status == 403:
        assert_failed_in_one_line(run, "users", "administer users", "/users")
    else:
        assert_failed_in_one_line(run, "GET /v1/users", "max_retry_seconds")


@dataclass(frozen=True)
class LostMidway:
    """A permission lost on one route of a stream once Cliniko answered `answered` requests."""

    stream: str
    route: str
    answered: int
    settings: tuple[tuple[str, Any], ...] = ()


FULL_TABLE_CASES = [
    LostMidway("users", "/users", 2),
    # One request at a time: the first nested list answers, the next one is refused.
    LostMidway(
        "business_practitioners",
        "/businesses/*/practitioners",
        1,
        (("max_concurrency", 1),),
    ),
]


@pytest.mark.parametrize("case", FULL_TABLE_CASES, ids=lambda c: c.stream)
def test_403_after_rows_of_a_full_table_stream_fails_without_activate_version(
    sandbox: Any, tmp_path: Path, case: LostMidway
) -> None:
    with sandbox(patients=20, seed=5) as server:
        config = tap_config(server.base_url, per_page=2, **dict(case.settings))
        server.faults.fail_route_after(case.route, case.answered)
        run = run_cli(tmp_path, config, [case.stream])
        server.faults.heal_routes()
        rerun = run_cli(tmp_path, config, [case.stream], run.state(None))
    assert run.records(case.stream), "the 403 should come after rows were sent"
    assert_failed_in_one_line(run, case.stream, BY_NAME[case.stream].permission)
    assert not run.activations(case.stream)
    # The next run, with the permission back, reads the stream whole and activates it.
    assert rerun.code == 0, rerun.stderr[-2000:]
    assert len(rerun.activations(case.stream)) == 1
    assert len(rerun.records(case.stream)) > len(run.records(case.stream))


def change_contacts(server: Any) -> set[str]:
    """Edit five contacts, the one read first last: a bookmark moved to what the run sent
    before the 403 would pass the others (changed a second earlier, read after it)."""
    ids = sorted(server.store.snapshot("contacts"), key=int)[:5]
    for contact in ids[1:]:
        server.store.update("contacts", contact, {"notes": f"changed {contact}"})
    time.sleep(1.1)  # the store stamps to the second
    server.store.update("contacts", ids[0], {"notes": f"changed {ids[0]}"})
    return set(ids)


def change_attendees(server: Any) -> set[str]:
    """Delete two attendees (listed only on /attendees/deleted), then edit three."""
    live = active_attendees(server)
    for attendee in live[3:5]:
        server.store.delete("attendees", attendee)
    time.sleep(1.1)  # the edits, sent before the 403, are a second newer than the deletions
    for attendee in live[:3]:
        server.store.update("attendees", attendee, {"notes": f"changed {attendee}"})
    return set(live[:5])


def active_attendees(server: Any) -> list[str]:
    rows = server.store.snapshot("attendees")
    return sorted((k for k, r in rows.items() if r["status"] == "active"), key=int)


INCREMENTAL_CASES = [
    (LostMidway("contacts", "/contacts", 1), change_contacts),
    # The main route is read, then the deleted rows' route refuses its first request.
    (LostMidway("attendees", "/attendees/deleted", 0), change_attendees),
]


@pytest.mark.parametrize(("case", "change"), INCREMENTAL_CASES, ids=["contacts", "deleted-route"])
def test_403_after_rows_of_an_incremental_stream_keeps_its_bookmark_and_loses_nothing(
    sandbox: Any, tmp_path: Path, case: LostMidway, change: Any
) -> None:
    with sandbox(patients=20, seed=5) as server:
        # No lookback: a bookmark moved past the changes would miss them on the next run.
        config = tap_config(server.base_url, per_page=2, lookback_seconds=0)
        first = run_cli(tmp_path, config, [case.stream])
        assert first.code == 0, first.stderr[-2000:]
        state = first.state(None)
        changed = change(server)
        server.faults.fail_route_after(case.route, case.answered)
        lost = run_cli(tmp_path, config, [case.stream], state)
        server.faults.heal_routes()
        kept = lost.state(state)
        rerun = run_cli(tmp_path, config, [case.stream], kept)
        latest = server.store.snapshot(case.stream)
    assert lost.records(case.stream), "the 403 should come after rows were sent"
    # Nothing lost: the next run, from the state the failed run left, brings every change.
    assert rerun.code == 0, rerun.stderr[-2000:]
    got = {r["id"]: r for r in rerun.records(case.stream)}
    assert changed <= set(got), changed - set(got)
    for key in changed:
        want = latest[key]["record"]
        assert got[key].get("deleted_at") == want.get("deleted_at"), key
        assert got[key].get("notes") == want.get("notes") or want.get("deleted_at"), key
    assert bookmark(kept, case.stream) == bookmark(state, case.stream), "the bookmark moved"
    route = case.route.split("*")[0]
    assert_failed_in_one_line(lost, case.stream, BY_NAME[case.stream].permission, route)
