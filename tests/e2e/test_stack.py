"""The Meltano jobs end to end: local Cliniko -> loader -> dbt models and tests, run twice.

Meltano runs from the project root with its plugins in .venv-stack/ and a throwaway system
database per test, so the project's own .meltano/ and transform/ are never written.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from scripts.generate_models import full_table, modelled
from tap_cliniko.resources import COLLECTIONS, Collection
from tap_cliniko.sandbox import SandboxServer
from tests.e2e.conftest import ROOT, Meltano, Postgres, prerequisite
from tests.e2e.test_targets import change_patients

PATIENTS = 300
MODELLED = [c for c in COLLECTIONS if modelled(c)]
INCREMENTAL = [c for c in MODELLED if not full_table(c)]
FULL_TABLE = [c for c in MODELLED if full_table(c)]
MARTS = {"appointments", "invoices_with_totals"}
MODELS = {"patients_current", *(f"{c.name}_current" for c in MODELLED), *MARTS}
KEYED_BY_ID = MODELS - {f"{c.name}_current" for c in MODELLED if c.key != ("id",)}
# What `dbt build` must have run and passed (a missing test would fail silently otherwise).
DBT_TESTS = {
    *(f"unique_in_account_{model}_id" for model in KEYED_BY_ID),
    *(f"not_null_{model}_id" for model in KEYED_BY_ID),
    *(f"unique_{c.name}_current_key" for c in MODELLED if c.key != ("id",)),
    *(f"not_null_{c.name}_current_{column}" for c in MODELLED for column in c.key),
    *(
        f"relationships_in_account_{c.name}_current_{c.parent_key}__id__ref_{c.parent}_current_"
        for c in MODELLED
        if c.parent
    ),
    "invoice_items_belong_to_invoices",
    "relationships_in_account_appointments_practitioner_id__id__ref_practitioners_current_",
    "relationships_in_account_appointments_appointment_type_id__id__ref_appointment_types_current_",
    "relationships_in_account_appointments_patient_id__id__ref_patients_current_",
    "relationships_in_account_appointments_business_id__id__ref_businesses_current_",
    "relationships_in_account_invoices_with_totals_practitioner_id__id__ref_practitioners_current_",
    "relationships_in_account_invoices_with_totals_patient_id__id__ref_patients_current_",
    "relationships_in_account_invoices_with_totals_business_id__id__ref_businesses_current_",
    "unique_in_account_patients_current_id",
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
    """Every model was built, and every data test ran and passed (a warning is no pass)."""
    results = dbt_results(meltano)
    assert {results.get(model) for model in MODELS} == {"success"}, results
    assert set(results) >= DBT_TESTS, f"tests that did not run: {DBT_TESTS - set(results)}"
    failed = {n: s for n, s in results.items() if n not in MODELS and s != "pass"}
    assert not failed, failed


Query = Callable[[str], list[tuple[str, ...]]]


def duckdb_query(path: Path) -> Query:
    """Run SQL on a DuckDB file, every value as text (as psql prints it)."""
    duckdb = prerequisite("duckdb")

    def query(sql: str) -> list[tuple[str, ...]]:
        with duckdb.connect(str(path), read_only=True) as db:
            rows = db.sql(sql).fetchall()
        return [tuple("" if v is None else str(v) for v in row) for row in rows]

    return query


def postgres_query(postgres: Postgres) -> Query:
    """Run SQL on the test's PostgreSQL, every value as text."""
    return lambda sql: [tuple(line.split("|")) for line in postgres.rows(sql)]


def link_id(record: dict[str, Any], field: str) -> str:
    """The id a record's link field points at (`{"links": {"self": ".../practitioners/7"}}`)."""
    return str((record.get(field) or {}).get("links", {}).get("self", "")).rsplit("/", 1)[-1]


def check_collections(query: Query, schema: str, server: SandboxServer) -> None:
    """Each current model holds every row the server holds, once, with the server's status."""
    for collection in INCREMENTAL:
        rows = query(f"SELECT id, status FROM {schema}.{collection.name}_current")
        found = {row[0]: row[1] for row in rows}
        assert len(found) == len(rows), f"{collection.name}_current has an id twice"
        expected = {
            i: e["status"]
            for i, e in server.store.snapshot(collection.name).items()
            # Without a list of deleted rows, Cliniko's API shows a deleted row nowhere.
            if collection.deleted_route or e["status"] != "deleted"
        }
        wrong = {i: (found.get(i), expected.get(i)) for i in {*expected, *found}}
        wrong = {i: pair for i, pair in wrong.items() if pair[0] != pair[1]}
        assert not wrong, f"{collection.name}: (model, server) differ: {list(wrong.items())[:5]}"


def full_table_rows(server: SandboxServer, collection: Collection) -> dict[str, str]:
    """What a full read of a full-table or child collection brings: status by key ('a:b')."""
    if collection.parent:  # practitioners working at a business, offering a type
        member_of = f"{collection.parent_key}s"  # business_ids, appointment_type_ids
        rows = {}
        for practitioner_id in server.store.snapshot("practitioners"):
            practitioner = server.store.get(practitioner_id, "practitioners") or {}
            for parent_id in practitioner.get(member_of) or []:
                if server.store.get_live(parent_id, collection.parent):
                    status = "active" if practitioner.get("active") else "inactive"
                    rows[f"{parent_id}:{practitioner_id}"] = status
        return rows
    rows = {}
    for key, entry in server.store.snapshot(collection.name).items():
        active = entry["record"].get("active", True)  # users: the active flag
        rows[key] = "active" if active else "inactive"
    return rows


def check_full_tables(
    query: Query, schema: str, server: SandboxServer, deleted: dict[str, set[str]] | None = None
) -> None:
    """Each full-table model holds the server's rows once, plus the `deleted` ones, flagged."""
    for collection in FULL_TABLE:
        columns = " || ':' || ".join(collection.key)
        rows = query(
            f"SELECT {columns}, status, is_deleted FROM {schema}.{collection.name}_current"
        )
        found = {row[0]: row[1] for row in rows}
        assert len(found) == len(rows), f"{collection.name}_current has a key twice"
        assert all((s == "deleted") == (d in ("True", "t")) for _, s, d in rows), collection.name
        expected = full_table_rows(server, collection)
        expected.update(dict.fromkeys((deleted or {}).get(collection.name, ()), "deleted"))
        wrong = {k: (found.get(k), expected.get(k)) for k in {*expected, *found}}
        wrong = {k: pair for k, pair in wrong.items() if pair[0] != pair[1]}
        assert not wrong, f"{collection.name}: (model, server) differ: {list(wrong.items())[:5]}"
        assert expected, f"the local Cliniko holds no {collection.name} to check"


def delete_full_table_rows(server: SandboxServer) -> dict[str, set[str]]:
    """Remove a tax and a concession price from the server, as Cliniko does: without a trace."""
    deleted = {}
    for name in ("taxes", "concession_prices"):
        row_id = min(server.store.snapshot(name), key=int)
        server.store.delete(name, row_id)
        assert server.store.get(row_id, name) is None, f"{name} {row_id} left a trace"
        deleted[name] = {row_id}
    return deleted


def check_marts(query: Query, schema: str, server: SandboxServer) -> None:
    """Appointments per practitioner and invoice item totals, as the server counts them."""
    expected: dict[tuple[str, str], int] = {}
    for entry in server.store.snapshot("individual_appointments").values():
        if entry["status"] != "deleted":  # Cliniko's deleted list has no practitioner
            key = (link_id(entry["record"], "practitioner"), entry["status"])
            expected[key] = expected.get(key, 0) + 1
    rows = query(
        f"SELECT practitioner_id, status, count(*), count(practitioner_name)"
        f" FROM {schema}.appointments WHERE NOT is_deleted GROUP BY practitioner_id, status"
    )
    assert {(p, s): int(n) for p, s, n, _ in rows} == expected
    assert all(n == named for _, _, n, named in rows), "an appointment lacks a practitioner name"
    totals: dict[str, Decimal] = {}
    counts: dict[str, int] = {}
    for entry in server.store.snapshot("invoice_items").values():
        if entry["status"] != "deleted":
            invoice = link_id(entry["record"], "invoice")
            amount = Decimal(str(entry["record"]["total_including_tax"]))
            totals[invoice] = totals.get(invoice, Decimal(0)) + amount
            counts[invoice] = counts.get(invoice, 0) + 1
    rows = query(f"SELECT id, item_count, items_total FROM {schema}.invoices_with_totals")
    assert len(rows) == len(server.store.snapshot("invoices"))
    found = {i: (int(n), Decimal(t)) for i, n, t in rows if int(n)}
    assert found == {i: (counts[i], totals[i].quantize(Decimal("0.01"))) for i in counts}
    assert sum(t for _, t in found.values()) > 0, "the invoices hold no money to check"


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


def append_stale_versions(path: Path, table: str) -> None:
    """Turn a loaded table into what an appending loader leaves: older versions beside each row.

    Each row gains a version a day older without its lifecycle dates, and a copy with the
    same dates from an earlier batch; both say notes = 'stale'. target-duckdb's primary key
    would refuse them, so the table is first copied without it.
    """
    duckdb = prerequisite("duckdb")
    name = f"tap_cliniko.{table}"
    with duckdb.connect(str(path)) as db:
        db.execute(f"CREATE TABLE tap_cliniko.appended AS SELECT * FROM {name}")
        db.execute(f"DROP TABLE {name}")
        db.execute(f"ALTER TABLE tap_cliniko.appended RENAME TO {table}")
        db.execute(
            f"INSERT INTO {name} SELECT * REPLACE (updated_at - INTERVAL 1 DAY AS updated_at,"
            " NULL AS archived_at, NULL AS cancelled_at, NULL AS deleted_at, 'stale' AS notes)"
            f" FROM {name}"
        )
        db.execute(
            f"INSERT INTO {name} SELECT * REPLACE (_sdc_batched_at - INTERVAL 1 HOUR"
            f" AS _sdc_batched_at, 'stale' AS notes) FROM {name}"
            " WHERE notes IS DISTINCT FROM 'stale'"
        )


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
                check_collections(duckdb_query(warehouse), "analytics", server)
                check_full_tables(duckdb_query(warehouse), "analytics", server)
                check_marts(duckdb_query(warehouse), "analytics", server)
        assert runs == 2, "README should show a full run and an incremental one"
        # A loader that appends versions: the models still hold the latest, once per id.
        appended = tmp_path / "appended.duckdb"
        shutil.copyfile(warehouse, appended)
        append_stale_versions(appended, "individual_appointments")
        meltano.env["DBT_DUCKDB_PATH"] = str(appended)
        meltano("invoke", "dbt-duckdb", "build", "--select", "individual_appointments_current+")
        results = dbt_results(meltano)
        assert "unique_in_account_individual_appointments_current_id" in results, results
        assert set(results.values()) <= {"success", "pass"}, results
        query = duckdb_query(appended)
        assert query(
            "SELECT count(*) FROM analytics.individual_appointments_current WHERE notes = 'stale'"
        ) == [("0",)]
        check_collections(query, "analytics", server)
        check_marts(query, "analytics", server)
        meltano.env["DBT_DUCKDB_PATH"] = str(warehouse)
        state = json.loads(meltano("state", "get", "local:tap-cliniko-to-target-duckdb"))
        # Every incremental stream keeps a bookmark (full-table child streams keep their own).
        assert set(state["singer_state"]["bookmarks"]) >= {
            "patients",
            "archived_patients",
            "deleted_patients",
            *(c.name for c in INCREMENTAL),
        }


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
        check_collections(postgres_query(postgres), models, server)
        check_full_tables(postgres_query(postgres), models, server)
        check_marts(postgres_query(postgres), models, server)
        change_patients(server)
        # target-postgres stamps rows a full read no longer brings (ACTIVATE_VERSION).
        deleted = delete_full_table_rows(server)
        meltano("run", "cliniko-to-postgres")
        check_dbt_build(meltano)
        check_current(statuses(), server)
        check_full_tables(postgres_query(postgres), models, server, deleted)


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
