"""Materialize every asset once, in this process, and print what each produced as JSON.

python -m cliniko_dagster.run_once     # from orchestration/, without a Dagster daemon
"""

from __future__ import annotations

import json
import sys

from cliniko_dagster.definitions import defs


def main() -> int:
    """Run the hourly job's selection (load, then models) once; exit 1 if a step failed."""
    result = defs.resolve_job_def("cliniko_hourly_job").execute_in_process(raise_on_error=False)
    materialized = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        rows = materialization.metadata.get("rows")
        key = "/".join(materialization.asset_key.path)
        materialized[key] = getattr(rows, "value", None)
    # The last line of stdout (dbt prints its progress before it).
    print(json.dumps({"success": result.success, "materialized": materialized}))
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
