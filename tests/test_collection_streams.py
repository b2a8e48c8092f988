"""Every collection stream against the local Cliniko over HTTP: rows, states, kinds, 403s."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests

from tap_cliniko.cliniko import ClinikoError
from tap_cliniko.resources import BY_NAME, COLLECTIONS, Collection
from tap_cliniko.sandbox import SandboxConfig, SandboxServer
from tap_cliniko.streams import STREAM_NAMES
from tests.conftest import SANDBOX_KEY, USER_AGENT, SyncResult, run_tap, tap_config

SCHEMAS = Path(__file__).parents[1] / "schemas"
TOP_LEVEL = [c for c in COLLECTIONS if not c.parent]
EVERY = list(STREAM_NAMES)
DEFAULT = [name for name in EVERY if not (name in BY_NAME and BY_NAME[name].clinical)]
STATUS_FIELD = {"archived": "archived_at", "cancelled": "cancelled_at", "deleted": "deleted_at"}


class Clinic:
    """One local Cliniko with a whole synthetic account, and the tap's first full sync of it."""

    def __init__(self, tmp: Path) -> None:
        settings = SandboxConfig(patients=60, seed=9, api_key=SANDBOX_KEY, data_dir=tmp)
        self.server = SandboxServer(settings).start()
        self.config = tap_config(self.server.base_url, per_page=20)
        self.snapshots = {c.name: self.server.store.snapshot(c.name) for c in TOP_LEVEL}
        self.everything = run_tap(self.config, streams=EVERY)

    def write(self, method: str, path: str, body: dict[str, Any] | None = None) -> None:
        """Change the account through the API, as a clinic would."""
        response = requests.request(
            method,
            f"{self.server.base_url}{path}",
            json=body,
            auth=(SANDBOX_KEY, ""),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            timeout=30,
        )
        assert response.status_code < 300, (method, path, response.status_code)


@pytest.fixture(scope="module")
def clinic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clinic]:
    clinic = Clinic(tmp_path_factory.mktemp("clinic"))
    yield clinic
    clinic.server.stop()


def expected_keys(clinic: Clinic, collection: Collection) -> dict[str, str]:
    """Key -> status of every row the stream must hold: all of them, deleted ones where
    Cliniko lists them (a deleted route); rows hard-deleted are gone from the store too."""
    rows = clinic.snapshots[collection.name]
    return {
        key: row["status"]
        for key, row in rows.items()
        if row["status"] != "deleted" or collection.deleted_route
    }


def key_of(collection: Collection, record: dict[str, Any]) -> str:
    return ":".join(str(record[k]) for k in collection.key)


def test_every_collection_arrives_whole_with_hidden_rows_and_their_status(clinic: Clinic) -> None:
    statuses: set[str] = set()
    for collection in TOP_LEVEL:
        records = clinic.everything.records.get(collection.name, [])
        expected = expected_keys(clinic, collection)
        got = {key_of(collection, r): r for r in records}
        assert set(got) == set(expected), collection.name
        assert expected, f"the local Cliniko has no {collection.name}"
        for key, status in expected.items():
            statuses.add(status)
            if field := STATUS_FIELD.get(status):
                assert got[key][field], (collection.name, key, field)
            if status == "inactive":
                assert got[key]["active"] is False
    # The account holds every kind of hidden row, so the checks above were not vacuous.
    assert {"archived", "cancelled", "deleted", "inactive"} <= statuses


def test_every_record_validates_against_its_generated_schema(clinic: Clinic) -> None:
    checker = jsonschema.FormatChecker()
    for collection in COLLECTIONS:
        schema = json.loads((SCHEMAS / f"{collection.name}.json").read_text())
        validator = jsonschema.Draft202012Validator(schema, format_checker=checker)
        records = clinic.everything.records[collection.name]
        assert records, collection.name
        for record in records:
            validator.validate(record)
            for name, value in record.items():
                if name == "id" or name.endswith("_id"):
                    assert value is None or (isinstance(value, str) and value.isdigit()), name


def test_links_fill_id_columns_that_join(clinic: Clinic) -> None:
    appointments = clinic.everything.records["individual_appointments"]
    practitioners = {r["id"] for r in clinic.everything.records["practitioners"]}
    patients = {r["id"] for s in ("patients", "archived_patients", "deleted_patients")
                for r in clinic.everything.records[s]}  # fmt: skip
    live = [r for r in appointments if not r.get("deleted_at")]
    assert live and all(r["practitioner_id"] in practitioners for r in live)
    missing = [r["patient_id"] for r in live if r["patient_id"] not in patients]
    assert not missing, (len(missing), len(patients), missing[:3])
    services = clinic.everything.records["services"]
    assert all(r["business_id"] and r["appointment_type_id"] for r in services)


def test_child_streams_hold_each_parent_s_practitioners(clinic: Clinic) -> None:
    practitioners = {r["id"]: r for r in clinic.everything.records["practitioners"]}
    for name, parent in (
        ("business_practitioners", "businesses"),
        ("appointment_type_practitioners", "appointment_types"),
    ):
        collection = BY_NAME[name]
        rows = clinic.everything.records[name]
        parents = {r["id"] for r in clinic.everything.records[parent]}
        assert rows, name
        keys = [key_of(collection, r) for r in rows]
        assert len(keys) == len(set(keys)), name
        for row in rows:
            assert row[collection.parent_key] in parents
            assert row["id"] in practitioners
        # Inactive practitioners come from the nested /inactive routes.
        if name == "business_practitioners":
            assert any(r["active"] is False for r in rows)


def test_clinical_streams_are_left_out_unless_selected(clinic: Clinic) -> None:
    default = run_tap(clinic.config, streams=None)
    for collection in COLLECTIONS:
        got = default.records.get(collection.name, [])
        assert bool(got) is (not collection.clinical), collection.name
    schemas = {json.loads(line)["stream"] for line in default.lines if '"SCHEMA"' in line}
    assert schemas.isdisjoint({c.name for c in COLLECTIONS if c.clinical})


def test_second_run_reads_only_changes_full_tables_whole_with_activate_version(
    clinic: Clinic,
) -> None:
    first = run_tap(clinic.config, streams=DEFAULT)
    for collection in COLLECTIONS:
        if collection.incremental and not collection.clinical:
            assert first.bookmark(collection.name), collection.name
    appointments = [
        r
        for r in first.records["individual_appointments"]
        if not (r.get("cancelled_at") or r.get("archived_at") or r.get("deleted_at"))
    ]
    updated, cancelled, archived, deleted = (r["id"] for r in appointments[:4])
    route = "/individual_appointments"
    clinic.write("PATCH", f"{route}/{updated}", {"notes": "moved to the afternoon"})
    clinic.write("PATCH", f"{route}/{cancelled}/cancel", {"cancellation_reason": 10})
    clinic.write("POST", f"{route}/{archived}/archive")
    clinic.write("DELETE", f"{route}/{deleted}")
    tax = first.records["taxes"][0]["id"]
    clinic.write("DELETE", f"/taxes/{tax}")

    second = run_tap(clinic.config, state=first.state, streams=DEFAULT)

    latest = {r["id"]: r for r in second.records["individual_appointments"]}
    assert latest[updated]["notes"] == "moved to the afternoon"
    assert latest[cancelled]["cancelled_at"]
    assert latest[archived]["archived_at"]
    assert latest[deleted]["deleted_at"]
    # Incremental: the changed rows, plus at most those updated in the bookmark's second.
    assert len(second.records["individual_appointments"]) < len(appointments) // 4
    for collection in COLLECTIONS:
        if collection.incremental and not collection.clinical:
            assert second.bookmark(collection.name) >= first.bookmark(collection.name)
    # Full-table: every row again, under a new version, the hard-deleted tax gone.
    versions = {}
    for line in second.lines:
        message = json.loads(line)
        if message["type"] == "ACTIVATE_VERSION":
            versions[message["stream"]] = message["version"]
    full_table = {c.name for c in COLLECTIONS if not c.incremental}
    assert set(versions) == full_table
    assert tax not in {r["id"] for r in second.records["taxes"]}
    assert len(second.records["taxes"]) == len(first.records["taxes"]) - 1
    for line in second.lines:
        message = json.loads(line)
        if message["type"] == "RECORD" and message["stream"] in full_table:
            assert message["version"] == versions[message["stream"]]


def test_a_stream_refused_with_403_is_skipped_and_the_rest_sync(
    clinic: Clinic, caplog: pytest.LogCaptureFixture
) -> None:
    clinic.server.forbidden.add("users")  # the key's user is not an administrator
    try:
        result = run_tap(clinic.config, streams=["taxes", "users", "contacts"])
    finally:
        clinic.server.forbidden.discard("users")
    assert result.records["taxes"] and result.records["contacts"]
    assert not result.records.get("users")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    refused = [w for w in warnings if "403" in w]
    assert len(refused) == 1
    assert "users" in refused[0] and "administer users" in refused[0]
    assert "users" not in (result.state or {}).get("bookmarks", {}) or not result.state[
        "bookmarks"
    ]["users"].get("replication_key_value")


def test_403_on_every_selected_stream_fails_in_one_line(clinic: Clinic) -> None:
    clinic.server.forbidden.update({"taxes", "users"})
    try:
        with pytest.raises(ClinikoError, match="403 on every selected stream"):
            run_tap(clinic.config, streams=["taxes", "users"])
    finally:
        clinic.server.forbidden.difference_update({"taxes", "users"})


@pytest.mark.parametrize("mode", ["rejected", "rejected_or_unanswered"])
def test_privacy_redaction_blanks_rows_naming_a_patient_it_applies_to(
    clinic: Clinic, mode: str
) -> None:
    patients = clinic.server.store.snapshot("patients")
    # The tap reads answers from /patients (archived included); a deleted patient's answer
    # is not listed, so 'rejected_or_unanswered' blanks them too and 'rejected' cannot.
    consent = {
        key: row["record"].get("accepted_privacy_policy")
        for key, row in patients.items()
        if row["status"] != "deleted"
    }
    if mode == "rejected":
        blanked = {key for key, answer in consent.items() if answer is False}
    else:
        blanked = {key for key in patients if consent.get(key) is not True}
    streams = ["individual_appointments", "attendees", "invoices", "treatment_notes"]
    config = {**clinic.config, "privacy_redaction": mode}
    result = run_tap(config, streams=streams)
    unredacted = run_tap(clinic.config, streams=streams)
    plain = {s: {r["id"]: r for r in unredacted.records[s]} for s in streams}
    seen_blanked = seen_kept = 0
    for stream in streams:
        for record in result.records[stream]:
            if record.get("deleted_at"):
                continue  # a deleted row holds only its id and deleted_at
            before = plain[stream][record["id"]]
            texts = [n for n in ("notes", "patient_name", "content", "invoice_to") if n in record]
            if record["patient_id"] in blanked:
                seen_blanked += 1
                assert all(record[n] is None for n in texts), (stream, record["id"])
                # What a clinic counts by is kept.
                for kept in ("id", "patient_id", "starts_at", "total_amount", "did_not_arrive"):
                    if kept in record:
                        assert record[kept] == before[kept], (stream, kept)
            else:
                seen_kept += 1
                assert record == before, (stream, record["id"])
    assert seen_blanked and seen_kept
    # Counts are unchanged: redaction blanks, it never drops a row.
    for stream in streams:
        assert len(result.records[stream]) == len(unredacted.records[stream])


def test_without_the_older_deleted_routes_the_sync_completes_with_one_warning_each(
    sandbox: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with_deleted = [c.name for c in COLLECTIONS if c.deleted_route]
    with sandbox(patients=20, seed=4, variant_routes=False) as server:
        result = run_tap(tap_config(server.base_url), streams=with_deleted)
        snapshots = {name: server.store.snapshot(name) for name in with_deleted}
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    for name in with_deleted:
        collection = BY_NAME[name]
        assert sum(str(collection.deleted_route) in w for w in warned) == 1, name
        live = {k for k, row in snapshots[name].items() if row["status"] != "deleted"}
        assert {r["id"] for r in result.records[name]} == live, name


def test_without_practitioners_inactive_the_active_ones_come_with_one_warning(
    sandbox: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with sandbox(patients=20, seed=4, missing_routes=("/practitioners/inactive",)) as server:
        result = run_tap(tap_config(server.base_url), streams=["practitioners", "taxes"])
        rows = server.store.snapshot("practitioners")
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert sum("/practitioners/inactive" in w for w in warned) == 1, warned
    active = {k for k, row in rows.items() if row["status"] == "active"}
    assert active != set(rows), "the local Cliniko has inactive practitioners to leave out"
    assert {r["id"] for r in result.records["practitioners"]} == active
    assert result.records["taxes"]


def test_child_streams_with_parents_added_archived_and_removed_mid_sync(
    sandbox: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """appointment_type_practitioners while its parents change under it.

    One parent is archived before the run. Once the parents' list is read (at the first
    nested request), the local Cliniko archives the last parent, stops serving the nested
    routes of the one before (404: gone) and adds a new one. An archived parent's rows still
    come, from the one archived before the run and from the one archived mid-sync; the
    removed parent's rows are left out with one warning per route and the run completes;
    the next run reads the added parent's routes.
    """
    name = "appointment_type_practitioners"
    nested = re.compile(r"^/v1/appointment_types/(\d+)/practitioners")
    with sandbox(patients=30, seed=9, collections=0.3) as server:
        config = tap_config(server.base_url, max_concurrency=2)
        baseline = run_tap(config, streams=[name])
        with_rows = sorted({r["appointment_type_id"] for r in baseline.records[name]}, key=int)
        # The last parents in id order: their routes are asked after the first parent's.
        archived_before, removed, archived = with_rows[-3:]
        server.store.archive("appointment_types", archived_before)
        changed: list[str] = []
        lock = threading.Lock()

        def change_parents(route: str, args: Any) -> int | None:
            match = nested.match(route)
            if not match:
                return None
            with lock:
                if not changed:  # the parents' list is read: change them before the rest
                    server.store.archive("appointment_types", archived)
                    added = server.store.create("appointment_types", {"name": "New type"})
                    changed.append(str(added["id"]))
            return 404 if match.group(1) == removed else None

        server.before_list_page = change_parents
        caplog.clear()
        during = run_tap(config, streams=[name])
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        server.requests.clear()
        after = run_tap(config, streams=[name])
        server.before_list_page = None
        asked = {m.group(1) for r in server.requests if (m := nested.match(r.path))}

    def rows(result: SyncResult) -> dict[str, set[str]]:
        by_parent: dict[str, set[str]] = {}
        for record in result.records[name]:
            by_parent.setdefault(record["appointment_type_id"], set()).add(record["id"])
        return by_parent

    expected = rows(baseline)
    assert changed
    del expected[removed]
    assert rows(during) == expected, "an archived parent's rows are kept, a removed one's left"
    assert rows(after) == expected
    assert changed[0] in asked, "the parent added mid-sync is read by the next run"
    assert len(warned) == 2, warned
    assert all("/appointment_types/{parent_id}/practitioners" in w for w in warned), warned
