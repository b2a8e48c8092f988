"""The three streams against the local Cliniko over real HTTP: records, filters, paging, state."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jsonschema
import pytest
import yaml

from tests.conftest import STATUS_STREAM, STREAMS, run_tap, selecting, tap_config

LIST_ROUTES = ("/v1/patients", "/v1/patients/archived", "/v1/patients/deleted")
SCHEMA = json.loads((Path(__file__).parents[1] / "schemas" / "patient.json").read_text())


def expected_ids(server: Any) -> dict[str, set[str]]:
    """Ids per stream, from the server's own view of every patient."""
    ids: dict[str, set[str]] = {name: set() for name in STREAMS}
    for patient_id, entry in server.store.snapshot().items():
        ids[STATUS_STREAM[entry["status"]]].add(patient_id)
    return ids


def list_requests(server: Any, route: str | None = None) -> list[list[tuple[str, str]]]:
    """Query parameters of every list request the server answered (on one route if given)."""
    return [
        parse_qsl(r.query_string, keep_blank_values=True)
        for r in server.requests
        if r.method == "GET" and r.path in LIST_ROUTES and route in (None, r.path)
    ]


@pytest.mark.parametrize("behaviour", ["current", "legacy"])
def test_full_sync_emits_every_patient_once_in_its_stream(sandbox: Any, behaviour: str) -> None:
    with sandbox(patients=420, seed=3, behaviour=behaviour) as server:
        result = run_tap(tap_config(server.base_url, per_page=25))
        expected = expected_ids(server)
    validator = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
    for stream in STREAMS:
        ids = result.ids(stream)
        assert len(ids) == len(set(ids)), f"{stream}: a primary key repeated within one sync"
        assert set(ids) == expected[stream]
        for record in result.records[stream]:
            assert isinstance(record["id"], str) and record["id"].isdigit()
            assert record["updated_at"]
            validator.validate(record)
    assert expected["archived_patients"] and expected["deleted_patients"]


def test_legacy_empty_dates_become_null_and_other_strings_stay(sandbox: Any) -> None:
    with sandbox(patients=120, seed=4, behaviour="legacy") as server:
        result = run_tap(tap_config(server.base_url))
    active = result.records["patients"]
    assert all(r["archived_at"] is None and r["deleted_at"] is None for r in active)
    assert any(r.get("notes") == "" for r in active), "empty non-date strings are kept as sent"
    assert {r["id"] for r in active} <= {str(n) for n in range(1, 121)}


def test_current_ids_are_nineteen_digit_strings_and_deleted_ids_come_from_links(
    sandbox: Any,
) -> None:
    with sandbox(patients=150, seed=5, behaviour="current") as server:
        result = run_tap(tap_config(server.base_url))
        snapshot = server.store.snapshot()
    assert all(len(i) >= 18 for i in result.ids("patients"))
    for record in result.records["deleted_patients"]:
        assert snapshot[record["id"]]["status"] == "deleted"
        assert record["updated_at"] == record["deleted_at"]


def test_incremental_filter_survives_every_page_and_no_parameter_repeats(sandbox: Any) -> None:
    with sandbox(patients=300, seed=6) as server:
        first = run_tap(tap_config(server.base_url, per_page=10))
        server.requests.clear()
        for patient_id, entry in list(server.store.snapshot().items())[:80]:
            if entry["status"] == "active":
                server.store.update_patient(patient_id, {"notes": "changed"})
        second = run_tap(tap_config(server.base_url, per_page=10), state=first.state)
        queries = list_requests(server)
    bookmark = first.bookmark("patients")
    assert bookmark is not None
    patients_queries = [q for q in queries if ("q[]", f"updated_at:>={bookmark}") in q]
    assert len(patients_queries) >= 3, "the changed patients span several pages"
    for query in queries:
        assert len(query) == len(set(query)), f"a parameter was sent twice: {query}"
        keys = Counter(key for key, _ in query)
        assert keys["page"] == 0 and keys["sort"] == 1 and keys["per_page"] == 1
    changed = [r for r in second.records["patients"] if r["notes"] == "changed"]
    assert len(changed) >= 30
    others = [r for r in second.records["patients"] if r["notes"] != "changed"]
    assert all(r["updated_at"] == bookmark for r in others), (
        "only the bookmark's own second repeats"
    )


def test_start_date_and_bookmark_the_later_wins(sandbox: Any) -> None:
    with sandbox(patients=80, seed=7) as server:
        early, late = "2001-01-01T00:00:00Z", "2099-01-01T00:00:00Z"
        state = {
            "bookmarks": {
                "patients": {"replication_key": "updated_at", "replication_key_value": late}
            }
        }
        server.requests.clear()
        result = run_tap(tap_config(server.base_url, start_date=early), state=state)
        first_query = list_requests(server, "/v1/patients")[0]
        assert ("q[]", f"updated_at:>={late}") in first_query
        assert result.records["patients"] == []

        server.requests.clear()
        run_tap(
            tap_config(server.base_url, start_date=late),
            state={
                "bookmarks": {
                    "patients": {"replication_key": "updated_at", "replication_key_value": early}
                }
            },
        )
        assert ("q[]", f"updated_at:>={late}") in list_requests(server, "/v1/patients")[0]

        server.requests.clear()
        run_tap(tap_config(server.base_url))
        assert not any(key == "q[]" for key, _ in list_requests(server, "/v1/patients")[0]), (
            "a first full sync sends no filter"
        )


def test_bookmark_never_passes_the_server_clock_at_sync_start(sandbox: Any) -> None:
    # Cliniko's clock runs an hour behind this machine's, so the local clock cannot be the cap.
    # Patient A changes after its page was read, patient B a second later before its page is
    # read: a bookmark taken from B's updated_at (or the local clock) would lose A's change.
    with sandbox(patients=200, seed=8, clock_offset_seconds=-3600) as server:
        active = sorted(
            (i for i, e in server.store.snapshot().items() if e["status"] == "active"), key=int
        )
        first_page, later_page = active[0], active[-1]
        changed: list[str] = []

        def change_between_pages(route: str, args: Any) -> None:
            is_second_page = any(v.startswith("id:") for v in args.getlist("q[]"))
            if route.endswith("/patients") and is_second_page and not changed:
                server.store.update_patient(first_page, {"notes": "changed after its page"})
                time.sleep(1.1)
                server.store.update_patient(later_page, {"notes": "changed before its page"})
                changed.append(first_page)

        server.before_list_page = change_between_pages
        first = run_tap(tap_config(server.base_url, per_page=20))
        server.before_list_page = None
        second = run_tap(tap_config(server.base_url, per_page=20), state=first.state)
        final = server.store.snapshot()[first_page]["record"]
    assert changed, "the hook ran"
    mark = first.bookmark("patients")
    assert mark is not None
    assert datetime.fromisoformat(mark.replace("Z", "+00:00")) < datetime.now(UTC) - timedelta(
        minutes=30
    ), "capped by Cliniko's clock, not this machine's"
    latest = [r for r in second.records["patients"] if r["id"] == first_page]
    assert latest and latest[-1]["notes"] == "changed after its page" == final["notes"]


def test_deleted_route_falls_back_to_deleted_at_when_updated_at_is_not_searchable(
    sandbox: Any,
) -> None:
    with sandbox(patients=120, seed=9, behaviour="current") as server:
        first = run_tap(tap_config(server.base_url))
        victim = next(i for i, e in server.store.snapshot().items() if e["status"] == "active")
        server.store.delete_patient(victim)
        server.requests.clear()
        second = run_tap(tap_config(server.base_url), state=first.state)
        deleted_queries = [r for r in server.requests if r.path.endswith("/patients/deleted")]
    assert deleted_queries[0].status == 400
    assert "deleted_at%3A%3E%3D" in deleted_queries[1].query_string or "deleted_at:>=" in (
        deleted_queries[1].query_string
    )
    assert victim in second.ids("deleted_patients")


def test_archiving_without_updated_at_change_is_still_seen(sandbox: Any) -> None:
    with sandbox(patients=100, seed=10, archive_touches_updated_at=False) as server:
        first = run_tap(tap_config(server.base_url))
        victim = next(i for i, e in server.store.snapshot().items() if e["status"] == "active")
        server.store.archive_patient(victim)
        second = run_tap(tap_config(server.base_url), state=first.state)
    assert victim in second.ids("archived_patients")
    assert victim not in second.ids("patients")


def test_nothing_changed_costs_one_request_per_stream(sandbox: Any) -> None:
    with sandbox(patients=500, seed=11) as server:
        first = run_tap(tap_config(server.base_url))
        second = run_tap(tap_config(server.base_url), state=first.state)
        server.requests.clear()
        third = run_tap(tap_config(server.base_url), state=second.state)
        per_route = Counter(r.path for r in server.requests)
        statuses = {r.status for r in server.requests}
    for stream, rows in third.records.items():
        assert all(r["updated_at"] == second.bookmark(stream) for r in rows), "only >= repeats"
    assert statuses == {200}, "the refused updated_at filter was remembered in state"
    assert per_route["/v1/patients"] == 1
    assert per_route["/v1/patients/deleted"] == 1
    assert per_route["/v1/patients/archived"] == 2, "updated_at and archived_at passes"


def test_full_sync_request_count_is_near_the_page_count(sandbox: Any) -> None:
    with sandbox(patients=2000, seed=12) as server:
        expected = expected_ids(server)
        result = run_tap(tap_config(server.base_url))
        per_route = Counter(r.path for r in server.requests)
        # A window is read up to its own id:< bound; the list's lowest rows have none.
        bounds = {
            value
            for r in server.requests
            if r.path == "/v1/patients"
            for key, value in parse_qsl(r.query_string)
            if key == "q[]" and value.startswith("id:<")
        }
    pages = -(-len(expected["patients"]) // 100)
    windows = 1 + len(bounds)
    assert windows <= 2 * 8, f"{windows} windows for {pages} pages"
    # Each window may end on a page that is not full: at most one request more per window.
    assert pages <= per_route["/v1/patients"] <= pages + windows
    assert set(result.ids("patients")) == expected["patients"]
    assert len(result.ids("patients")) == len(expected["patients"])


def test_deselected_properties_are_left_out_and_the_rest_kept(sandbox: Any) -> None:
    with sandbox(patients=40, seed=14) as server:
        config = tap_config(server.base_url)
        catalog = selecting(config, STREAMS)
        for entry in catalog["streams"]:
            for meta in entry["metadata"]:
                if meta["breadcrumb"] == ["properties", "email"]:
                    meta["metadata"]["selected"] = False
        result = run_tap(config, catalog=catalog)
        everything = run_tap(config)
    assert result.records["patients"] and all("email" not in r for r in result.records["patients"])
    assert all("email" in r for r in everything.records["patients"])
    assert all("first_name" in r for r in result.records["patients"])


@pytest.mark.parametrize("mode", ["rejected", "rejected_or_unanswered"])
def test_privacy_redaction_blanks_personal_fields_and_keeps_counts(sandbox: Any, mode: str) -> None:
    with sandbox(patients=200, seed=15) as server:
        result = run_tap(tap_config(server.base_url, privacy_redaction=mode))
        snapshot = server.store.snapshot()
    blanked = {False} if mode == "rejected" else {False, None}
    for stream in ("patients", "archived_patients"):
        assert set(result.ids(stream)) == {
            i for i, e in snapshot.items() if STATUS_STREAM[e["status"]] == stream
        }
        for record in result.records[stream]:
            consent = snapshot[record["id"]]["record"]["accepted_privacy_policy"]
            personal = (record["first_name"], record["last_name"], record["email"], record["notes"])
            if consent in blanked:
                assert personal == (None, None, None, None)
                assert record["updated_at"] and record["accepted_privacy_policy"] is consent
            else:
                assert record["first_name"] == snapshot[record["id"]]["record"]["first_name"]


def test_batch_messages_carry_every_patient_cleaned(sandbox: Any, tmp_path: Path) -> None:
    """The SDK's BATCH mode goes through the same record cleaning as RECORD messages."""
    storage = {"root": tmp_path.as_uri(), "prefix": "batch-"}
    batch_config = {"encoding": {"format": "jsonl", "compression": "gzip"}, "storage": storage}
    with sandbox(patients=130, seed=37, behaviour="legacy") as server:
        # The older behaviour: integer ids and "" dates, which the cleaning must fix.
        result = run_tap(tap_config(server.base_url, per_page=40, batch_config=batch_config))
        expected = expected_ids(server)
    assert not any(result.records.values()), "batch mode writes no RECORD messages"
    batches = [json.loads(line) for line in result.lines if '"BATCH"' in line[:20]]
    for stream in STREAMS:
        rows = [
            json.loads(row)
            for batch in batches
            if batch["stream"] == stream
            for uri in batch["manifest"]
            for row in gzip.decompress(Path(uri.removeprefix("file://")).read_bytes()).splitlines()
        ]
        assert {row["id"] for row in rows} == expected[stream]
        dates = [
            n for n, p in SCHEMA["properties"].items() if p.get("format") in ("date", "date-time")
        ]
        for row in rows:
            assert isinstance(row["id"], str) and row["updated_at"], row["id"]
            assert not [name for name in dates if row.get(name) == ""], row["id"]
        assert result.bookmark(stream), f"{stream}: no bookmark after a batch sync"


def test_records_after_the_last_state_reach_stdout_when_the_process_ends(
    sandbox: Any, tmp_path: Path
) -> None:
    """A quiet incremental run ends with records and no new STATE; the real CLI writes them."""
    tap = Path(sys.executable).with_name("tap-cliniko")
    with sandbox(patients=200, seed=41) as server:
        config = tmp_path / "config.json"
        config.write_text(json.dumps(tap_config(server.base_url, per_page=30)))
        catalog = tmp_path / "catalog.json"
        catalog.write_text(json.dumps(selecting(tap_config(server.base_url), STREAMS)))
        state = tmp_path / "state.json"
        outputs = []
        for _ in range(3):  # full; learns the deleted route's filter; quiet
            args = [tap, "--config", config, "--catalog", catalog]
            args += ["--state", state] if outputs else []
            run = subprocess.run(args, capture_output=True, check=True, cwd=tmp_path)
            outputs.append([json.loads(line) for line in run.stdout.splitlines()])
            states = [m["value"] for m in outputs[-1] if m["type"] == "STATE"]
            state.write_text(json.dumps(states[-1]))
        expected = run_tap(tap_config(server.base_url, per_page=30), state=states[-1])
    quiet = outputs[-1]
    assert quiet[-1]["type"] == "RECORD", "the quiet run should end with records after STATE"
    emitted = [(m["stream"], m["record"]["id"]) for m in quiet if m["type"] == "RECORD"]
    assert sorted(emitted) == sorted((s, r["id"]) for s, r in expected.sequence)


@pytest.mark.parametrize("depth", [1, 3])
def test_flattened_records_match_their_flattened_schema(sandbox: Any, depth: int) -> None:
    """No key outside the SCHEMA: file targets (target-csv) refuse unannounced columns."""
    with sandbox(patients=80, seed=44) as server:
        config = tap_config(server.base_url, flattening_enabled=True, flattening_max_depth=depth)
        result = run_tap(config)
        snapshot = server.store.snapshot()
    properties: dict[str, set[str]] = {}
    for line in result.lines:
        message = json.loads(line)
        if message["type"] == "SCHEMA":
            properties[message["stream"]] = set(message["schema"]["properties"])
        elif message["type"] == "RECORD":
            extra = set(message["record"]) - properties[message["stream"]]
            assert not extra, f"{message['stream']}: keys not in its SCHEMA: {sorted(extra)}"
    assert "pronouns__nominative" in properties["patients"], "the schema was flattened"
    assert {i for rows in result.records.values() for i in (r["id"] for r in rows)} == set(snapshot)


def readme_privacy_map() -> dict[str, Any]:
    """The tap-cliniko config of README's privacy recipe (the YAML block under Privacy)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Privacy", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    return dict(yaml.safe_load(block)["plugins"]["extractors"][0]["config"])


def test_readme_privacy_map_hashes_and_drops_in_every_stream(sandbox: Any) -> None:
    recipe = readme_privacy_map()
    assert recipe["stream_map_config"]["hash_salt"] == "${CLINIKO_HASH_SALT}"
    salt = "a-long-random-secret"
    with sandbox(patients=120, seed=45, behaviour="legacy") as server:
        config = tap_config(
            server.base_url,
            stream_maps=recipe["stream_maps"],
            stream_map_config={"hash_salt": salt},
        )
        result = run_tap(config)
        snapshot = server.store.snapshot()
    hashed = 0
    for stream in STREAMS:
        assert result.records[stream], f"{stream}: the legacy shape lists full records"
        for record in result.records[stream]:
            assert "first_name" not in record and "last_name" not in record, stream
            email = snapshot[record["id"]]["record"].get("email")
            if email:
                assert record["email"] == hashlib.sha256((salt + email).encode()).hexdigest()
                hashed += 1
            else:
                assert record["email"] is None
    assert hashed, "some patients have an e-mail to hash"
