"""Dagster assets: Meltano loads Cliniko into DuckDB, then dagster-dbt builds transform/'s models.

    pip install -r orchestration/requirements.txt
    dagster dev -m cliniko_dagster.definitions -d orchestration    # UI on http://127.0.0.1:3000

The load is `meltano run tap-cliniko target-duckdb`: the first task of the `cliniko-to-duckdb`
job, with the same state id, so Dagster, `meltano run` and `meltano schedule` share bookmarks.
dagster-meltano is not used: its 1.5.5 (2023) builds ops and jobs only (its asset loader
returns nothing) and needs dagster-shell; one asset running the CLI is enough.

With an accounts file (orchestration/accounts.yml or $CLINIKO_ACCOUNTS_FILE, see accounts.py)
the load is partitioned, one partition per account: its key, settings, schema (cliniko_<name>)
and state id suffix come from its entry; each run is tagged with the variable holding its key
(cliniko/api_key), which dagster.yaml's run queue limits to one run at a time; the models read
every account's schema. Without one, the single account of TAP_CLINIKO_API_KEY loads as before.
"""

import contextlib
import fcntl
import json
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
    AssetSelection,
    AssetSpec,
    Definitions,
    Failure,
    MaterializeResult,
    PartitionedConfig,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    StaticPartitionsDefinition,
    define_asset_job,
    multi_asset,
    schedule,
)
from dagster_dbt import (
    DbtCliResource,
    DbtProject,
    dbt_assets,
    get_asset_keys_by_output_name_for_source,
)

from cliniko_dagster.accounts import Account, AccountsError, accounts_file, dbt_vars, load_accounts

PROJECT_ROOT = Path(os.environ.get("MELTANO_PROJECT_ROOT") or Path(__file__).resolve().parents[2])
SOURCE_SCHEMA = os.environ.get("DBT_SOURCE_SCHEMA", "tap_cliniko")
SOURCE_NAME = "tap_cliniko"  # transform/models/sources.yml: one table per default-selected stream
PIPELINE = ("tap-cliniko", "target-duckdb")

ACCOUNTS_FILE = accounts_file()
ACCOUNTS: dict[str, Account] = {
    account.name: account for account in (load_accounts(ACCOUNTS_FILE) if ACCOUNTS_FILE else [])
}
ACCOUNT_PARTITIONS = StaticPartitionsDefinition(list(ACCOUNTS)) if ACCOUNTS else None
KEY_TAG = "cliniko/api_key"  # dagster.yaml: one run at a time per value (a key's budget)
# A failed account's run is retried on its own (dagster.yaml: run_retries), from its failure.
RETRY_TAGS = {"dagster/max_retries": "2", "dagster/retry_strategy": "FROM_FAILURE"}

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


@contextlib.contextmanager
def warehouse_turn(context: AssetExecutionContext, path: Path) -> Iterator[None]:
    """Hold the DuckDB file's lock: one writer at a time, as DuckDB allows one process.

    Accounts' runs start side by side, but their loads and the models take turns at one file;
    this also keeps two `meltano run`s of this checkout apart (Meltano 4.4 writes every run's
    catalog to the same .meltano/run/tap-cliniko/tap.properties.json).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            context.log.info(f"waiting for {path.name}: another run is writing it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def meltano_executable() -> str:
    """Meltano from MELTANO_BIN or PATH."""
    found = os.environ.get("MELTANO_BIN") or shutil.which("meltano")
    if not found:
        raise Failure("meltano not found: put it on PATH or set MELTANO_BIN")
    return found


def row_counts(path: Path, tables: list[str], schema: str = SOURCE_SCHEMA) -> dict[str, int]:
    """Rows per loaded table (0 for a stream that brought none and so has no table)."""
    import duckdb  # dbt-duckdb's dependency: already in this environment

    counts = {}
    with duckdb.connect(str(path), read_only=True) as db:
        for table in tables:
            try:
                found = db.execute(f"SELECT count(*) FROM {schema}.{table}").fetchall()
            except duckdb.CatalogException:
                found = [(0,)]
            counts[table] = int(found[0][0])
    return counts


@dbt_assets(manifest=dbt_project.manifest_path)
def cliniko_models(context: AssetExecutionContext, dbt: DbtCliResource) -> Iterator[Any]:
    """transform/'s models and their tests (`dbt build`), over every account's tables."""
    accounts = ["--vars", json.dumps(dbt_vars(list(ACCOUNTS.values())))] if ACCOUNTS else []
    with warehouse_turn(context, warehouse_path()):
        yield from dbt.cli(["build", *accounts], context=context).stream()


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
    partitions_def=ACCOUNT_PARTITIONS,
)
def cliniko_tables(context: AssetExecutionContext) -> Iterator[MaterializeResult[Any]]:
    """Load every default-selected Cliniko stream into DuckDB with Meltano (one account's)."""
    env = {**os.environ, "MELTANO_PROJECT_ROOT": str(PROJECT_ROOT)}
    env.setdefault("TARGET_DUCKDB_FILEPATH", str(warehouse_path()))
    schema = SOURCE_SCHEMA
    if ACCOUNTS:
        account = ACCOUNTS[context.partition_key]
        try:
            env.update(account.meltano_env(os.environ))
        except AccountsError as exc:
            raise Failure(str(exc)) from None
        schema = account.schema
    with warehouse_turn(context, Path(env["TARGET_DUCKDB_FILEPATH"])):
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
    counts = row_counts(Path(env["TARGET_DUCKDB_FILEPATH"]), list(SOURCE_TABLES), schema)
    for table, rows in counts.items():
        yield MaterializeResult(asset_key=SOURCE_TABLES[table], metadata={"rows": rows})


def account_tags(name: str) -> dict[str, str]:
    """A run of one account: its key's concurrency tag and its retries."""
    return {KEY_TAG: ACCOUNTS[name].api_key_env, **RETRY_TAGS}


RESOURCES = {"dbt": DbtCliResource(project_dir=dbt_project, target="duckdb")}

if ACCOUNT_PARTITIONS is None:
    everything = define_asset_job("cliniko_hourly_job", selection="*")
    defs = Definitions(
        assets=[cliniko_tables, cliniko_models],
        jobs=[everything],
        schedules=[ScheduleDefinition(job=everything, cron_schedule="0 * * * *")],
        resources=RESOURCES,
    )
else:
    # A partitioned load and unpartitioned models cannot share a run: two jobs, two schedules.
    accounts_job = define_asset_job(
        "cliniko_accounts_job",
        selection=AssetSelection.assets(cliniko_tables),
        partitions_def=ACCOUNT_PARTITIONS,
        config=PartitionedConfig(
            ACCOUNT_PARTITIONS,
            run_config_for_partition_key_fn=lambda _key: {},
            tags_for_partition_key_fn=account_tags,
        ),
    )
    models_job = define_asset_job(
        "cliniko_models_job", selection=AssetSelection.assets(cliniko_models)
    )

    @schedule(job=accounts_job, cron_schedule="0 * * * *")
    def every_account_hourly(context: ScheduleEvaluationContext) -> Iterator[RunRequest]:
        """One run per account on the hour; each fails, retries and queues on its own."""
        tick = (
            context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else ""
        )
        for name in ACCOUNTS:
            yield RunRequest(run_key=f"{name}:{tick}", partition_key=name, tags=account_tags(name))

    defs = Definitions(
        assets=[cliniko_tables, cliniko_models],
        jobs=[accounts_job, models_job],
        schedules=[
            every_account_hourly,
            # The models over whatever each account last loaded (a failed one's previous rows).
            ScheduleDefinition(name="models_hourly", job=models_job, cron_schedule="30 * * * *"),
        ],
        resources=RESOURCES,
    )
