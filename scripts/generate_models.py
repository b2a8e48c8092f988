"""Write transform/'s current-state models and sources for every collection in resources.py.

    python scripts/generate_models.py            # (re)write the files
    python scripts/generate_models.py --check    # exit 1 if a committed file differs

Each default-selected incremental collection (not clinical, not a child stream) gets
models/current/<name>_current.sql calling the latest_record macro, and its tests in
models/current/collections_current.yml: unique and not-null id, accepted status values (active
plus the lifecycle dates its schema has). models/sources.yml lists every loaded table.
Full-table collections are left out: ACTIVATE_VERSION already leaves one current row per id.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tap_cliniko.resources import COLLECTIONS, Collection  # noqa: E402

TRANSFORM = ROOT / "transform"
MARKERS = ("archived", "cancelled", "deleted")  # lifecycle dates, in accepted_values order
# Practitioners have no archived_at: Cliniko lists the inactive ones on their own route.
STATUS_SQL = {
    "practitioners": "case when coalesce(active, false) then 'active' else 'inactive' end",
}
PATIENT_TABLES = (
    ("patients", "Active patients (GET /patients)."),
    ("archived_patients", "Archived patients (GET /patients/archived)."),
    ("deleted_patients", "Deleted patients (GET /patients/deleted); often only id and dates."),
)
HEADER = "# Written by scripts/generate_models.py from tap_cliniko/resources.py: do not edit.\n"


def modelled(collection: Collection) -> bool:
    """Whether a collection gets a current-state model (synced by default, read incrementally)."""
    return collection.incremental and not collection.clinical and not collection.parent


def statuses(collection: Collection) -> list[str]:
    """The status values the model of a collection can hold."""
    if collection.name in STATUS_SQL:
        return ["active", "inactive"]
    schema = json.loads((ROOT / "schemas" / f"{collection.name}.json").read_text())
    return ["active", *(m for m in MARKERS if f"{m}_at" in schema["properties"])]


def model_sql(collection: Collection) -> str:
    """models/current/<name>_current.sql."""
    status = STATUS_SQL.get(collection.name)
    argument = f', status_sql="{status}"' if status else ""
    return (
        f"-- One row per {collection.name} id: its latest record, with its status.\n"
        f"-- Written by scripts/generate_models.py from tap_cliniko/resources.py: do not edit.\n"
        f"{{{{ latest_record('{collection.name}'{argument}) }}}}\n"
    )


def tests_yml(collections: list[Collection]) -> str:
    """models/current/collections_current.yml: the tests of every generated model."""
    lines = [HEADER, "version: 2\n", "\n", "models:\n"]
    for collection in collections:
        values = ", ".join(statuses(collection))
        lines += [
            f"  - name: {collection.name}_current\n",
            f"    description: One row per {collection.name} id, its latest record.\n",
            "    columns:\n",
            "      - name: id\n",
            "        data_tests: [unique, not_null]\n",
            "      - name: status\n",
            "        data_tests:\n",
            "          - not_null\n",
            "          - accepted_values:\n",
            "              arguments:\n",
            f"                values: [{values}]\n",
            "      - name: last_changed_at\n",
            "        data_tests: [not_null]\n",
        ]
    return "".join(lines)


def sources_yml() -> str:
    """models/sources.yml: every table a loader writes, one per stream."""
    lines = [
        HEADER,
        "version: 2\n",
        "\n",
        "sources:\n",
        "  - name: tap_cliniko\n",
        "    schema: \"{{ env_var('DBT_SOURCE_SCHEMA', 'tap_cliniko') }}\"\n",
        "    tables:\n",
    ]
    for name, description in PATIENT_TABLES:
        lines += [f"      - name: {name}\n", f"        description: {description}\n"]
    for collection in COLLECTIONS:
        if modelled(collection):
            lines += [
                f"      - name: {collection.name}\n",
                f"        description: GET {collection.path}, every status in one table.\n",
            ]
    return "".join(lines)


def generate() -> dict[Path, str]:
    """Every generated file, by path under transform/."""
    collections = [c for c in COLLECTIONS if modelled(c)]
    files = {Path("models/sources.yml"): sources_yml()}
    files[Path("models/current/collections_current.yml")] = tests_yml(collections)
    for collection in collections:
        files[Path(f"models/current/{collection.name}_current.sql")] = model_sql(collection)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    files = generate()
    stale = [
        p
        for p, text in files.items()
        if not (TRANSFORM / p).is_file() or (TRANSFORM / p).read_text() != text
    ]
    if args.check:
        for path in stale:
            print(f"transform/{path} differs: run python scripts/generate_models.py")
        return 1 if stale else 0
    for path in stale:
        (TRANSFORM / path).write_text(files[path], encoding="utf-8")
    print(f"{len(files)} files, {len(stale)} written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
