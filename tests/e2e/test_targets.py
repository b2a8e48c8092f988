"""The tap's real output piped into real Singer targets, loaded twice (full, then incremental)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.conftest import STATUS_STREAM, STREAMS, tap_config
from tests.e2e.conftest import last_state, run_tap, run_target

TIMESTAMP_TYPES = {
    "TIMESTAMP",
    "TIMESTAMP WITH TIME ZONE",
    "timestamp without time zone",
    "timestamp with time zone",
}


@dataclass
class Loaded:
    """A target's view of what it holds: rows per stream and the type of updated_at."""

    rows: Callable[[str], list[dict[str, Any]]]
    timestamp_type: Callable[[str], str | None]


def jsonl_loader(workdir: Path, _: Any) -> tuple[dict[str, Any], Loaded]:
    out = workdir / "jsonl"
    out.mkdir(exist_ok=True)

    def rows(stream: str) -> list[dict[str, Any]]:
        path = out / f"{stream}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    config = {"destination_path": str(out), "do_timestamp_file": False}
    return config, Loaded(rows, lambda stream: None)


def duckdb_loader(workdir: Path, _: Any) -> tuple[dict[str, Any], Loaded]:
    path = workdir / "warehouse.duckdb"

    def query(sql: str) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(path), read_only=True) as db:
            return db.sql(sql).fetchall()

    def rows(stream: str) -> list[dict[str, Any]]:
        found = query(f"SELECT to_json(t)::VARCHAR FROM cliniko.{stream} t")
        return [json.loads(row[0]) for row in found]

    def timestamp_type(stream: str) -> str | None:
        found = query(
            "SELECT data_type FROM information_schema.columns"
            f" WHERE table_name = '{stream}' AND column_name = 'updated_at'"
        )
        return found[0][0] if found else None

    config = {"filepath": str(path), "default_target_schema": "cliniko"}
    return config, Loaded(rows, timestamp_type)


def postgres_loader(workdir: Path, request: pytest.FixtureRequest) -> tuple[dict[str, Any], Loaded]:
    server = request.getfixturevalue("postgres")
    schema = f"cliniko_{workdir.name[-12:].lower().replace('-', '_')}"

    def rows(stream: str) -> list[dict[str, Any]]:
        out = server.psql(f"COPY (SELECT row_to_json(t) FROM {schema}.{stream} t) TO STDOUT;")
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def timestamp_type(stream: str) -> str | None:
        out = server.psql(
            "COPY (SELECT data_type FROM information_schema.columns WHERE table_schema ="
            f" '{schema}' AND table_name = '{stream}' AND column_name = 'updated_at') TO STDOUT;"
        )
        return out.strip() or None

    uri = server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
    config = {"sqlalchemy_url": uri, "default_target_schema": schema}
    return config, Loaded(rows, timestamp_type)


def csv_loader(workdir: Path, _: Any) -> tuple[dict[str, Any], Loaded]:
    out = workdir / "csv"
    out.mkdir(exist_ok=True)

    def rows(stream: str) -> list[dict[str, Any]]:
        path = out / f"{stream}.csv"
        if not path.exists():
            return []
        with path.open(newline="", encoding="utf-8") as handle:
            return [
                {k: (v if v != "" else None) for k, v in row.items()}
                for row in csv.DictReader(handle)
            ]

    config = {"output_path": str(out), "file_naming_scheme": "{stream_name}.csv"}
    return config, Loaded(rows, lambda stream: None)


LOADERS = {
    "target-jsonl": jsonl_loader,
    "target-duckdb": duckdb_loader,
    "target-postgres": postgres_loader,
    "target-csv": csv_loader,
}


def by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rows keyed by id as a string, the last one winning (a reader's dedup)."""
    return {str(row["id"]): row for row in rows}


@pytest.mark.parametrize("target", list(LOADERS))
def test_real_target_gets_every_patient_once_and_only_changes_on_the_next_run(
    target: str, sandbox: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    target_config, loaded = LOADERS[target](tmp_path, request)
    with sandbox(patients=400, seed=61, behaviour="current") as server:
        config = tap_config(server.base_url, per_page=50)
        first = run_tap(config, tmp_path)
        run_target(target, target_config, first, tmp_path)
        snapshot = server.store.snapshot()

        for stream in STREAMS:
            expected = {i for i, e in snapshot.items() if STATUS_STREAM[e["status"]] == stream}
            rows = loaded.rows(stream)
            assert set(by_id(rows)) == expected, f"{target}/{stream}: patients lost or extra"
            if target != "target-csv":  # a CSV file is written whole each run
                assert len(by_id(rows)) == len(rows) or target == "target-jsonl"
            assert all(len(str(row["id"])) == 19 for row in rows), "19-digit ids intact"
        active = by_id(loaded.rows("patients"))
        null_email = [i for i in active if snapshot[i]["record"]["email"] is None]
        assert null_email, "the data has patients without an e-mail"
        assert all(active[i]["email"] is None for i in null_email), "null stays null"
        if (kind := loaded.timestamp_type("patients")) is not None:
            assert kind in TIMESTAMP_TYPES, f"updated_at landed as {kind}"

        ids = sorted((i for i in active), key=int)
        changed = {ids[0]: "first", ids[len(ids) // 2]: "middle", ids[-1]: "last"}
        for patient_id, note in changed.items():
            server.store.update_patient(patient_id, {"notes": f"changed {note}"})
        server.store.archive_patient(ids[1])
        state = last_state(first)
        second = run_tap(config, tmp_path, state=state)
        emitted = [
            json.loads(line)["record"]
            for line in second.decode().splitlines()
            if line.startswith('{"type":"RECORD"')
        ]
        bookmarks = {s: state["bookmarks"][s]["replication_key_value"] for s in STREAMS}
        moved = {r["id"] for r in emitted if r["updated_at"] not in bookmarks.values()}
        assert moved == {*changed, ids[1]}, "the incremental run carries only the changed patients"
        run_target(target, target_config, second, tmp_path)

    after = by_id(loaded.rows("patients"))
    for patient_id, note in changed.items():
        assert after[patient_id]["notes"] == f"changed {note}"
    assert ids[1] in by_id(loaded.rows("archived_patients"))
    if target == "target-csv":
        assert set(after) <= {*changed, *(r["id"] for r in emitted)}, "second file: changes only"
