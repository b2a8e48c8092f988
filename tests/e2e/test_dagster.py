"""orchestration/: Dagster materializes the Meltano load and the dbt models, in one process."""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.conftest import (
    ROOT,
    isolated_environ,
    meltano_executable,
)
from tests.e2e.test_stack import (
    MODELLED,
    check_collections,
    check_current,
    check_full_tables,
    duckdb_query,
    duckdb_statuses,
)

STREAMS = ("patients", "archived_patients", "deleted_patients")
# Every table the models read: the patient streams and each modelled (default-selected) stream.
SOURCE_ASSETS = {f"tap_cliniko/{name}" for name in (*STREAMS, *(c.name for c in MODELLED))}
# The asset graph as Dagster resolves it: the load's outputs, and what the dbt models read.
GRAPH_SCRIPT = """
import json
from cliniko_dagster.definitions import cliniko_models, cliniko_tables, defs
graph = defs.resolve_asset_graph()
models = set(cliniko_models.keys)
upstream = {parent for key in models for parent in graph.get(key).parent_keys} - models
print(json.dumps({
    "load": sorted(key.to_user_string() for key in cliniko_tables.keys),
    "upstream": sorted(key.to_user_string() for key in upstream),
    "not_materializable": sorted(
        key.to_user_string() for key in upstream if not graph.get(key).is_materializable
    ),
}))
"""


def dagster_environ(tmp_path: Path) -> dict[str, str]:
    """The isolated test environment, with Dagster's home in tmp_path."""
    env = isolated_environ(tmp_path / "dagster")
    env["DAGSTER_HOME"] = str(tmp_path)
    return env


def run_in_orchestration(
    args: list[Any], env: dict[str, str], timeout: int = 600, codes: tuple[int, ...] = (0,)
) -> subprocess.CompletedProcess[str]:
    """Run a command in orchestration/; fails the test with the output's tail unless it exits
    with one of codes (0)."""
    result = subprocess.run(
        args,
        cwd=ROOT / "orchestration",
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode in codes, (result.stdout + result.stderr)[-4000:]
    return result


def test_dagster_materializes_the_load_then_the_models(
    dagster_python: Path,
    meltano_plugins: Path,
    sandbox: Callable[..., Any],
    tmp_path: Path,
) -> None:
    warehouse = tmp_path / "cliniko.duckdb"
    env = isolated_environ(tmp_path / "dagster")
    with sandbox(patients=200, seed=84) as server:
        env.update(
            MELTANO_BIN=meltano_executable(),
            TAP_CLINIKO_BASE_URL=server.base_url,
            TAP_CLINIKO_API_KEY=server.config.api_key,
            TARGET_DUCKDB_FILEPATH=str(warehouse),
            DBT_DUCKDB_PATH=str(warehouse),
            DAGSTER_HOME=str(tmp_path / "dagster-home"),
        )
        (tmp_path / "dagster-home").mkdir()
        result = run_in_orchestration([dagster_python, "-m", "cliniko_dagster.run_once"], env, 900)
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        assert summary["success"]
        snapshot = server.store.snapshot()
        for stream, status in zip(STREAMS, ("active", "archived", "deleted"), strict=True):
            expected = sum(1 for entry in snapshot.values() if entry["status"] == status)
            assert summary["materialized"][f"tap_cliniko/{stream}"] == expected, stream
        missing = SOURCE_ASSETS - set(summary["materialized"])
        assert not missing, f"the load did not materialize {sorted(missing)}"
        empty = [key for key in SOURCE_ASSETS if not summary["materialized"][key]]
        assert not empty, f"no rows arrived in {sorted(empty)}"
        assert "patients_current" in summary["materialized"], "dbt model not materialized"
        check_current(duckdb_statuses(warehouse), server)
        check_collections(duckdb_query(warehouse), "analytics", server)
        check_full_tables(duckdb_query(warehouse), "analytics", server)


def test_every_dbt_source_is_an_output_of_the_load(dagster_python: Path, tmp_path: Path) -> None:
    """Each table a dbt model reads is upstream in the asset graph, made by the Meltano load."""
    result = run_in_orchestration([dagster_python, "-c", GRAPH_SCRIPT], dagster_environ(tmp_path))
    graph = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(graph["upstream"]) == SOURCE_ASSETS, "the models read other tables than the tap's"
    assert set(graph["load"]) == SOURCE_ASSETS, "the load's outputs differ from the dbt sources"
    assert graph["not_materializable"] == [], "a dbt source has no asset that makes it"


def test_dagster_pins_dbt_as_meltano_does() -> None:
    """orchestration/requirements.txt and meltano.yml's dbt-duckdb install the same dbt."""
    project = yaml.safe_load((ROOT / "meltano.yml").read_text())
    utility = next(u for u in project["plugins"]["utilities"] if u["name"] == "dbt-duckdb")
    lines = (ROOT / "orchestration" / "requirements.txt").read_text().splitlines()
    pinned = {line.strip() for line in lines if line.startswith("dbt")}
    assert pinned == set(shlex.split(utility["pip_url"]))


def test_dagster_ui_can_load_the_code_location(dagster_python: Path, tmp_path: Path) -> None:
    """What `dagster dev -m cliniko_dagster.definitions` loads passes Dagster's own checks."""
    dagster = dagster_python.with_name("dagster")
    validate = [dagster, "definitions", "validate", "-m", "cliniko_dagster.definitions"]
    result = run_in_orchestration(validate, dagster_environ(tmp_path))
    assert "All code locations passed validation" in result.stdout + result.stderr
