"""Dagster assets: Meltano loads Cliniko into DuckDB, then dagster-dbt builds transform/'s models.

    pip install -r orchestration/requirements.txt
    dagster dev -m cliniko_dagster.definitions -d orchestration    # UI on http://127.0.0.1:3000

The load is `meltano run tap-cliniko target-duckdb`: the first task of the `cliniko-to-duckdb`
job, with the same state id, so Dagster, `meltano run` and `meltano schedule` share bookmarks.
dagster-meltano is not used: its 1.5.5 (2023) builds ops and jobs only (its asset loader
returns nothing) and needs dagster-shell; one asset running the CLI is enough.
"""

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    Definitions,
    Failure,
    MaterializeResult,
    ScheduleDefinition,
    define_asset_job,
    multi_asset,
)
from dagster_dbt import (
    DbtCliResource,
    DbtProject,
    dbt_assets,
    get_asset_keys_by_output_name_for_source,
)

PROJECT_ROOT = Path(os.environ.get("MELTANO_PROJECT_ROOT") or Path(__file__).resolve().parents[2])
SOURCE_SCHEMA = os.environ.get("DBT_SOURCE_SCHEMA", "tap_cliniko")
SOURCE_NAME = "tap_cliniko"  # transform/models/sources.yml: one table per default-selected stream
PIPELINE = ("tap-cliniko", "target-duckdb")

# This environment's dbt (requirements.txt), also when Python runs without its venv activated.
if not shutil.which("dbt"):
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])


def warehouse_path() -> Path:
    """The DuckDB file both target-duckdb and dbt-duckdb use (meltano.yml's default)."""
    configured = os.environ.get("DBT_DUCKDB_PATH")
    return Path(configured) if configured else PROJECT_ROOT / "output" / "cliniko.duckdb"


# dbt (transform/profiles.yml) and the load below read and write the same file.
os.environ.setdefault("DBT_DUCKDB_PATH", str(warehouse_path()))

dbt_project = DbtProject(
    project_dir=PROJECT_ROOT / "transform",
    target_path=Path(os.environ.get("DBT_TARGET_PATH", "target")),
    target="duckdb",
)
if dbt_project.manifest_path.exists():
    dbt_project.prepare_if_dev()
else:
    dbt_project.preparer.prepare(dbt_project)  # `dbt parse`: the models' asset graph


def meltano_executable() -> str:
    """Meltano from MELTANO_BIN or PATH."""
    found = os.environ.get("MELTANO_BIN") or shutil.which("meltano")
    if not found:
        raise Failure("meltano not found: put it on PATH or set MELTANO_BIN")
    return found


def row_counts(path: Path, tables: list[str]) -> dict[str, int]:
    """Rows per loaded table (0 for a stream that brought none and so has no table)."""
    import duckdb  # dbt-duckdb's dependency: already in this environment

    counts = {}
    with duckdb.connect(str(path), read_only=True) as db:
        for table in tables:
            try:
                found = db.execute(f"SELECT count(*) FROM {SOURCE_SCHEMA}.{table}").fetchall()
            except duckdb.CatalogException:
                found = [(0,)]
            counts[table] = int(found[0][0])
    return counts


@dbt_assets(manifest=dbt_project.manifest_path)
def cliniko_models(context: AssetExecutionContext, dbt: DbtCliResource) -> Iterator[Any]:
    """transform/'s models and their tests (`dbt build`)."""
    yield from dbt.cli(["build"], context=context).stream()


# The tables the models read, keyed as dagster-dbt keys their dbt sources: the load makes them
# all, so every model has the load upstream. sources.yml is generated from the tap's streams.
SOURCE_TABLES: dict[str, AssetKey] = {
    key.path[-1]: key
    for key in get_asset_keys_by_output_name_for_source([cliniko_models], SOURCE_NAME).values()
}


@multi_asset(
    specs=[AssetSpec(key, kinds={"meltano", "duckdb"}) for key in SOURCE_TABLES.values()],
    name="cliniko_to_duckdb",
    description="meltano run tap-cliniko target-duckdb (incremental from the stored state)",
)
def cliniko_tables(context: AssetExecutionContext) -> Iterator[MaterializeResult[Any]]:
    """Load every default-selected Cliniko stream into DuckDB with Meltano."""
    env = {**os.environ, "MELTANO_PROJECT_ROOT": str(PROJECT_ROOT)}
    env.setdefault("TARGET_DUCKDB_FILEPATH", str(warehouse_path()))
    result = subprocess.run(
        [meltano_executable(), "run", *PIPELINE],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    for line in (result.stdout + result.stderr).splitlines()[-40:]:
        context.log.info(line)
    if result.returncode != 0:
        raise Failure(f"meltano run {' '.join(PIPELINE)} exited {result.returncode}")
    counts = row_counts(Path(env["TARGET_DUCKDB_FILEPATH"]), list(SOURCE_TABLES))
    for table, rows in counts.items():
        yield MaterializeResult(asset_key=SOURCE_TABLES[table], metadata={"rows": rows})


everything = define_asset_job("cliniko_hourly_job", selection="*")

defs = Definitions(
    assets=[cliniko_tables, cliniko_models],
    jobs=[everything],
    schedules=[ScheduleDefinition(job=everything, cron_schedule="0 * * * *")],
    resources={
        "dbt": DbtCliResource(
            project_dir=dbt_project,
            target="duckdb",
        )
    },
)
