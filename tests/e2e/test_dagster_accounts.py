"""A health group on Dagster: three local Cliniko accounts, one partition each, one warehouse."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.conftest import ROOT, Meltano, isolated_environ, meltano_executable
from tests.e2e.test_dagster import run_in_orchestration
from tests.e2e.test_stack import duckdb_query

# Different data and sizes; south's user may not read contacts; east breaks half-way next time.
CLINICS = {
    "north": {"patients": 40, "seed": 7, "collections": 0.5},
    "south": {"patients": 25, "seed": 8, "collections": 0.5, "forbidden": ("contacts",)},
    "east": {"patients": 15, "seed": 9, "collections": 0.5},
}
FAILING = "east"
STATE_FIELDS = ("singer_state",)


def write_accounts(path: Path, servers: dict[str, Any]) -> None:
    """The accounts file: each clinic's key variable, address, and a short retry for east."""
    entries = []
    for name, server in servers.items():
        settings: dict[str, Any] = {"max_requests_per_minute": 0}
        if name == FAILING:
            settings["max_retry_seconds"] = 2
        entries.append(
            {
                "name": name,
                "api_key_env": f"CLINIKO_{name.upper()}_API_KEY",
                "base_url": server.base_url,
                "settings": settings,
            }
        )
    path.write_text(yaml.safe_dump({"accounts": entries}))


def test_every_account_loads_into_its_schema_with_its_own_state(
    dagster_python: Path,
    meltano_plugins: Path,
    sandbox: Callable[..., Any],
    tmp_path: Path,
) -> None:
    warehouse = tmp_path / "cliniko.duckdb"
    env = isolated_environ(tmp_path / "dagster")
    (tmp_path / "dagster-home").mkdir()
    with ExitStack() as stack:
        servers = {
            name: stack.enter_context(sandbox(api_key=f"{name}0key-au1", **settings))
            for name, settings in CLINICS.items()
        }
        write_accounts(tmp_path / "accounts.yml", servers)
        env.update(
            MELTANO_BIN=meltano_executable(),
            CLINIKO_ACCOUNTS_FILE=str(tmp_path / "accounts.yml"),
            TARGET_DUCKDB_FILEPATH=str(warehouse),
            DBT_DUCKDB_PATH=str(warehouse),
            DAGSTER_HOME=str(tmp_path / "dagster-home"),
            **{f"CLINIKO_{n.upper()}_API_KEY": s.config.api_key for n, s in servers.items()},
        )
        meltano = Meltano(env, tmp_path / "meltano.log")

        def state(name: str) -> dict[str, Any]:
            found = meltano("state", "get", f"local:tap-cliniko-to-target-duckdb:{name}")
            return json.loads(found)

        def run_once() -> dict[str, Any]:
            args = [dagster_python, "-m", "cliniko_dagster.run_once"]
            started = time.monotonic()
            result = run_in_orchestration(args, env, 900, codes=(0, 1))
            print(f"run_once: {time.monotonic() - started:.0f} s")
            return dict(json.loads(result.stdout.strip().splitlines()[-1]))

        first = run_once()
        assert first["success"], first
        query = duckdb_query(warehouse)
        for name, server in servers.items():
            active = sum(1 for e in server.store.snapshot().values() if e["status"] == "active")
            assert first["accounts"][name]["materialized"]["tap_cliniko/patients"] == active
            loaded = query(f"SELECT count(*) FROM cliniko_{name}.patients")
            assert loaded == [(str(active),)], name
            modelled = query(
                f"SELECT count(*) FROM analytics.patients_current WHERE account = '{name}'"
            )
            assert modelled == [(str(len(server.store.snapshot())),)], name
        # The same ids in two clinics are two rows, each with its own clinic's name.
        shared = query(
            "SELECT count(*) FROM analytics.patients_current n JOIN analytics.patients_current s"
            " ON n.id = s.id AND n.account = 'north' AND s.account = 'south'"
        )
        assert int(shared[0][0]) > 0, "the clinics share no id: the test proves less than it says"
        north_names = query("SELECT id, last_name FROM cliniko_north.patients")
        modelled_north = query(
            "SELECT id, last_name FROM analytics.patients_current"
            " WHERE account = 'north' AND status = 'active'"
        )
        assert sorted(north_names) == sorted(modelled_north)
        # south's user may not read contacts: 403, its table empty, the model has the others.
        assert {r.status for r in servers["south"].requests if r.path == "/v1/contacts"} == {403}
        assert query("SELECT count(*) FROM cliniko_south.contacts") == [("0",)]
        contacts = dict(
            query("SELECT account, count(*) FROM analytics.contacts_current GROUP BY 1")
        )
        assert set(contacts) == {"north", "east"}, contacts
        assert first["models"]["success"]
        assert "appointments" in first["models"]["materialized"]

        before = {name: state(name) for name in servers}
        for name in servers:
            assert before[name]["singer_state"]["bookmarks"]["patients"], name
        # Second run: north and south continue from their own bookmarks; east breaks half-way.
        for name, server in servers.items():
            full = [r.query_string for r in server.requests if r.path == "/v1/patients"]
            assert full and not any("updated_at" in q for q in full), f"{name}: not a full read"
            server.requests.clear()
        renamed = {}
        for name in servers:  # east's change too: a state saved by its failed run would move
            renamed[name] = next(iter(servers[name].store.snapshot()))
            servers[name].store.update_patient(renamed[name], {"last_name": f"Renamed {name}"})
        servers[FAILING].faults.fail_route_after("*", answered=3, status=500)
        second = run_once()
        assert not second["success"]
        assert second["accounts"][FAILING]["success"] is False
        for name in ("north", "south"):
            assert second["accounts"][name]["success"], name
            patients = [r for r in servers[name].requests if r.path == "/v1/patients"]
            assert patients and all("updated_at" in r.query_string for r in patients), name
            assert state(name) != before[name], f"{name}'s bookmarks did not move"
        assert state(FAILING) == before[FAILING], "the failed account's state changed"
        for name in ("north", "south"):
            patient = renamed[name]
            assert query(
                f"SELECT last_name FROM analytics.patients_current WHERE account = '{name}'"
                f" AND id = '{patient}'"
            ) == [(f"Renamed {name}",)]
        # The models still build over every account (east's rows of its last good run).
        assert second["models"]["success"], second["models"]
        modelled_east = query(
            "SELECT count(*) FROM analytics.patients_current WHERE account = 'east'"
        )
        assert modelled_east == [(str(len(servers[FAILING].store.snapshot())),)]


# The schedule's run requests, the partition tags a backfill gets, and the instance's queue.
SCHEDULE_SCRIPT = """
import json
from datetime import datetime
from dagster import DagsterInstance, build_schedule_context
from cliniko_dagster.definitions import defs
schedule = defs.resolve_schedule_def("every_account_hourly")
context = build_schedule_context(
    scheduled_execution_time=datetime(2026, 1, 1), repository_def=defs.get_repository_def()
)
job = defs.resolve_job_def("cliniko_accounts_job")
coordinator = DagsterInstance.get().run_coordinator
print(json.dumps({
    "partitions": job.partitions_def.get_partition_keys(),
    "requests": [[r.partition_key, r.tags] for r in schedule.evaluate_tick(context).run_requests],
    "backfill_tags": job.get_tags_for_partition_key("south", None),
    "coordinator": type(coordinator).__name__,
    "limits": coordinator.get_run_queue_config().tag_concurrency_limits,
}))
"""


def test_the_schedule_runs_every_account_each_alone_one_run_per_key(
    dagster_python: Path, tmp_path: Path
) -> None:
    """One run request per account, tagged with its key's variable; dagster.yaml limits each."""
    env = isolated_environ(tmp_path / "dagster")
    home = tmp_path / "dagster-home"
    home.mkdir()
    shutil.copyfile(ROOT / "orchestration" / "dagster.yaml", home / "dagster.yaml")
    example = ROOT / "orchestration" / "accounts.example.yml"
    env.update(DAGSTER_HOME=str(home), CLINIKO_ACCOUNTS_FILE=str(example))
    result = run_in_orchestration([dagster_python, "-c", SCHEDULE_SCRIPT], env)
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["partitions"] == ["north", "south"]
    keys = {"north": "CLINIKO_NORTH_API_KEY", "south": "CLINIKO_SOUTH_API_KEY"}
    assert [name for name, _ in found["requests"]] == ["north", "south"]
    for name, tags in found["requests"]:
        assert tags["cliniko/api_key"] == keys[name]
        assert tags["dagster/max_retries"] == "2"
    assert found["backfill_tags"]["cliniko/api_key"] == keys["south"]
    assert found["backfill_tags"]["dagster/partition"] == "south"
    assert found["coordinator"] == "QueuedRunCoordinator"
    assert found["limits"] == [
        {"key": "cliniko/api_key", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    ]
    dagster = dagster_python.with_name("dagster")
    validate = [dagster, "definitions", "validate", "-m", "cliniko_dagster.definitions"]
    checked = run_in_orchestration(validate, env)
    assert "All code locations passed validation" in checked.stdout + checked.stderr


# Every run of the instance: partition, key tag, status, and when it started and ended.
RUNS_SCRIPT = """
import json
from dagster import DagsterInstance
print(json.dumps([
    {
        "partition": r.dagster_run.tags.get("dagster/partition"),
        "key": r.dagster_run.tags.get("cliniko/api_key"),
        "status": r.dagster_run.status.value,
        "start": r.start_time,
        "end": r.end_time,
    }
    for r in DagsterInstance.get().get_run_records()
]))
"""


def test_the_daemon_runs_one_account_at_a_time_per_key_and_others_beside(
    dagster_python: Path,
    meltano_plugins: Path,
    sandbox: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """Two backfills of north and one of south, queued before the daemon starts: the real
    queue (orchestration/dagster.yaml) starts one north run at a time; all three load."""
    warehouse = tmp_path / "cliniko.duckdb"
    env = isolated_environ(tmp_path / "dagster")
    home = tmp_path / "dagster-home"
    home.mkdir()
    shutil.copyfile(ROOT / "orchestration" / "dagster.yaml", home / "dagster.yaml")
    clinics = {"north": 12, "south": 8}
    with ExitStack() as stack:
        daemon_log = stack.enter_context((tmp_path / "daemon.log").open("w"))
        servers = {
            name: stack.enter_context(
                sandbox(api_key=f"{name}0key-au1", patients=patients, seed=3, collections=0.2)
            )
            for name, patients in clinics.items()
        }
        write_accounts(tmp_path / "accounts.yml", servers)
        env.update(
            MELTANO_BIN=meltano_executable(),
            CLINIKO_ACCOUNTS_FILE=str(tmp_path / "accounts.yml"),
            TARGET_DUCKDB_FILEPATH=str(warehouse),
            DAGSTER_HOME=str(home),
            **{f"CLINIKO_{n.upper()}_API_KEY": s.config.api_key for n, s in servers.items()},
        )
        dagster = dagster_python.with_name("dagster")
        target = ["-m", "cliniko_dagster.definitions", "-j", "cliniko_accounts_job"]
        for partitions in ("north", "north", "south"):
            backfill = [dagster, "job", "backfill", *target, "--partitions", partitions]
            run_in_orchestration([*backfill, "--noprompt"], env)

        def runs() -> list[dict[str, Any]]:
            found = run_in_orchestration([dagster_python, "-c", RUNS_SCRIPT], env)
            return list(json.loads(found.stdout.strip().splitlines()[-1]))

        queued = runs()
        assert sorted(r["partition"] for r in queued) == ["north", "north", "south"], queued
        assert {r["status"] for r in queued} == {"QUEUED"}, "the runs started without the daemon"
        daemon = subprocess.Popen(
            [dagster_python.with_name("dagster-daemon"), "run", *target[:2]],
            cwd=ROOT / "orchestration",
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=daemon_log,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                found = runs()
                if all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in found):
                    break
                time.sleep(3)
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)
            daemon.wait(60)
    logged = (tmp_path / "daemon.log").read_text()[-3000:]
    assert [r["status"] for r in found] == ["SUCCESS"] * 3, (found, logged)
    keys = {r["partition"]: r["key"] for r in found}
    assert keys == {"north": "CLINIKO_NORTH_API_KEY", "south": "CLINIKO_SOUTH_API_KEY"}
    first, second = sorted((r["start"], r["end"]) for r in found if r["partition"] == "north")
    assert first[1] <= second[0], f"two runs of north's key at once: {first} and {second}"
    query = duckdb_query(warehouse)
    for name, server in servers.items():
        active = sum(1 for e in server.store.snapshot().values() if e["status"] == "active")
        assert query(f"SELECT count(*) FROM cliniko_{name}.patients") == [(str(active),)], name
