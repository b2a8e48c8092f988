"""Requests side by side: the scheduler's rules, and a whole sync read ahead stream by stream.

The output must stay what one stream after another would write (each stream's records, then
its STATE), however far ahead its pages were read.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tap_cliniko.concurrency import Scheduler, side_by_side
from tap_cliniko.sandbox import SandboxServer
from tap_cliniko.sandbox.app import RequestRecord
from tap_cliniko.tap import TapCliniko
from tests.conftest import STATUS_STREAM, STREAMS, SyncResult, run_tap, selecting, tap_config


def grant_order(scheduler: Scheduler, priorities: list[int], hold: float = 0.05) -> list[int]:
    """The order in which requests of these priorities get a slot, all asking at once."""
    order: list[int] = []
    lock = threading.Lock()

    def ask(priority: int) -> None:
        with scheduler.slot(priority):
            with lock:
                order.append(priority)
            time.sleep(hold)

    blocker = threading.Event()

    def occupy() -> None:
        with scheduler.slot(0):
            blocker.wait(5)

    first = threading.Thread(target=occupy)
    first.start()
    while scheduler._free:  # wait until the one slot is taken
        time.sleep(0.001)
    threads = [threading.Thread(target=ask, args=(p,)) for p in priorities]
    for thread in threads:
        thread.start()
        time.sleep(0.01)  # all queued behind the occupied slot, in this order
    blocker.set()
    for thread in [first, *threads]:
        thread.join(5)
    return order


def test_the_stream_being_written_gets_the_next_slot_before_streams_ahead_of_it() -> None:
    scheduler = Scheduler(1)
    scheduler.writing(1)
    assert grant_order(scheduler, [4, 2, 1, 3, 1]) == [1, 1, 2, 3, 4]


def test_streams_ahead_hold_no_more_rows_than_the_reserve() -> None:
    scheduler = Scheduler(4, page_rows=100, reserve_rows=300)
    scheduler.writing(1)
    scheduler.queued(2, 250)  # stream 2 read ahead and holds 250 rows
    granted: list[int] = []

    def ask(priority: int) -> None:
        with scheduler.slot(priority):
            granted.append(priority)

    waiting = threading.Thread(target=ask, args=(3,))
    waiting.start()
    waiting.join(0.3)
    assert granted == [], "a stream ahead was let past the reserve"
    ask(1)  # the stream being written never waits for the reserve
    assert granted == [1]
    scheduler.taken(2, 200)  # the writer took stream 2's pages: room again
    waiting.join(5)
    assert granted == [1, 3]


def most_at_once(requests: list[RequestRecord], paths: Callable[[str], bool] = bool) -> int:
    """The most requests the server was answering at the same moment."""
    edges = sorted(
        [(r.started, 1) for r in requests if paths(r.path)]
        + [(r.time, -1) for r in requests if paths(r.path)]
    )
    most = now = 0
    for _, change in edges:
        now += change
        most = max(most, now)
    return most


def stream_runs(result: SyncResult) -> list[str]:
    """The streams of the output's records, one entry per unbroken run of a stream's records."""
    runs: list[str] = []
    for line in result.lines:
        message = json.loads(line)
        if message["type"] == "RECORD" and (not runs or runs[-1] != message["stream"]):
            runs.append(message["stream"])
    return runs


@pytest.fixture(scope="module")
def account() -> Any:
    """One small whole account with some latency, shared by this module's syncs."""
    from tap_cliniko.sandbox import SandboxConfig

    with SandboxServer(
        SandboxConfig(patients=700, seed=12, collections=0.2, latency_ms=40, api_key=KEY)
    ) as server:
        yield server


KEY = "sandbox0test0key-au1"


@pytest.mark.parametrize("slots", [1, 8])
def test_a_whole_sync_reads_streams_side_by_side_and_writes_them_one_after_another(
    account: SandboxServer, slots: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Every default stream, read ahead, within max_concurrency; the output stays in order."""
    account.requests.clear()
    with caplog.at_level(logging.INFO):
        result = run_tap(tap_config(account.base_url, max_concurrency=slots), streams=None)
    # Where a stream starts is worked out when it is read ahead and again at its turn; the
    # log says it once.
    starts = [
        match.group(1)
        for record in caplog.records
        if (match := re.match(r"Starting incremental sync of '(\w+)'", record.getMessage()))
    ]
    assert starts and len(starts) == len(set(starts)), f"logged twice: {sorted(starts)}"
    runs = stream_runs(result)
    assert len(runs) == len(set(runs)), f"a stream's records were split: {runs}"
    # After each stream's records, its bookmark is in the next STATE, before anything else.
    seen: set[str] = set()
    for line in result.lines:
        message = json.loads(line)
        if message["type"] == "RECORD":
            assert message["stream"] not in seen, f"{message['stream']} wrote after its STATE"
        elif message["type"] == "STATE":
            seen |= {
                name
                for name, mark in message["value"].get("bookmarks", {}).items()
                if "replication_key_value" in mark
            }
    at_once = most_at_once(account.requests)
    assert at_once <= slots, f"{at_once} requests at once, max_concurrency {slots}"
    if slots > 1:
        assert at_once == slots, f"only {at_once} requests at once"
        # Streams later in the order were asked while the first was still being read.
        first_done = max(r.time for r in account.requests if r.path == "/v1/patients")
        early = {r.path for r in account.requests if r.started < first_done}
        assert len(early) > 10, f"only {sorted(early)} were read alongside patients"
    # Every row arrives once, whatever stream it belongs to.
    for name in ("patients", "archived_patients", "deleted_patients", "individual_appointments"):
        ids = result.ids(name)
        assert len(ids) == len(set(ids)), f"a row of {name} came twice"
    snapshot = account.store.snapshot("patients")
    for status, name in STATUS_STREAM.items():
        want = {i for i, row in snapshot.items() if row["status"] == status}
        assert set(result.ids(name)) == want, f"{name} differs from the server"
    # Its deleted rows too, from the deleted route.
    appointments = account.store.snapshot("individual_appointments")
    assert set(result.ids("individual_appointments")) == set(appointments)


def test_a_stream_read_ahead_is_not_marked_wholly_read_before_its_records_are_written(
    account: SandboxServer,
) -> None:
    """A STATE written after stream one must not say a later stream's whole read is done.

    Later streams finish reading long before their turn; were the mark in state then, a tap
    stopped after stream one's STATE would skip the next periodic whole read of the others.
    """
    result = run_tap(tap_config(account.base_url), streams=None)
    written: set[str] = set()
    for line in result.lines:
        message = json.loads(line)
        if message["type"] == "RECORD":
            written.add(message["stream"])
        elif message["type"] == "STATE":
            for name, mark in message["value"].get("bookmarks", {}).items():
                if "last_full_read" in mark:
                    assert name in written or not result.records.get(name), (
                        f"{name} marked wholly read before any of its records was written"
                    )
    assert result.state and all(
        "last_full_read" in mark
        for name, mark in result.state["bookmarks"].items()
        if result.records.get(name) and "replication_key_value" in mark
    )


def test_lists_side_by_side_yield_every_page_with_at_most_so_many_at_once() -> None:
    running = most = 0
    lock = threading.Lock()

    def job(number: int) -> Iterator[list[dict[str, Any]]]:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        for page in range(3):
            time.sleep(0.005)
            yield [{"id": f"{number}-{page}"}]
        with lock:
            running -= 1

    pages = list(side_by_side([partial(job, n) for n in range(20)], 4))
    assert sorted(row["id"] for page in pages for row in page) == sorted(
        f"{n}-{p}" for n in range(20) for p in range(3)
    )
    assert most == 4


def test_a_failing_list_side_by_side_fails_the_whole() -> None:
    def good() -> Iterator[list[dict[str, Any]]]:
        yield [{"id": "1"}]

    def bad() -> Iterator[list[dict[str, Any]]]:
        raise RuntimeError("this list failed")
        yield []

    with pytest.raises(RuntimeError, match="this list failed"):
        list(side_by_side([good, bad, good], 2))


def test_child_streams_read_their_parents_routes_side_by_side(account: SandboxServer) -> None:
    account.requests.clear()
    result = run_tap(tap_config(account.base_url), streams=["appointment_type_practitioners"])
    nested = most_at_once(account.requests, lambda path: path.count("/") > 3)
    assert nested > 1, "one parent's route at a time"
    assert result.records["appointment_type_practitioners"], "no rows read"
    parents = account.store.snapshot("appointment_types")
    assert {
        r["appointment_type_id"] for r in result.records["appointment_type_practitioners"]
    } <= set(parents)


# A stream read ahead that fails: the run fails, naming it, and keeps only what is safe.

#: The tap's command line, with a STATE every two records so that a target (and a test)
#: sees each stream's records while the stream is still being written.
TAP_EVERY_TWO = [
    sys.executable,
    "-c",
    "from tap_cliniko.client import ClinikoStream; ClinikoStream.STATE_MSG_FREQUENCY = 2;"
    " from tap_cliniko.tap import main; main()",
]
ROUTES = {
    "patients": "/v1/patients",
    "archived_patients": "/v1/patients/archived",
    "deleted_patients": "/v1/patients/deleted",
}


class TapProcess:
    """The tap's command line, its stdout read line by line as it comes, as a target reads it."""

    def __init__(self, args: list[str], stderr: Path) -> None:
        self._stderr_path = stderr
        self._stderr = stderr.open("wb")
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._stderr)
        self.messages: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.messages.append(json.loads(line))

    def records_of(self, stream: str) -> bool:
        """Whether some of stream's records have reached the target."""
        return any(m["type"] == "RECORD" and m["stream"] == stream for m in list(self.messages))

    def bookmark_moved(self, stream: str, before: dict[str, Any]) -> bool:
        """Whether a STATE has reached the target with stream's bookmark past `before`."""
        marks = [
            m["value"]["bookmarks"].get(stream, {})
            for m in list(self.messages)
            if m["type"] == "STATE"
        ]
        return any(
            mark.get("replication_key_value") != before.get("replication_key_value")
            for mark in marks
        )

    def finish(self) -> tuple[int, str]:
        """Wait for the tap to end: its exit code and stderr."""
        code = self.process.wait(timeout=120)
        self._reader.join(30)
        assert self.process.stdout is not None
        self.process.stdout.close()
        self._stderr.close()
        return code, self._stderr_path.read_text()


def until(condition: Callable[[], bool], seconds: float = 60) -> bool:
    """Wait for condition (polling); False when it never came true."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


#: Where a stream fails: (its place in the sync order, which of its requests fails).
FAILURES = {
    "before its turn": (1, 1),
    "during its turn": (1, 3),
    "after other streams wrote": (2, 1),
}


@pytest.mark.parametrize("when", list(FAILURES))
def test_a_stream_read_ahead_that_fails_fails_the_run_naming_it_and_moves_no_bookmark(
    sandbox: Any, tmp_path: Path, when: str
) -> None:
    """Cliniko stops answering one stream (503, no retry budget) at one point of the sync.

    The sync order is archived_patients, deleted_patients, patients. Before its turn: the
    second stream fails on its first request while the first is still being read (the first
    one's requests wait for that failure). During its turn: the second stream's third
    request fails once some of its records have reached the target. After other streams
    wrote: the third fails once the first two are written and their bookmarks committed.
    Each time the run exits 1 with one line naming the failing stream; the streams before
    it keep their new bookmarks, the failing one keeps the bookmark it started from (its
    rows written so far come again next run), and no stream after it is written.
    """
    with sandbox(patients=120, seed=51, collections=0) as server:
        config = tap_config(server.base_url, per_page=5, max_concurrency=4, max_retry_seconds=0)
        catalog = selecting(config, STREAMS)
        order = [s.name for s in TapCliniko(config=config, catalog=catalog).streams.values()]
        order = [name for name in order if name in STREAMS]
        place, failing_request = FAILURES[when]
        failing, earlier = order[place], order[:place]
        first = run_tap(config, catalog=catalog)
        started = (first.state or {})["bookmarks"]
        # An hour later on Cliniko's clock, changes in every stream: more than two pages each.
        server.config.clock_offset_seconds = 3600
        active = sorted(first.ids("patients"), key=int)
        for patient in active[:15]:
            server.store.update_patient(patient, {"notes": "changed since the last run"})
        for patient in active[15:30]:
            server.store.archive_patient(patient)
        for patient in active[30:45]:
            server.store.delete_patient(patient)
        for name, document in (("config", config), ("catalog", catalog), ("state", first.state)):
            (tmp_path / f"{name}.json").write_text(json.dumps(document))
        asked: Counter[str] = Counter()
        lock = threading.Lock()
        failed = threading.Event()
        waited: list[bool] = []
        tap: TapProcess | None = None

        def fail_one_stream(route: str, args: Any) -> int | None:
            with lock:
                asked[route] += 1
                number = asked[route]
            if route == ROUTES[failing] and number == failing_request:
                assert tap is not None
                if when == "during its turn":
                    waited.append(until(lambda: tap.records_of(failing)))
                elif when == "after other streams wrote":
                    moved = [partial(tap.bookmark_moved, s, started.get(s, {})) for s in earlier]
                    waited.append(until(lambda: all(check() for check in moved)))
                failed.set()
                return 503
            # Not its first request: until Cliniko first answers, requests go one at a time.
            if when == "before its turn" and route == ROUTES[earlier[0]] and number > 1:
                waited.append(failed.wait(60))
            return None

        server.before_list_page = fail_one_stream
        args = [*TAP_EVERY_TWO, "--config", str(tmp_path / "config.json")]
        args += ["--catalog", str(tmp_path / "catalog.json")]
        tap = TapProcess([*args, "--state", str(tmp_path / "state.json")], tmp_path / "tap.err")
        code, stderr = tap.finish()
        server.before_list_page = None
    assert failed.is_set() and waited and all(waited), f"the failure did not come {when}"
    assert code == 1, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if line.startswith("tap-cliniko: error:")]
    assert len(errors) == 1, stderr[-2000:]
    assert errors[0].startswith(f"tap-cliniko: error: {failing}: GET "), errors[0]
    assert "503" in errors[0] and "Traceback" not in stderr
    succeeded = [line for line in stderr.splitlines() if '"status":"succeeded"' in line]
    assert not [line for line in succeeded if f'"stream":"{failing}"' in line], "reported done"
    states = [m["value"]["bookmarks"] for m in tap.messages if m["type"] == "STATE"]
    for stream in earlier:
        mark, before = states[-1][stream], started.get(stream, {})
        assert mark["replication_key_value"] > before.get("replication_key_value", ""), stream
    for stream in order[place:]:
        for key in ("replication_key_value", "last_full_read"):
            before = started.get(stream, {}).get(key)
            assert all(s.get(stream, {}).get(key) == before for s in states), (stream, key)
    written = {m["stream"] for m in tap.messages if m["type"] == "RECORD"}
    assert written == {*earlier, *([failing] if when == "during its turn" else [])}
