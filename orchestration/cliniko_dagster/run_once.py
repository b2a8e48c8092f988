"""Materialize every asset once, in this process, and print what each produced as JSON.

python -m cliniko_dagster.run_once     # from orchestration/, without a Dagster daemon

With an accounts file, every account's partition is loaded by its own run (multiprocess
executor, $DAGSTER_HOME's instance), accounts with different keys side by side and runs of one
key one after another, as dagster.yaml's queue would; then the models over all of them.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dagster import DagsterInstance, JobDefinition, execute_job, reconstructable

from cliniko_dagster.definitions import ACCOUNTS, defs


def materialized(result: Any) -> dict[str, Any]:
    """Each asset a run materialized, with its rows (None for a dbt model)."""
    found = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        rows = materialization.metadata.get("rows")
        found["/".join(materialization.asset_key.path)] = getattr(rows, "value", None)
    return found


def failures(result: Any) -> list[str]:
    """The first line of each failed step's error (a run that failed before its steps: its own)."""
    found = []
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        found.append(f"{event.step_key}: {error.message.strip().splitlines()[0] if error else '?'}")
    if not found and not result.success:
        for event in result.all_events:
            if event.is_run_failure:
                found.append(event.message or event.event_type_value)
    return found


def accounts_job() -> JobDefinition:
    """The partitioned load, reconstructable in the executor's subprocesses."""
    return defs.resolve_job_def("cliniko_accounts_job")


def run_accounts(instance: DagsterInstance) -> dict[str, Any]:
    """One run per account; those sharing a key in turn, the others in parallel."""
    job = reconstructable(accounts_job)
    by_key: dict[str, list[str]] = defaultdict(list)
    for account in ACCOUNTS.values():
        by_key[account.api_key_env].append(account.name)

    def run_in_turn(names: list[str]) -> dict[str, Any]:
        runs = {}
        for name in names:
            tags = accounts_job().get_tags_for_partition_key(name, None)
            with execute_job(job, instance, tags=tags, raise_on_error=False) as result:
                runs[name] = {
                    "success": result.success,
                    "materialized": materialized(result),
                    "errors": failures(result),
                }
        return runs

    accounts: dict[str, Any] = {}
    with ThreadPoolExecutor(max_workers=len(by_key)) as pool:
        for runs in pool.map(run_in_turn, by_key.values()):
            accounts.update(runs)
    return accounts


def main() -> int:
    """Run the load (each account's, if any) and the models once; exit 1 if a step failed."""
    if not ACCOUNTS:
        result = defs.resolve_job_def("cliniko_hourly_job").execute_in_process(raise_on_error=False)
        # The last line of stdout (dbt prints its progress before it).
        print(json.dumps({"success": result.success, "materialized": materialized(result)}))
        return 0 if result.success else 1
    instance = DagsterInstance.get()
    accounts = run_accounts(instance)
    models = defs.resolve_job_def("cliniko_models_job").execute_in_process(
        instance=instance, raise_on_error=False
    )
    success = models.success and all(run["success"] for run in accounts.values())
    summary = {
        "success": success,
        "accounts": accounts,
        "models": {"success": models.success, "materialized": materialized(models)},
    }
    print(json.dumps(summary))
    return 0 if success else 1


if __name__ == "__main__":
    sys.exit(main())
