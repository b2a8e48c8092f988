"""The Meltano jobs end to end: local Cliniko -> loader -> dbt models and tests, run twice.

Meltano runs from the project root with its plugins in .venv-stack/ and a throwaway system
database per test, so the project's own .meltano/ and transform/ are never written.
"""

from __future__ import annotations

import json
import re
import shlex
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tap_cliniko.sandbox import SandboxServer
from tests.e2e.conftest import ROOT, Meltano, Postgres, prerequisite
from tests.e2e.test_targets import change_patients

PATIENTS = 300
# What `dbt build` must have run and passed (a missing test would fail silently otherwise).
DBT_TESTS = {
    "unique_patients_current_id",
    "not_null_patients_current_id",
    "not_null_patients_current_status",
    "accepted_values_patients_current_status__active__archived__deleted",
    "deleted_patients_have_deleted_at",
    "archived_patients_have_archived_at",
}
TESTED_BLOCK = re.compile(r"<!-- tested by tests/e2e/test_stack.py -->\s*```bash\n(.*?)```", re.S)


def server_statuses(server: SandboxServer) -> dict[str, str]:
    """Each patient's status on the local Cliniko: active, archived or deleted."""
    return {patient_id: entry["status"] for patient_id, entry in server.store.snapshot().items()}


def dbt_results(meltano: Meltano) -> dict[str, str]:
    """The status of every node of the last dbt invocation, by name (run_results.json)."""
    path = Path(meltano.env["DBT_TARGET_PATH"]) / "run_results.json"
    results = json.loads(path.read_text())["results"]
    return {r["unique_id"].split(".")[2]: r["status"] for r in results}


def check_dbt_build(meltano: Meltano) -> None:
    """The model was built and every data test ran and passed."""
    results = dbt_results(meltano)
    assert results.get("patients_current") == "success", results
    assert set(results) >= DBT_TESTS, f"tests that did not run: {DBT_TESTS - set(results)}"
    assert {results[name] for name in DBT_TESTS} == {"pass"}, results


def duckdb_statuses(path: Path) -> list[tuple[str, str, bool]]:
    """(id, status, is_deleted) of every row of analytics.patients_current in a DuckDB file."""
    duckdb = prerequisite("duckdb")
    with duckdb.connect(str(path), read_only=True) as db:
        rows = db.sql("SELECT id, status, is_deleted FROM analytics.patients_current").fetchall()
    return [(str(i), str(s), bool(d)) for i, s, d in rows]


def check_current(rows: list[tuple[str, str, bool]], server: SandboxServer) -> None:
    """One row per patient the server holds, each with the server's status; deleted flagged."""
    ids = [row[0] for row in rows]
    assert len(ids) == len(set(ids)), "patients_current has a patient twice"
    found = {patient_id: status for patient_id, status, _ in rows}
    expected = server_statuses(server)
    wrong = {i: (found.get(i), s) for i, s in expected.items() if found.get(i) != s}
    assert not wrong, f"(model, server) status differs for {len(wrong)}: {list(wrong.items())[:5]}"
    assert set(found) == set(expected), "patients_current has patients the server does not"
    assert all(deleted == (status == "deleted") for _, status, deleted in rows)
    assert {"active", "archived", "deleted"} <= set(found.values()), "data lacks a status"


def readme_commands() -> list[list[str]]:
    """The `meltano ...` lines of README's block marked as tested here, as argument lists."""
    match = TESTED_BLOCK.search((ROOT / "README.md").read_text())
    assert match, "README lost its block of Meltano job commands"
    lines = [line.split("#")[0].strip() for line in match.group(1).splitlines()]
    return [shlex.split(line) for line in lines if line]


def test_readme_job_commands_load_model_and_schedule(
    meltano: Meltano, sandbox: Callable[..., Any], tmp_path: Path
) -> None:
    """README's commands, in order: the job twice (full, then hourly incremental), dbt tests."""
    commands = readme_commands()
    assert ["meltano", "run", "cliniko-to-duckdb"] in commands
    assert ["meltano", "schedule", "run", "cliniko-to-duckdb-hourly"] in commands
    warehouse = tmp_path / "cliniko.duckdb"
    # Archiving that leaves updated_at alone is the hard case for "latest record" (see the model).
    with sandbox(patients=PATIENTS, seed=81, archive_touches_updated_at=False) as server:
        meltano.env.update(
            TAP_CLINIKO_BASE_URL=server.base_url,
            TAP_CLINIKO_API_KEY=server.config.api_key,
            TARGET_DUCKDB_FILEPATH=str(warehouse),
            DBT_DUCKDB_PATH=str(warehouse),
        )
        runs = 0
        for command in commands:
            assert command[0] == "meltano", f"README block holds a non-Meltano line: {command}"
            if command[1:2] == ["run"] or command[1:3] == ["schedule", "run"]:
                if runs == 1:
                    change_patients(server)  # a clinic's day between the two runs
                runs += 1
            out = meltano(*command[1:])
            if command[1:3] == ["schedule", "list"]:
                listed = json.loads(meltano("schedule", "list", "--format=json"))
                schedules = {s["name"]: s for s in listed["schedules"]["job"]}
                hourly = schedules["cliniko-to-duckdb-hourly"]
                assert hourly["interval"] == "@hourly", out
                assert hourly["job"]["name"] == "cliniko-to-duckdb", out
            if "run" in command:
                check_dbt_build(meltano)
                check_current(duckdb_statuses(warehouse), server)
        assert runs == 2, "README should show a full run and an incremental one"
        state = json.loads(meltano("state", "get", "local:tap-cliniko-to-target-duckdb"))
        assert {"patients", "archived_patients", "deleted_patients"} <= set(
            state["singer_state"]["bookmarks"]
        )


def test_postgres_job_builds_the_same_models(
    meltano: Meltano, sandbox: Callable[..., Any], postgres: Postgres
) -> None:
    """`meltano run cliniko-to-postgres`: target-postgres then dbt-postgres on the same schema."""
    raw, models = f"raw_{uuid.uuid4().hex[:10]}", f"analytics_{uuid.uuid4().hex[:10]}"
    with sandbox(patients=PATIENTS, seed=82) as server:
        meltano.env.update(
            TAP_CLINIKO_BASE_URL=server.base_url,
            TAP_CLINIKO_API_KEY=server.config.api_key,
            TARGET_POSTGRES_SQLALCHEMY_URL=postgres.uri,
            TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA=raw,
            DBT_POSTGRES_SOURCE_SCHEMA=raw,
            DBT_POSTGRES_TARGET_SCHEMA=models,
            **{f"DBT_POSTGRES_{k.upper()}": v for k, v in postgres.settings.items()},
        )

        def statuses() -> list[tuple[str, str, bool]]:
            lines = postgres.rows(f"SELECT id, status, is_deleted FROM {models}.patients_current")
            return [(i, s, d == "t") for i, s, d in (line.split("|") for line in lines)]

        meltano("run", "cliniko-to-postgres")
        check_dbt_build(meltano)
        check_current(statuses(), server)
        change_patients(server)
        meltano("run", "cliniko-to-postgres")
        check_dbt_build(meltano)
        check_current(statuses(), server)


def test_meltano_config_test_checks_the_connection(
    meltano: Meltano, sandbox: Callable[..., Any]
) -> None:
    """README's `meltano config test tap-cliniko`: valid with the key, one clear 401 without."""
    with sandbox(patients=20, seed=83) as server:
        meltano.env.update(
            TAP_CLINIKO_BASE_URL=server.base_url, TAP_CLINIKO_API_KEY=server.config.api_key
        )
        assert "Plugin configuration is valid" in meltano(
            "--environment=local", "config", "test", "tap-cliniko"
        )
        meltano.env["TAP_CLINIKO_API_KEY"] = "wrong0key0value-au1"
        with pytest.raises(AssertionError, match=r"HTTP 401 .* Cliniko refused the API key"):
            meltano("--environment=local", "config", "test", "tap-cliniko")
