"""Write transform/'s current-state models and sources for every collection in resources.py.

    python scripts/generate_models.py            # (re)write the files
    python scripts/generate_models.py --check    # exit 1 if a committed file differs

Each default-selected collection (not clinical) gets models/current/<name>_current.sql calling
the latest_record macro, and its tests in models/current/collections_current.yml: a key unique
per account and not null, accepted status values (active plus the lifecycle dates its schema has).
Full-table collections and child streams are reloaded whole on every run, so their table is the
current state once deduplicated on the key; a row gone from Cliniko is deleted where the loader
stamps it `_sdc_deleted_at` on ACTIVATE_VERSION. models/sources.yml lists every loaded table.
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
# Practitioners and users have no archived_at: an `active` flag says whether they still work.
ACTIVE_FLAG_SQL = "case when coalesce(active, false) then 'active' else 'inactive' end"
PATIENT_TABLES = (
    ("patients", "Active patients (GET /patients)."),
    ("archived_patients", "Archived patients (GET /patients/archived)."),
    ("deleted_patients", "Deleted patients (GET /patients/deleted); often only id and dates."),
)
HEADER = "# Written by scripts/generate_models.py from tap_cliniko/resources.py: do not edit.\n"


def modelled(collection: Collection) -> bool:
    """Whether a collection gets a current-state model and a source (synced by default)."""
    return not collection.clinical


def full_table(collection: Collection) -> bool:
    """Whether every run reloads the whole collection (child streams always do)."""
    return not collection.incremental or collection.parent is not None


def properties(collection: Collection) -> dict[str, object]:
    """The fields of a collection's schema."""
    schema = json.loads((ROOT / "schemas" / f"{collection.name}.json").read_text())
    found: dict[str, object] = schema["properties"]
    return found


def active_flag(collection: Collection) -> bool:
    """Whether `active` rather than lifecycle dates says a row's status."""
    fields = properties(collection)
    return "active" in fields and not any(f"{m}_at" in fields for m in MARKERS)


def statuses(collection: Collection) -> list[str]:
    """The status values the model of a collection can hold."""
    fields = properties(collection)
    found = ["active", "inactive"] if active_flag(collection) else ["active"]
    found += [m for m in MARKERS if f"{m}_at" in fields]
    if full_table(collection) and "deleted" not in found:
        found.append("deleted")  # gone from Cliniko, stamped _sdc_deleted_at by the loader
    return found


def key_sql(collection: Collection) -> str:
    """One SQL expression unique per row: the key, its columns joined with ':'."""
    return " || ':' || ".join(collection.key)


def model_sql(collection: Collection) -> str:
    """models/current/<name>_current.sql."""
    arguments = ""
    if active_flag(collection):
        arguments += f', status_sql="{ACTIVE_FLAG_SQL}"'
    if collection.key != ("id",):
        arguments += f", key={list(collection.key)}"
    if full_table(collection):
        arguments += ", loader_deletes=true"
    key = ", ".join(collection.key)
    what = "its row of the last full read" if full_table(collection) else "its latest record"
    return (
        f"-- One row per {collection.name} {key}: {what}, with its status.\n"
        f"-- Written by scripts/generate_models.py from tap_cliniko/resources.py: do not edit.\n"
        f"{{{{ latest_record('{collection.name}'{arguments}) }}}}\n"
    )


def tests_yml(collections: list[Collection]) -> str:
    """models/current/collections_current.yml: the tests of every generated model."""
    lines = [HEADER, "version: 2\n", "\n", "models:\n"]
    for collection in collections:
        values = ", ".join(statuses(collection))
        key = ", ".join(collection.key)
        lines += [
            f"  - name: {collection.name}_current\n",
            f"    description: One row per {collection.name} {key}, its latest record.\n",
        ]
        if collection.key != ("id",):  # a composite key: unique as one expression
            lines += [
                "    data_tests:\n",
                "      - unique_in_account:\n",
                f"          name: unique_{collection.name}_current_key\n",
                "          arguments:\n",
                f'            column_name: "{key_sql(collection)}"\n',
            ]
        lines.append("    columns:\n")
        if collection.key == ("id",):
            lines += ["      - name: id\n", "        data_tests: [unique_in_account, not_null]\n"]
        for column in collection.key if collection.key != ("id",) else ():
            lines += [
                f"      - name: {column}\n",
                "        data_tests:\n",
                "          - not_null\n",
            ]
            if collection.parent and column == collection.parent_key:  # a row of a read parent
                lines += [
                    "          - relationships_in_account:\n",
                    "              arguments:\n",
                    f"                to: ref('{collection.parent}_current')\n",
                    "                field: id\n",
                ]
        lines += [
            "      - name: status\n",
            "        data_tests:\n",
            "          - not_null\n",
            "          - accepted_values:\n",
            "              arguments:\n",
            f"                values: [{values}]\n",
        ]
        if "updated_at" in properties(collection) or "created_at" in properties(collection):
            lines += ["      - name: last_changed_at\n", "        data_tests: [not_null]\n"]
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
            what = "every row on every run" if full_table(collection) else "every status"
            lines += [
                f"      - name: {collection.name}\n",
                f"        description: GET {collection.path}, {what} in one table.\n",
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
