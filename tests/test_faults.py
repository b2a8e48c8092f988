"""Rate limits, server faults and interruption: retried where right, never a silent loss."""

from __future__ import annotations

import copy
import json
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest

from tap_cliniko.api import ClinikoAPI, RequestBudget
from tap_cliniko.client import ClinikoStream
from tap_cliniko.cliniko import CONNECT_RETRY_SECONDS, ClinikoError
from tap_cliniko.tap import TapCliniko
from tests.conftest import STATUS_STREAM, SyncResult, run_tap, tap_config

TAP = [sys.executable, "-c", "from tap_cliniko.tap import main; main()"]


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


def assert_every_patient(result: SyncResult, server: Any) -> None:
    """Each stream holds exactly the ids of the patients the server holds in that status."""
    snapshot = server.store.snapshot()
    for stream in STATUS_STREAM.values():
        expected = {i for i, e in snapshot.items() if STATUS_STREAM[e["status"]] == stream}
        assert set(result.ids(stream)) == expected, f"{stream} lost or gained patients"


def run_cli(tmp_path: Path, config: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """Run the tap's command line on a config; return what it wrote and its exit code."""
    (tmp_path / "config.json").write_text(json.dumps(config))
    return subprocess.run(
        [*tap_command(), "--config", str(tmp_path / "config.json")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_one_clean_error(result: subprocess.CompletedProcess[str]) -> None:
    """Exit 1, exactly one 'tap-cliniko: error:' line, and no traceback."""
    assert result.returncode == 1, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("tap-cliniko: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("slots", [1, 8])
@pytest.mark.parametrize("header", ["X-RateLimit-Reset", "Retry-After"])
def test_429_waits_as_the_header_says_then_continues(sandbox: Any, header: str, slots: int) -> None:
    with sandbox(patients=60, seed=31) as server:
        lists = 0

        def storm_after_three_pages(path: str, args: Any) -> None:
            nonlocal lists
            lists += 1
            if lists == 4:  # from the request after this one, mid-way through `patients`
                server.faults.throttle_for(2.5, header=header)

        server.before_list_page = storm_after_three_pages
        sleep = RecordingSleep()
        config = tap_config(server.base_url, per_page=20, max_concurrency=slots)
        result = run_tap(config, prepare=patch_sleep(sleep))
        throttled = [r for r in server.requests if r.status == 429]
        assert_every_patient(result, server)
    assert throttled, "the server throttled"
    assert sleep.waits and 1.0 <= sleep.waits[0] <= 3.5, sleep.waits
    # Each request in flight when the storm began meets it once; then everyone waits.
    assert len(throttled) <= 2 * slots + 1, "the tap waited instead of hammering"


@pytest.mark.parametrize("header", ["X-RateLimit-Reset", "Retry-After"])
def test_429_storm_longer_than_a_minute_completes_without_sending_early(
    sandbox: Any, header: str
) -> None:
    slots = 8
    with sandbox(patients=30, seed=32) as server:
        server.faults.throttle_for(65, header=header)
        started = time.monotonic()
        result = run_tap(tap_config(server.base_url, max_concurrency=slots))
        elapsed = time.monotonic() - started
        throttled = [r.time for r in server.requests if r.status == 429]
        assert_every_patient(result, server)
    assert elapsed >= 60, "the storm lasted over a minute and the sync outlived it"
    # The first requests of the streams go out side by side; after their 429s none is sent
    # before the storm's end (a request sent early would meet it again).
    assert len(throttled) <= 2 * slots, f"sent {len(throttled)} requests into the storm"


def test_5xx_bursts_are_retried_with_growing_waits(sandbox: Any) -> None:
    with sandbox(patients=80, seed=33) as server:
        server.faults.fail_next(3, status=503)
        sleep = RecordingSleep()
        # One request at a time: requests side by side would share the burst.
        result = run_tap(
            tap_config(server.base_url, per_page=20, max_concurrency=1),
            prepare=patch_sleep(sleep),
            streams=["patients"],
        )
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


@pytest.mark.parametrize("offset", [3600, -3600])
def test_429_reset_is_read_on_clinikos_clock_ahead_or_behind(sandbox: Any, offset: int) -> None:
    """X-RateLimit-Reset is a moment on Cliniko's clock: an hour's skew changes no wait."""
    storm = 6.0
    with sandbox(patients=60, seed=37, clock_offset_seconds=offset) as server:
        server.faults.throttle_for(storm, header="X-RateLimit-Reset")
        sleep = RecordingSleep(cap=storm + 2)
        # One stream, one request at a time, so that one request meets the storm.
        result = run_tap(
            tap_config(server.base_url, max_concurrency=1),
            prepare=patch_sleep(sleep),
            streams=["patients"],
        )
        throttled = [r for r in server.requests if r.status == 429]
        active = {i for i, e in server.store.snapshot().items() if e["status"] == "active"}
    assert set(result.ids("patients")) == active
    waits = [w for w in sleep.waits if w > 0.05]  # not the budget's sub-millisecond remainders
    assert throttled and waits, "the server throttled and the tap waited"
    assert storm - 2 <= sum(waits) <= storm + 3, f"waited {waits} for a {storm}s storm"
    assert len(throttled) <= 3, f"{len(throttled)} requests went into the storm (a hot loop)"


def test_timeout_is_retried_and_then_succeeds(sandbox: Any) -> None:
    with sandbox(patients=40, seed=38) as server:
        server.faults.delay_next(1, 3.0)
        sleep = RecordingSleep()
        config = tap_config(server.base_url, request_timeout=1)
        result = run_tap(config, prepare=patch_sleep(sleep))
        assert_every_patient(result, server)
        sent = [(r.path, r.query_string) for r in server.requests]
        deadline = time.monotonic() + 10
        while len(set(sent)) == len(sent) and time.monotonic() < deadline:
            time.sleep(0.1)  # the held request is logged when the server finally answers it
            sent = [(r.path, r.query_string) for r in server.requests]
    assert sleep.waits[:1] == [1], "one backoff wait after the timeout"
    assert len(set(sent)) == len(sent) - 1, "the timed-out request, and only it, was sent again"


def test_connection_dropped_mid_body_is_retried_and_loses_nothing(sandbox: Any) -> None:
    with sandbox(patients=150, seed=39, fault_seed=3, midbody_drop_rate=0.3) as server:
        sleep = RecordingSleep(cap=0.05)
        result = run_tap(tap_config(server.base_url, per_page=20), prepare=patch_sleep(sleep))
        assert_every_patient(result, server)
    assert len(sleep.waits) >= 3, "bodies were cut and the pages asked for again"


def test_every_body_cut_short_ends_in_one_clean_line(tmp_path: Path, sandbox: Any) -> None:
    with sandbox(patients=20, seed=40, midbody_drop_rate=1.0) as server:
        result = run_cli(tmp_path, tap_config(server.base_url, max_retry_seconds=2))
    assert_one_clean_error(result)
    assert '"type":"RECORD"' not in result.stdout.replace(" ", "")


def wait_for_drips_to_end(server: Any, count: int) -> list[bool]:
    """How each of the first count dripped answers ended (True: sent whole), once all did."""
    deadline = time.monotonic() + 30
    while len(server.faults.dripped) < count and time.monotonic() < deadline:
        time.sleep(0.1)  # the server sees the hang-up at its next write
    return list(server.faults.dripped)


def test_a_response_that_drips_ends_in_one_clean_line_within_the_retry_budget(
    tmp_path: Path, sandbox: Any
) -> None:
    """Headers, then a byte every 5 ms: no read waits a second, yet no answer ever ends.

    Each attempt is cut at request_timeout and retried while max_retry_seconds lasts;
    with a timeout on each socket read only, the first answer is read for minutes.
    """
    with sandbox(patients=20, seed=41, collections=0) as server:
        server.faults.drip_next(10_000, every_ms=5)
        config = tap_config(server.base_url, request_timeout=2, max_retry_seconds=5)
        result = run_cli(tmp_path, config)
    assert_one_clean_error(result)
    assert '"type":"RECORD"' not in result.stdout.replace(" ", "")
    error = next(line for line in result.stderr.splitlines() if "error:" in line)
    found = re.search(
        r"GET (/v1/\S+) on (\S+) still failing after (\d+) attempts over (\d+)s",
        error,
    )
    assert found, error
    assert found[2] == server.base_url.split("/")[2], "the error names the host"
    assert int(found[3]) >= 2, "each attempt ended within request_timeout and was retried"
    assert int(found[4]) <= 5, "the request gave up within max_retry_seconds"
    assert "no whole response" in error, error


def test_a_drip_that_clears_is_retried_and_every_row_arrives(sandbox: Any) -> None:
    with sandbox(patients=40, seed=42, collections=0) as server:
        server.faults.drip_next(2, every_ms=5)
        sleep = RecordingSleep()
        # One stream, one request at a time: its first answer drips, and so does its retry.
        config = tap_config(server.base_url, request_timeout=1, per_page=10, max_concurrency=1)
        result = run_tap(config, prepare=patch_sleep(sleep), streams=["patients"])
        active = {i for i, e in server.store.snapshot().items() if e["status"] == "active"}
        dripped = wait_for_drips_to_end(server, 2)
    assert set(result.ids("patients")) == active
    assert sleep.waits[:2] == [1, 2], "each dripping answer was cut and retried with backoff"
    assert dripped == [False, False], "the tap hung up on each: no connection left dripping"


def answered(server: Any, path: str, sort: str) -> bool:
    """Whether the server has answered (read the rows of) a request of path with this sort."""
    return any(
        r.path == path and r.status == 200 and dict(parse_qsl(r.query_string)).get("sort") == sort
        for r in list(server.requests)
    )


@pytest.mark.parametrize(
    ("stream", "status", "path"),
    [
        ("patients", "active", "/v1/patients"),
        # Read ahead while patients is written, in a thread of its own.
        ("archived_patients", "archived", "/v1/patients/archived"),
    ],
)
def test_an_edit_while_page_one_is_retried_after_the_top_page_answered_is_read_next_run(
    sandbox: Any, stream: str, status: str, path: str
) -> None:
    """A whole read asks for page one and the top page together; here page one fails twice.

    The top page answers first; then a row it read is edited, and page one answers later
    than the lookback after that edit. The bookmark's cap must come from the earliest
    answer the stream used (the top page's), not from page one's: capped at page one's,
    the next run's filter is above the edit and the row stays stale.
    """
    lookback = 300  # the default
    with sandbox(patients=160, seed=47, collections=0) as server:
        ids = sorted(
            (i for i, e in server.store.snapshot().items() if e["status"] == status), key=int
        )
        lowest, highest = ids[0], ids[-1]  # on page one; on the top page

        def page_one(route: str, args: Any) -> bool:
            ids_asked = [v for v in args.getlist("q[]") if v.startswith("id:")]
            return route == path and args.get("sort") == "id" and not ids_asked

        edited: list[str] = []

        def edit_once_the_top_page_answered(route: str, args: Any) -> None:
            if edited or not page_one(route, args):
                return
            deadline = time.monotonic() + 60
            while not answered(server, path, "id:desc") and time.monotonic() < deadline:
                time.sleep(0.05)
            edited.append("after the top page" if answered(server, path, "id:desc") else "")
            server.config.clock_offset_seconds += 5
            server.store.update_patient(highest, {"notes": "edited after the top page read it"})
            server.config.clock_offset_seconds += lookback + 5
            server.store.update_patient(lowest, {"notes": "edited before page one read it"})

        server.faults.fail_next(2, status=500, where=page_one)
        server.before_list_page = edit_once_the_top_page_answered
        config = tap_config(server.base_url, per_page=5)
        streams = ["patients", "archived_patients"]
        first = run_tap(config, prepare=patch_sleep(RecordingSleep()), streams=streams)
        server.before_list_page = None
        second = run_tap(config, state=first.state, streams=streams)
        final = server.store.snapshot()[highest]["record"]
    assert edited == ["after the top page"], "page one was answered after the top page"
    stale = [r for r in first.records[stream] if r["id"] == highest]
    assert stale and stale[-1].get("notes") != final["notes"], "the top page read it before"
    fresh = [r for r in second.records[stream] if r["id"] == highest]
    assert fresh and fresh[-1]["notes"] == final["notes"] == "edited after the top page read it"


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


ATTEMPTS = 18
STATE_EVERY = 20  # a STATE every 20 records, as every 10,000 on a large real account


def tap_command(state_every: int = STATE_EVERY) -> list[str]:
    """The tap's entry point, with the SDK's mid-stream STATE interval scaled down."""
    code = (
        "from tap_cliniko.client import ClinikoStream;"
        f"ClinikoStream.STATE_MSG_FREQUENCY = {state_every};"
        "from tap_cliniko.tap import main; main()"
    )
    return [sys.executable, "-c", code]


def change_patients(server: Any, rng: random.Random, count: int, tag: str) -> None:
    """Creates, edits, archives, unarchives and deletes, a second apart on the server's clock.

    Time passes between the changes (the local Cliniko's clock is moved on), so that they
    carry different updated_at values, as a clinic's edits between two runs do.
    """
    store = server.store
    by_status: dict[str, list[str]] = {"active": [], "archived": [], "deleted": []}
    for patient_id, entry in store.snapshot().items():
        by_status[entry["status"]].append(patient_id)
    for pool in by_status.values():
        rng.shuffle(pool)
    for n in range(count):
        server.config.clock_offset_seconds += 1
        operation = rng.choice(["create", "update", "update", "archive", "unarchive", "delete"])
        if operation == "create":
            store.create_patient({"first_name": f"New{tag}x{n}", "last_name": "Patient"})
        elif operation == "update" and by_status["active"]:
            store.update_patient(by_status["active"][-1], {"notes": f"edit {tag}x{n}"})
            by_status["active"].insert(0, by_status["active"].pop())
        elif operation == "archive" and by_status["active"]:
            store.archive_patient(moved := by_status["active"].pop())
            by_status["archived"].insert(0, moved)
        elif operation == "unarchive" and by_status["archived"]:
            store.unarchive_patient(moved := by_status["archived"].pop())
            by_status["active"].insert(0, moved)
        elif operation == "delete" and by_status["active"]:
            store.delete_patient(by_status["active"].pop())


def received_messages(process: subprocess.Popen[bytes], kill_after: int | None) -> list[Any]:
    """Read the tap's stdout as a target would; SIGKILL it after kill_after lines.

    After the kill the pipe is drained: what the tap wrote before it died reaches the
    target, and a line the kill cut in two is dropped, as a target would drop it.
    """
    assert process.stdout is not None
    data = b""
    if kill_after is not None:
        for _ in range(kill_after):
            line = process.stdout.readline()
            data += line
            if not line.endswith(b"\n"):
                break
        process.send_signal(signal.SIGKILL)
    data += process.stdout.read()
    process.stdout.close()
    process.wait(timeout=60)
    return [json.loads(line) for line in data.split(b"\n")[:-1] if line.strip()]


def skipped_by_a_resumable_bookmark(
    messages: list[Any], whole: SyncResult, started_from: dict[str, Any]
) -> list[str]:
    """Rows a bookmark saved mid-stream would skip, were the run resumed from the last STATE.

    Such a bookmark (the updated_at of the last record before a STATE) is wrong: rows come
    in id order, not updated_at order. The stream is the one whose records the last STATE
    received followed; the rows are those of the uninterrupted run from the same state not
    received before that STATE, updated before that bookmark. Only in incremental runs: a
    bookmark without a whole read behind it starts a whole read anyway.
    """
    states = [i for i, message in enumerate(messages) if message["type"] == "STATE"]
    saved = [m for m in messages[: states[-1]] if m["type"] == "RECORD"] if states else []
    if not saved:
        return []
    stream = saved[-1]["stream"]
    if "last_full_read" not in started_from.get(stream, {}):
        return []
    sent = {m["record"]["id"] for m in saved if m["stream"] == stream}
    bookmark = saved[-1]["record"].get("updated_at") or ""
    return [
        record["id"]
        for record in whole.records.get(stream, [])
        if record["id"] not in sent and (record.get("updated_at") or "") < bookmark
    ]


def stale_or_lost(snapshot: dict[str, Any], last: dict[str, tuple[str, Any]]) -> list[str]:
    """Patients whose last received record is missing, stale, or in the wrong stream."""
    problems = []
    for patient_id, entry in snapshot.items():
        stream, record = last.get(patient_id, (None, {}))
        final = entry["record"]
        names = ("deleted_at",) if entry["status"] == "deleted" else ("updated_at", "notes")
        if stream != STATUS_STREAM[entry["status"]]:
            problems.append(f"{patient_id} ({entry['status']}) last received in {stream}")
        elif any((record.get(n) or None) != (final.get(n) or None) for n in names):
            problems.append(f"{patient_id} ({entry['status']}) stale")
    return problems


def test_sigkill_at_random_points_never_loses_a_patient(
    tmp_path: Path, sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kill the tap anywhere in a sync, change patients, rerun from the last STATE received.

    Each kill point is drawn across the records of the run it interrupts: a line number up
    to the last RECORD of an uninterrupted run from the same state (measured first,
    in-process). Every fourth run is let finish, so that the runs after it are incremental;
    between runs 120 patients change, so that an incremental run holds several mid-stream
    STATEs and its kills land between them. The schedule is checked to hold kills where a
    mid-stream bookmark taken as resumable would skip rows, so a tap that saved one would
    lose patients here.
    """
    monkeypatch.setattr(ClinikoStream, "STATE_MSG_FREQUENCY", STATE_EVERY)
    rng = random.Random(35)
    traps: list[int] = []  # per kill: rows a resumable mid-stream bookmark would skip
    # Patients only: the checks below key received records by id, which other streams reuse.
    with sandbox(patients=900, seed=35, collections=0) as server:
        settings = tap_config(server.base_url, lookback_seconds=0)
        (tmp_path / "config.json").write_text(json.dumps(settings))
        last: dict[str, tuple[str, Any]] = {}
        state: dict[str, Any] = {}
        for attempt in range(ATTEMPTS):
            (tmp_path / "state.json").write_text(json.dumps(state))
            args = [*tap_command(), "--config", str(tmp_path / "config.json")]
            args += ["--state", str(tmp_path / "state.json")]
            kill_after = None
            if attempt % 4 != 3 and attempt < ATTEMPTS - 1:
                # Every stream selected by default, as the command line below runs them.
                whole = run_tap(settings, state=copy.deepcopy(state), streams=None)
                records = [i for i, line in enumerate(whole.lines) if '"RECORD"' in line]
                kill_after = rng.randint(1, records[-1] + 1) if records else 1
            started_from = copy.deepcopy(state.get("bookmarks", {}))
            process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            messages = received_messages(process, kill_after)
            for message in messages:
                if message["type"] == "RECORD":
                    last[message["record"]["id"]] = (message["stream"], message["record"])
                elif message["type"] == "STATE":
                    state = message["value"]
            if kill_after is None:
                assert process.returncode == 0
            else:
                traps.append(len(skipped_by_a_resumable_bookmark(messages, whole, started_from)))
            if attempt < ATTEMPTS - 1:  # after a complete run too: the next one has work
                change_patients(server, rng, 300, str(attempt))
        problems = stale_or_lost(server.store.snapshot(), last)
    assert sum(1 for skipped in traps if skipped) >= 3, (
        f"too few kills a wrong bookmark loses at: {traps}"
    )
    assert not problems, problems[:10]


def stop_mid_sync(
    tmp_path: Path, config: Path, signum: int, *, read_first: bool
) -> tuple[int, list[dict[str, Any]], str]:
    """Start the tap, signal it mid-sync, return its exit code, messages and stderr.

    read_first: signal once the first RECORD arrives; else while the tap is blocked writing
    to a pipe nobody reads (a slow target).
    """
    with (tmp_path / "tap.err").open("wb") as stderr:
        process = subprocess.Popen(
            [*TAP, "--config", str(config)], stdout=subprocess.PIPE, stderr=stderr
        )
        assert process.stdout is not None
        lines = [process.stdout.readline()]
        if read_first:
            while b'"RECORD"' not in lines[-1] and lines[-1]:
                lines.append(process.stdout.readline())
        else:
            time.sleep(3)  # the pipe and the tap's buffer fill up; the tap blocks writing
        process.send_signal(signum)
        lines += process.stdout.read().splitlines()
        process.stdout.close()
        process.wait(120)
    messages = [json.loads(line) for line in lines if line.strip()]  # no line cut in half
    return process.returncode, messages, (tmp_path / "tap.err").read_text()


@pytest.mark.parametrize("read_first", [True, False], ids=["reading", "blocked-writing"])
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_sync_exits_non_zero_after_only_safe_state(
    tmp_path: Path, sandbox: Any, signum: int, code: int, read_first: bool
) -> None:
    """An orchestrator sees an interrupted run as failed; the state it got loses nothing."""
    latency = 150 if read_first else 0
    # Patients only, so that every id received is a patient's.
    with sandbox(patients=1500, seed=36, latency_ms=latency, collections=0) as server:
        config = tmp_path / "config.json"
        config.write_text(json.dumps(tap_config(server.base_url, per_page=50)))
        returncode, messages, stderr = stop_mid_sync(
            tmp_path, config, signum, read_first=read_first
        )
        received = {m["record"]["id"] for m in messages if m["type"] == "RECORD"}
        states = [m["value"] for m in messages if m["type"] == "STATE"]
        assert returncode == code, stderr[-2000:]
        assert "Traceback" not in stderr
        assert "stopped by" in stderr
        assert states, "the state so far was written"
        assert messages[-1]["type"] == "STATE", "the state comes after every record"
        assert len(received) < len(server.store.snapshot()), "the signal landed mid-sync"
        (tmp_path / "state.json").write_text(json.dumps(states[-1]))
        resumed = subprocess.run(
            [*TAP, "--config", str(config), "--state", str(tmp_path / "state.json")],
            capture_output=True,
            timeout=120,
            check=True,
        )
        snapshot = server.store.snapshot()
    for line in resumed.stdout.decode().splitlines():
        message = json.loads(line)
        if message["type"] == "RECORD":
            received.add(message["record"]["id"])
    assert set(snapshot) <= received, "a patient was lost across the interruption"


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class AddingSleep:
    """Stands in for time.sleep and the retry clock: adds the waits up without waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)

    def clock(self) -> float:
        return time.monotonic() + sum(self.waits)


@pytest.mark.parametrize(
    ("base_url", "host", "cause"),
    [
        ("http://127.0.0.1:{port}/v1", "127.0.0.1:{port}", "connection refused"),
        ("https://api.zz9.cliniko.invalid/v1", "api.zz9.cliniko.invalid", "host name not found"),
    ],
)
def test_unreachable_host_fails_fast_naming_it(base_url: str, host: str, cause: str) -> None:
    port = closed_port()
    sleep = AddingSleep()
    api = ClinikoAPI(
        base_url=base_url.format(port=port),
        api_key="sandbox-key-au1",
        user_agent="tests (tests@example.com)",
        max_retry_seconds=600,
        sleep=sleep,
        clock=sleep.clock,
    )
    with pytest.raises(ClinikoError) as refused:
        api.get_page(f"{api.base_url}/patients", [])
    message = str(refused.value)
    assert host.format(port=port) in message and cause in message, message
    assert "base_url" in message and "shard" in message, message
    assert 0 < sum(sleep.waits) <= CONNECT_RETRY_SECONDS, "not the 600 s budget"


def test_unreachable_host_after_a_first_answer_keeps_the_long_budget(sandbox: Any) -> None:
    sleep = AddingSleep()
    with sandbox(patients=5, seed=37) as server:
        api = ClinikoAPI(
            base_url=server.base_url,
            api_key=server.config.api_key,
            user_agent="tests (tests@example.com)",
            max_retry_seconds=120,
            sleep=sleep,
            clock=sleep.clock,
        )
        assert api.get_page(f"{api.base_url}/patients", []).rows
    with pytest.raises(ClinikoError) as failed:  # the server is gone: an outage mid-sync
        api.get_page(f"{api.base_url}/patients", [])
    assert CONNECT_RETRY_SECONDS < sum(sleep.waits) <= 120
    assert "still failing" in str(failed.value) and server.base_url.split("/")[2] in str(
        failed.value
    )


def test_unreachable_host_is_one_line_from_the_command_line(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(tap_config(f"http://127.0.0.1:{closed_port()}/v1")))
    result = subprocess.run(
        [*TAP, "--config", str(config)], capture_output=True, text=True, timeout=120, check=False
    )
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line.upper()]
    assert result.returncode == 1
    assert len(errors) == 1 and errors[0].startswith("tap-cliniko: error: cannot reach"), errors
    assert "Traceback" not in result.stderr
