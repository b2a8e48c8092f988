"""Cliniko's answers contradicting themselves, against the local Cliniko over HTTP.

A next link looping back, a page glitching (empty, or full without a next link), a route
ignoring the id cursor or the bookmark's filter (issue 16 #2, #3, #6). Each run ends: with
every row, or non-zero in one line naming the route, the bookmark where it was, and a later
run without the fault gets every row.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import STREAMS, SyncResult, parse_output, run_tap, selecting, tap_config

TAP = [sys.executable, "-c", "from tap_cliniko.tap import main; main()"]


def run_cli(
    tmp_path: Path, config: dict[str, Any], state: dict[str, Any] | None = None
) -> tuple[subprocess.CompletedProcess[str], SyncResult]:
    """The tap's command line on the patient streams; a run that never ends fails the test."""
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "catalog.json").write_text(json.dumps(selecting(config, STREAMS)))
    args = ["--config", str(tmp_path / "config.json"), "--catalog", str(tmp_path / "catalog.json")]
    if state is not None:
        (tmp_path / "state.json").write_text(json.dumps(state))
        args += ["--state", str(tmp_path / "state.json")]
    done = subprocess.run([*TAP, *args], capture_output=True, text=True, timeout=120, check=False)
    return done, parse_output(done.stdout)


def assert_fails_in_one_line_naming(done: subprocess.CompletedProcess[str], route: str) -> None:
    assert done.returncode == 1, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("tap-cliniko: error:")]
    assert len(errors) == 1, done.stderr[-2000:]
    assert f"GET /v1{route}" in errors[0], errors[0]
    assert "Traceback" not in done.stderr


def bookmarks(state: dict[str, Any] | None) -> dict[str, Any]:
    return {
        name: entry.get("replication_key_value")
        for name, entry in (state or {}).get("bookmarks", {}).items()
    }


def ids_in(server: Any, status: str) -> set[str]:
    return {i for i, e in server.store.snapshot().items() if e["status"] == status}


@pytest.mark.parametrize("glitch", ["empty", "no_next"])
@pytest.mark.parametrize("slots", [1, 8])
def test_a_page_glitching_once_is_asked_again_and_every_row_arrives(
    sandbox: Any, glitch: str, slots: int
) -> None:
    with sandbox(patients=200, seed=61) as server:
        server.faults.glitch_pages("/v1/patients", glitch, start=2, times=1)
        result = run_tap(tap_config(server.base_url, per_page=10, max_concurrency=slots))
        active = ids_in(server, "active")
        glitched = server.faults.page_glitch("/v1/patients")  # counts one more request
    assert glitched is None
    assert set(result.ids("patients")) == active


@pytest.mark.parametrize("glitch", ["empty", "no_next"])
def test_a_page_that_stays_glitched_fails_in_one_line_and_the_bookmark_stays(
    sandbox: Any, tmp_path: Path, glitch: str
) -> None:
    """Issue 16 #3: the run exited 0, the bookmark moved past the missing rows for good."""
    with sandbox(patients=120, seed=62) as server:
        config = tap_config(server.base_url, per_page=10, lookback_seconds=0)
        first = run_tap(config)
        changed = sorted(ids_in(server, "active"), key=int)[:60]
        for patient in changed:
            server.store.update_patient(patient, {"notes": "changed"})
        server.faults.glitch_pages("/v1/patients", glitch, start=2, times=10**6)
        done, failed = run_cli(tmp_path, config, first.state)
        assert_fails_in_one_line_naming(done, "/patients")
        assert bookmarks(failed.state or first.state)["patients"] == first.bookmark("patients")
        server.faults.glitch_pages("/v1/patients", glitch, times=0)
        again = run_tap(config, state=failed.state or first.state)
    assert set(changed) <= set(again.ids("patients"))


def test_a_next_link_looping_to_page_one_fails_in_one_line_and_the_bookmark_stays(
    sandbox: Any, tmp_path: Path
) -> None:
    """Issue 16 #2: deleted rows read by their links (sort=id ignored) were read forever."""
    with sandbox(patients=120, seed=63, sort_mode="ignored") as server:
        config = tap_config(server.base_url, per_page=5, lookback_seconds=0)
        first = run_tap(config)
        deleted = sorted(ids_in(server, "active"), key=int)[:15]
        for patient in deleted:
            server.store.delete_patient(patient)
        server.faults.glitch_pages("/v1/patients/deleted", "loop", times=10**6)
        done, failed = run_cli(tmp_path, config, first.state)
        assert_fails_in_one_line_naming(done, "/patients/deleted")
        assert "leads back" in done.stderr
        state = failed.state or first.state
        assert bookmarks(state)["deleted_patients"] == first.bookmark("deleted_patients")
        server.faults.glitch_pages("/v1/patients/deleted", "loop", times=0)
        again = run_tap(config, state=state)
    assert set(deleted) <= set(again.ids("deleted_patients"))


def test_a_route_ignoring_the_id_cursor_is_read_by_created_at_instead(
    sandbox: Any, tmp_path: Path
) -> None:
    """Issue 16 #6: a list ignoring id:> was read forever, the same rows page after page."""
    with sandbox(patients=150, seed=64) as server:
        server.faults.ignore_filters("/v1/patients", "id:>")
        config = tap_config(server.base_url, per_page=10)
        done, result = run_cli(tmp_path, config)
        active = ids_in(server, "active")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ignored the id filter" in done.stderr
    assert set(result.ids("patients")) == active
    assert (result.state or {})["bookmarks"]["patients"]["paging_mode"] == "created_at"


def test_a_collection_ignoring_its_bookmark_filter_is_not_asked_for_it_again(
    sandbox: Any,
) -> None:
    """Learned once and kept in state: later runs read invoices whole, no second warning."""
    streams = ("invoices",)
    with sandbox(patients=40, seed=67) as server:
        config = tap_config(server.base_url, per_page=10, lookback_seconds=0)
        first = run_tap(config, streams=streams)
        server.faults.ignore_filters("/v1/invoices", "updated_at:")
        for row_id in sorted(server.store.snapshot("invoices"), key=int)[:3]:
            server.store.update("invoices", row_id, {"notes": "changed"})
        learned = run_tap(config, state=first.state, streams=streams)
        asked = len(server.requests)
        again = run_tap(config, state=learned.state, streams=streams)
        later = server.requests[asked:]
        live = {k for k, e in server.store.snapshot("invoices").items() if e["status"] != "deleted"}
    bookmark = (learned.state or {})["bookmarks"]["invoices"]
    assert bookmark["unsearchable_filters"] == {"updated_at": None}
    assert set(again.ids("invoices")) >= live  # the whole list, every run after
    filtered = [r for r in later if r.path == "/v1/invoices" and "updated_at" in r.query_string]
    assert not filtered, f"asked again for the filter Cliniko ignores: {filtered[0].query_string}"


def test_a_route_ignoring_every_cursor_fails_in_one_line(sandbox: Any, tmp_path: Path) -> None:
    with sandbox(patients=150, seed=65) as server:
        server.faults.ignore_filters("/v1/patients", "id:", "created_at:")
        done, result = run_cli(tmp_path, tap_config(server.base_url, per_page=10))
    assert_fails_in_one_line_naming(done, "/patients")
    assert bookmarks(result.state).get("patients") is None


def test_a_route_ignoring_the_bookmark_filter_is_read_without_it(
    sandbox: Any, tmp_path: Path
) -> None:
    """Rows before the bookmark mean updated_at:>= is not honoured: said, and remembered."""
    with sandbox(patients=80, seed=66) as server:
        config = tap_config(server.base_url, per_page=10, lookback_seconds=0)
        first = run_tap(config)
        changed = sorted(ids_in(server, "active"), key=int)[:5]
        for patient in changed:
            server.store.update_patient(patient, {"notes": "changed"})
        server.faults.ignore_filters("/v1/patients", "updated_at:")
        done, result = run_cli(tmp_path, config, first.state)
        active = ids_in(server, "active")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ignores the filter on updated_at" in done.stderr
    assert set(result.ids("patients")) == active  # the whole list: more rows, never fewer
    learned = (result.state or {})["bookmarks"]["patients"]["unsearchable_filters"]
    assert learned == {"updated_at": None}
