"""An API that drifts, and what incremental runs cannot see: the streams still lose nothing.

Each test runs the tap against the local Cliniko with one of its drift switches: the
legacy /patients/archived and /patients/deleted routes gone (today's spec has neither),
sort=id ignored or refused, unarchiving that leaves updated_at alone, and an edit stamped
by another of Cliniko's machines a moment before the read it landed after.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import pytest

from tests.conftest import STREAMS, SyncResult, run_tap, tap_config
from tests.test_streams import expected_ids


def assert_every_patient_in_its_stream(result: SyncResult, server: Any) -> None:
    expected = expected_ids(server)
    for stream in STREAMS:
        assert set(result.ids(stream)) == expected[stream], stream


def warnings(caplog: pytest.LogCaptureFixture, *words: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and all(w in r.getMessage() for w in words)
    ]


def queries(server: Any, path: str) -> list[list[tuple[str, str]]]:
    return [
        parse_qsl(r.query_string, keep_blank_values=True)
        for r in server.requests
        if r.method == "GET" and r.path == path
    ]


@pytest.mark.parametrize("behaviour", ["current", "legacy"])
def test_without_the_variant_routes_archived_come_from_the_main_list_and_deleted_are_skipped(
    sandbox: Any, caplog: pytest.LogCaptureFixture, behaviour: str
) -> None:
    with sandbox(patients=150, seed=41, behaviour=behaviour, variant_routes=False) as server:
        first = run_tap(tap_config(server.base_url, per_page=20))
        expected = expected_ids(server)
        victim = sorted(expected["patients"], key=int)[3]
        server.store.archive_patient(victim)
        server.requests.clear()
        caplog.clear()
        second = run_tap(tap_config(server.base_url, per_page=20), state=first.state)
    assert set(first.ids("patients")) == expected["patients"]
    assert set(first.ids("archived_patients")) == expected["archived_patients"]
    assert expected["archived_patients"], "the account has archived patients"
    assert first.ids("deleted_patients") == []
    # Learned once and kept in state: the next run asks /patients with archived_at:* at once.
    state = first.state or {}
    assert state["bookmarks"]["archived_patients"]["route"] == "fallback"
    assert state["bookmarks"]["deleted_patients"]["route"] == "missing"
    assert not queries(server, "/v1/patients/archived")
    hidden = [q for q in queries(server, "/v1/patients") if ("q[]", "archived_at:*") in q]
    assert len(hidden) == 2, "one request per incremental pass (updated_at, archived_at)"
    assert victim in second.ids("archived_patients")
    said = warnings(caplog, "deleted patients cannot be read")
    assert len(said) == 1, said


@pytest.mark.parametrize("sort_mode", ["ignored", "refused"])
@pytest.mark.parametrize("behaviour", ["current", "legacy"])
def test_when_sort_by_id_is_ignored_or_refused_every_patient_still_arrives(
    sandbox: Any, caplog: pytest.LogCaptureFixture, sort_mode: str, behaviour: str
) -> None:
    with sandbox(patients=260, seed=42, sort_mode=sort_mode, behaviour=behaviour) as server:
        first = run_tap(tap_config(server.base_url, per_page=5))
        assert_every_patient_in_its_stream(first, server)
        said = warnings(caplog, f"{sort_mode} sort=id")
        modes = {s: b.get("paging_mode") for s, b in (first.state or {})["bookmarks"].items()}
        assert modes["patients"] == modes["archived_patients"] == "created_at"
        # A few deleted rows may happen to come in id order; then id paging was right anyway.
        assert modes["deleted_patients"] in (None, "created_at", "links")
        assert len(said) == sum(1 for mode in modes.values() if mode), said  # once per stream
        server.store.update_patient(sorted(first.ids("patients"), key=int)[0], {"notes": "x"})
        server.requests.clear()
        caplog.clear()
        second = run_tap(tap_config(server.base_url, per_page=5), state=first.state)
        sent_sort = [q for q in queries(server, "/v1/patients") if ("sort", "id") in q]
    assert not sent_sort, "the learned mode is kept in state"
    assert not warnings(caplog, "sort=id")
    assert sorted(first.ids("patients"), key=int)[0] in second.ids("patients")


def test_an_edit_stamped_just_before_the_read_it_landed_after_is_read_next_time(
    sandbox: Any,
) -> None:
    """updated_at is stamped by another machine than Date: here its clock is 2 s behind.

    Cliniko's clock is stopped at one second for the second run, so every Date of that run
    is that second, however slow this machine. The patient is edited after the first page
    was read, stamped 2 s before that Date. A bookmark capped at the Date itself (no
    lookback) skips the edit for good, on every run of this test.
    """
    with sandbox(patients=120, seed=43) as server:
        first = run_tap(tap_config(server.base_url))
        active = sorted(first.ids("patients"), key=int)
        victim = active[0]
        edited: list[str] = []
        stopped = float(int(time.time()) + 1)
        server.faults.clock_stopped_at = stopped

        once = threading.Lock()  # pages after the first may be asked for side by side

        def edit_after_the_first_read(route: str, args: Any) -> None:
            later_page = any(v.startswith("id:") for v in args.getlist("q[]"))
            with once:
                if route.endswith("/patients") and later_page and not edited:
                    server.faults.clock_stopped_at = stopped - 2
                    server.store.update_patient(victim, {"notes": "edited during the sync"})
                    server.faults.clock_stopped_at = stopped
                    edited.append(victim)

        # Ten changed patients, more than a page. The edit lands after page one was read.
        for patient in active[:10]:
            server.store.update_patient(patient, {"notes": "something to read"})
        server.before_list_page = edit_after_the_first_read
        second = run_tap(tap_config(server.base_url, per_page=5), state=first.state)
        server.before_list_page = None
        server.faults.clock_stopped_at = None
        third = run_tap(tap_config(server.base_url, per_page=5), state=second.state)
        final = server.store.snapshot()[victim]["record"]
    assert edited, "the edit happened mid-sync"
    stamped = datetime.fromisoformat(final["updated_at"].replace("Z", "+00:00"))
    assert stamped == datetime.fromtimestamp(stopped - 2, UTC), "2 s before every Date"
    seen = [r for r in second.records["patients"] + third.records["patients"] if r["id"] == victim]
    assert seen and seen[-1]["notes"] == final["notes"] == "edited during the sync"


def test_a_full_read_every_few_days_repairs_an_unarchive_that_left_updated_at_alone(
    sandbox: Any,
) -> None:
    with sandbox(patients=120, seed=44, unarchive_touches_updated_at=False) as server:
        config = tap_config(server.base_url)
        first = run_tap(config)
        victim = sorted(first.ids("archived_patients"), key=int)[0]
        server.store.unarchive_patient(victim)
        server.requests.clear()
        quiet = run_tap(config, state=first.state)
        incremental = [q for q in queries(server, "/v1/patients") if ("q[]",) and q]
        # Eight days later (as far as the state knows), the stream reads its whole list again.
        state = quiet.state or {}
        old = (datetime.now(UTC) - timedelta(days=8)).strftime("%Y-%m-%dT%H:%M:%SZ")
        for bookmark in state["bookmarks"].values():
            bookmark["last_full_read"] = old
        repaired = run_tap(config, state=state)
    assert victim not in quiet.ids("patients"), "an incremental run cannot see this unarchive"
    assert all(any(k == "q[]" for k, _ in q) for q in incremental), "the quiet run was incremental"
    assert victim in repaired.ids("patients")
    assert (repaired.state or {})["bookmarks"]["patients"]["last_full_read"] > old


@pytest.mark.parametrize(
    "drift",
    [{"sort_mode": "ignored"}, {"sort_mode": "refused"}, {"variant_routes": False}],
    ids=["sort ignored", "sort refused", "no variant routes"],
)
def test_every_collection_arrives_whole_when_the_api_drifts(
    sandbox: Any, drift: dict[str, Any]
) -> None:
    """The collection streams share the patient streams' pager and its fallbacks."""
    from tap_cliniko.resources import COLLECTIONS
    from tap_cliniko.streams import STREAM_NAMES

    top_level = [c for c in COLLECTIONS if not c.parent]
    with sandbox(patients=40, seed=46, collections=0.3, **drift) as server:
        result = run_tap(tap_config(server.base_url, per_page=4), streams=list(STREAM_NAMES))
        snapshots = {c.name: server.store.snapshot(c.name) for c in top_level}
    for collection in top_level:
        deleted_readable = collection.deleted_route and drift.get("variant_routes", True)
        expected = {
            key
            for key, row in snapshots[collection.name].items()
            if row["status"] != "deleted" or deleted_readable
        }
        got = {
            ":".join(str(r[k]) for k in collection.key)
            for r in result.records.get(collection.name, [])
        }
        assert got == expected, f"{collection.name}: missing {sorted(expected - got)[:5]}"
