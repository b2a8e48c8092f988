"""The tap's real output piped into real Singer targets, loaded twice (full, then incremental)."""

from __future__ import annotations

import csv
import json
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tap_cliniko.resources import BY_NAME
from tap_cliniko.sandbox import SandboxServer
from tap_cliniko.streams import STREAM_NAMES
from tests.conftest import STATUS_STREAM, STREAMS, selecting, tap_config
from tests.e2e.conftest import PipeRun, Postgres, prerequisite, run_pipe

PATIENTS = 400
TIMESTAMP_TYPES = {
    "TIMESTAMP",
    "TIMESTAMP WITH TIME ZONE",
    "timestamp without time zone",
    "timestamp with time zone",
}
TEXT_TYPES = {"VARCHAR", "character varying", "text"}
Rows = list[dict[str, Any]]
LISTED_WITHOUT_DETAILS = "deleted_patients"  # Cliniko lists deleted patients as id and dates only


@dataclass
class Destination:
    """One target's config and how to read back what it holds."""

    config: dict[str, Any]
    rows: Callable[[str], Rows]
    column_type: Callable[[str, str], str | None]  # None: the target keeps no column types
    writes: str  # "append" (adds lines), "upsert" (by primary key) or "replace" (file per run)
    null: Any = None  # how the target writes a null


def no_types(stream: str, column: str) -> None:
    """Files keep no column types."""


def jsonl(workdir: Path, request: pytest.FixtureRequest) -> Destination:
    """target-jsonl: one file per stream, appended to on every run."""
    out = workdir / "jsonl"

    def rows(stream: str) -> Rows:
        path = out / f"{stream}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    config = {"destination_path": str(out), "do_timestamp_file": False}
    return Destination(config, rows, no_types, "append")


def duckdb_file(workdir: Path, request: pytest.FixtureRequest) -> Destination:
    """target-duckdb: a table per stream, upserted by primary key."""
    duckdb = prerequisite("duckdb")
    path = workdir / "warehouse.duckdb"
    schema = "tap_cliniko"

    def query(sql: str) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(path), read_only=True) as db:
            return list(db.sql(sql).fetchall())

    def rows(stream: str) -> Rows:
        return [json.loads(r[0]) for r in query(f"SELECT to_json(t) FROM {schema}.{stream} t")]

    def column_type(stream: str, column: str) -> str | None:
        found = query(
            "SELECT data_type FROM information_schema.columns WHERE table_schema ="
            f" '{schema}' AND table_name = '{stream}' AND column_name = '{column}'"
        )
        return str(found[0][0]) if found else "missing"

    config = {"filepath": str(path), "default_target_schema": schema}
    return Destination(config, rows, column_type, "upsert")


def postgres_db(workdir: Path, request: pytest.FixtureRequest) -> Destination:
    """meltanolabs-target-postgres: a table per stream in a real PostgreSQL, upserted."""
    server: Postgres = request.getfixturevalue("postgres")
    schema = f"e2e_{uuid.uuid4().hex[:12]}"

    def rows(stream: str) -> Rows:
        return [
            json.loads(r) for r in server.rows(f"SELECT row_to_json(t) FROM {schema}.{stream} t")
        ]

    def column_type(stream: str, column: str) -> str | None:
        found = server.rows(
            "SELECT data_type FROM information_schema.columns WHERE table_schema ="
            f" '{schema}' AND table_name = '{stream}' AND column_name = '{column}'"
        )
        return found[0] if found else "missing"

    config = {"sqlalchemy_url": server.uri, "default_target_schema": schema}
    return Destination(config, rows, column_type, "upsert")


def csv_files(workdir: Path, request: pytest.FixtureRequest) -> Destination:
    """meltanolabs-target-csv: one file per stream, replaced on every run."""
    out = workdir / "csv"

    def rows(stream: str) -> Rows:
        path = out / f"{stream}.csv"
        if not path.exists():
            return []
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))

    config = {"output_path": str(out), "file_naming_scheme": "{stream_name}.csv"}
    return Destination(config, rows, no_types, "replace", null="")


DESTINATIONS: dict[str, Callable[[Path, pytest.FixtureRequest], Destination]] = {
    "target-jsonl": jsonl,
    "target-duckdb": duckdb_file,
    "target-postgres": postgres_db,
    "target-csv": csv_files,
}


def instant(value: str) -> datetime:
    """A date-time as an aware UTC instant, whichever way a target wrote it."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "T"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def by_id(rows: Rows) -> dict[str, dict[str, Any]]:
    """Rows keyed by id, the last one winning (a reader's dedup)."""
    return {row["id"]: row for row in rows}


def without_metadata(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """A row without the target's own _sdc_* columns."""
    return None if row is None else {k: v for k, v in row.items() if not k.startswith("_sdc_")}


def stream_ids(snapshot: dict[str, dict[str, Any]], stream: str) -> set[str]:
    """Ids the server lists under a stream."""
    return {i for i, entry in snapshot.items() if STATUS_STREAM[entry["status"]] == stream}


@dataclass
class Changes:
    """What changed between the runs: the ids per stream, and whose e-mail was removed."""

    ids: dict[str, set[str]]
    email_removed: str


def change_patients(server: SandboxServer) -> Changes:
    """Update, remove an e-mail, create, archive, unarchive and delete a few patients."""
    snapshot = server.store.snapshot()
    active = sorted(stream_ids(snapshot, "patients"), key=int)
    archived = sorted(stream_ids(snapshot, "archived_patients"), key=int)
    updated = [active[0], active[len(active) // 2], active[-1]]
    for patient_id in updated:
        server.store.update_patient(patient_id, {"notes": f"changed {patient_id}"})
    server.store.update_patient(updated[0], {"email": None})
    server.store.archive_patient(active[1])
    server.store.delete_patient(active[2])
    server.store.unarchive_patient(archived[0])
    created = server.store.create_patient({"first_name": "Ada", "last_name": "Lovelace"})
    ids = {
        "patients": {*updated, archived[0], str(created["id"])},
        "archived_patients": {active[1]},
        "deleted_patients": {active[2]},
    }
    return Changes(ids, email_removed=updated[0])


def check_values(destination: Destination, row: dict[str, Any], sent: dict[str, Any]) -> int:
    """The row holds what the tap sent: text as text, null as null; the nulls seen."""
    nulls = 0
    for column in ("email", "notes", "archived_at"):
        if sent[column] is None:
            nulls += 1
            assert row[column] == destination.null, f"null {column} became {row[column]!r}"
        elif column == "archived_at":
            assert instant(row[column]) == instant(sent[column])
        else:
            assert row[column] == sent[column], f"{column} changed on the way"
    return nulls


def check_full_load(
    target: str, destination: Destination, run: PipeRun, snapshot: dict[str, Any], behaviour: str
) -> None:
    """Every patient once per stream, ids intact, timestamps typed, nulls null."""
    assert run.state == run.tap_state, f"{target} confirmed a different state than the tap wrote"
    nulls = 0
    for stream in STREAMS:
        expected = stream_ids(snapshot, stream)
        rows = destination.rows(stream)
        ids = [row["id"] for row in rows]
        assert set(ids) == expected, f"{target}/{stream}: patients lost or extra"
        assert not [i for i, n in Counter(ids).items() if n > 1], f"{target}/{stream}: duplicates"
        for column in ("updated_at", "created_at"):
            kind = destination.column_type(stream, column)
            assert kind is None or kind in TIMESTAMP_TYPES, f"{stream}.{column} is {kind}"
        kind = destination.column_type(stream, "id")
        assert kind is None or kind in TEXT_TYPES, f"{stream}.id is {kind}"
        sent = by_id(run.records(stream))
        for row in rows:
            record = snapshot[row["id"]]["record"]
            assert instant(row["updated_at"]) == instant(record["updated_at"])
            if stream != LISTED_WITHOUT_DETAILS:
                if record["email"] is None:  # Cliniko's null reaches the target as null
                    assert sent[row["id"]]["email"] is None
                nulls += check_values(destination, row, sent[row["id"]])
    assert nulls, "the data should have null values to check"
    if behaviour == "current":
        assert any(len(i) >= 18 for i in snapshot), "the data should have 19-digit ids"


def check_incremental(
    target: str,
    destination: Destination,
    runs: tuple[PipeRun, PipeRun],
    loaded_before: dict[str, Rows],
    before: dict[str, Any],
    changes: Changes,
) -> None:
    """The second run carries only the changes (plus the bookmark's own second) and lands them."""
    first, second = runs
    assert second.state == second.tap_state, f"{target} confirmed a different state"
    for stream in STREAMS:
        changed = changes.ids[stream]
        bookmark = first.state["bookmarks"][stream]["replication_key_value"]
        sent = by_id(second.records(stream))
        emitted = [record["id"] for record in second.records(stream)]
        assert len(emitted) == len(sent), f"{stream}: a patient sent twice"
        assert changed <= set(sent), f"{stream}: a changed patient was missed"
        for patient_id in set(sent) - changed:
            updated_at = before[patient_id]["record"]["updated_at"]
            assert instant(updated_at) == instant(bookmark), f"{stream}: {patient_id} re-sent"
        new_bookmark = second.state["bookmarks"][stream]["replication_key_value"]
        assert instant(new_bookmark) > instant(bookmark), f"{stream}: state did not advance"

        rows = destination.rows(stream)
        merged = by_id(rows)
        if destination.writes == "append":
            added = [row["id"] for row in rows[len(loaded_before[stream]) :]]
            assert added == emitted, f"{target}/{stream}: added rows are not the run's records"
        elif destination.writes == "upsert":
            old = by_id(loaded_before[stream])
            assert len(merged) == len(rows), f"{target}/{stream}: duplicate keys after upsert"
            moved = {
                i
                for i, row in merged.items()
                if without_metadata(row) != without_metadata(old.get(i))
            }
            assert moved == changed, f"{target}/{stream}: rows other than the changes"
        else:
            assert sorted(merged) == sorted(emitted), f"{target}/{stream}: file is not the run"
        if stream != LISTED_WITHOUT_DETAILS:
            for patient_id in changed:
                check_values(destination, merged[patient_id], sent[patient_id])
    removed = second.records("patients")
    if before[changes.email_removed]["record"]["email"] is not None:
        assert by_id(removed)[changes.email_removed]["email"] in (None, ""), "e-mail not removed"


DEFAULT_STREAMS = [n for n in STREAM_NAMES if not (n in BY_NAME and BY_NAME[n].clinical)]


def row_keys(stream: str, rows: Rows) -> list[tuple[str, ...]]:
    """The primary key of each row, as text."""
    keys = BY_NAME[stream].key if stream in BY_NAME else ("id",)
    return [tuple(str(row[k]) for k in keys) for row in rows]


def check_every_stream(
    target: str, destination: Destination, runs: list[PipeRun], loaded: list[dict[str, Rows]]
) -> None:
    """Every default stream of the whole account lands: the target holds each key the tap sent
    (upsert: once; append: every record; replace: the last run's), with timestamps typed."""
    sent_streams = {m["stream"] for m in runs[0].messages if m["type"] == "RECORD"}
    assert set(DEFAULT_STREAMS) <= sent_streams, set(DEFAULT_STREAMS) - sent_streams
    for stream in DEFAULT_STREAMS:
        for number, run in enumerate(runs):
            rows = loaded[number][stream]
            sent = run.records(stream)
            if destination.writes == "replace":
                assert sorted(row_keys(stream, rows)) == sorted(set(row_keys(stream, sent)))
            elif destination.writes == "append":
                before = len(loaded[number - 1][stream]) if number else 0
                assert row_keys(stream, rows[before:]) == row_keys(stream, sent), stream
            else:
                all_sent = [r for earlier in runs[: number + 1] for r in earlier.records(stream)]
                keys = row_keys(stream, rows)
                assert len(keys) == len(set(keys)), f"{target}/{stream}: duplicate keys"
                assert set(keys) == set(row_keys(stream, all_sent)), f"{target}/{stream}"
        if stream in BY_NAME and BY_NAME[stream].incremental:
            kind = destination.column_type(stream, "updated_at")
            assert kind is None or kind in TIMESTAMP_TYPES, f"{stream}.updated_at is {kind}"


CASES = [
    ("target-jsonl", "current"),
    ("target-jsonl", "legacy"),
    ("target-duckdb", "current"),
    ("target-postgres", "current"),
    ("target-csv", "current"),
]


@pytest.mark.parametrize(("target", "behaviour"), CASES)
def test_target_gets_every_patient_once_then_only_the_changes(
    target: str,
    behaviour: str,
    sandbox: Any,
    target_executable: Callable[[str], Path],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    destination = DESTINATIONS[target](tmp_path, request)
    executable = target_executable(target)
    with sandbox(patients=PATIENTS, seed=61, behaviour=behaviour) as server:
        config = tap_config(server.base_url, per_page=50)
        first = run_pipe(config, executable, destination.config, tmp_path / "run-1")
        before = server.store.snapshot()
        check_full_load(target, destination, first, before, behaviour)

        loaded_before = {stream: destination.rows(stream) for stream in DEFAULT_STREAMS}
        changes = change_patients(server)
        second = run_pipe(
            config, executable, destination.config, tmp_path / "run-2", state=first.state
        )
    check_incremental(target, destination, (first, second), loaded_before, before, changes)
    loaded_after = {stream: destination.rows(stream) for stream in DEFAULT_STREAMS}
    check_every_stream(target, destination, [first, second], [loaded_before, loaded_after])


def test_target_csv_loads_flattened_records(
    sandbox: Any, target_executable: Callable[[str], Path], tmp_path: Path
) -> None:
    """meltano.yml's target-csv with flattening on: every record, nested fields as columns."""
    destination = csv_files(tmp_path, None)  # type: ignore[arg-type]
    with sandbox(patients=120, seed=62) as server:
        config = tap_config(server.base_url, flattening_enabled=True, flattening_max_depth=1)
        run = run_pipe(config, target_executable("target-csv"), destination.config, tmp_path)
        snapshot = server.store.snapshot()
    for stream in STREAMS:
        rows = destination.rows(stream)
        assert {row["id"] for row in rows} == stream_ids(snapshot, stream), stream
        assert len(rows) == len(run.records(stream))
    for stream in DEFAULT_STREAMS:  # every other stream flattens and lands too
        assert len(destination.rows(stream)) == len(run.records(stream)), stream
    columns = set(destination.rows("patients")[0])
    assert {"pronouns__nominative", "links__self"} <= columns, "nested fields became columns"
    assert "pronouns" not in columns


def test_target_postgres_keeps_every_row_cliniko_has_live_when_a_stream_is_skipped_or_fails(
    sandbox: Any,
    target_executable: Callable[[str], Path],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """Full-table streams into the real target-postgres: a good run, a run skipping users on
    403, a run where users fails half-way on 500s, one where its permission is lost half-way,
    then a good run again. After each, the rows Cliniko still has are live (_sdc_deleted_at
    null); after the last, the tax Cliniko deleted is retired."""
    destination = postgres_db(tmp_path, request)
    executable = target_executable("target-postgres")
    streams = ("taxes", "users")
    with sandbox(patients=20, seed=63) as server:
        config = tap_config(server.base_url, per_page=2, max_retry_seconds=1)
        catalog = selecting(config, streams)

        def run(name: str, tap_code: int = 0) -> PipeRun:
            return run_pipe(
                config, executable, destination.config, tmp_path / name, None, catalog, tap_code
            )

        def check_live(after: str) -> None:
            for stream in streams:
                rows = server.store.snapshot(stream)
                cliniko = {key for key, row in rows.items() if row["status"] != "deleted"}
                live = {r["id"] for r in destination.rows(stream) if r["_sdc_deleted_at"] is None}
                assert live == cliniko, f"after {after}: {stream} live rows differ from Cliniko's"

        run("good")
        check_live("a good run")
        server.forbidden.add("users")
        skipped = run("users-refused")
        server.forbidden.discard("users")
        assert not skipped.records("users") and skipped.records("taxes")
        check_live("a run skipping users on 403")
        for status in (500, 403):
            server.faults.fail_route_after("/users", 2, status)
            failed = run(f"users-{status}-half-way", tap_code=1)
            server.faults.heal_routes()
            assert failed.records("users"), "the run should fail after rows were sent"
            check_live(f"a run failing half-way with {status}")
        gone = sorted(server.store.snapshot("taxes"), key=int)[0]
        server.store.delete("taxes", gone)
        run("good-again")
        check_live("a good run after a tax was deleted")
    taxes = by_id(destination.rows("taxes"))
    assert taxes[gone]["_sdc_deleted_at"] is not None, "the deleted tax was not retired"
