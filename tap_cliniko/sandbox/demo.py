"""The demo: a local Cliniko -> `meltano run tap-cliniko target-duckdb`, twice, changes between,
then the dbt models (`meltano invoke dbt-duckdb:build`) and a few rows of patients_current.

With TAP_CLINIKO_API_KEY set, the same pipeline runs once against that real account instead.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tap_cliniko.sandbox import SandboxConfig, SandboxServer

ROOT = Path.cwd()
DEMO = ROOT / ".demo"
WAREHOUSE = DEMO / "cliniko.duckdb"
LOG = DEMO / "meltano.log"
# The demo's state lives in its own system database, never in the project's .meltano/, so
# a later `meltano run` of yours cannot resume from the demo's bookmarks.
STATE_DB = DEMO / "meltano.db"
SCHEMA = "tap_cliniko"  # the loaders write to the extractor's namespace, as Meltano does
PIPELINE = ("tap-cliniko", "target-duckdb")
MODELS = "dbt-duckdb"  # the utility that builds transform/ into the same DuckDB file
MODELS_SCHEMA = "analytics"
STATE_SUFFIX = "demo"  # and its own state id, should STATE_DB ever be shared
STATUS_STREAM = {
    "active": "patients",
    "archived": "archived_patients",
    "deleted": "deleted_patients",
}
STREAMS = tuple(STATUS_STREAM.values())
PATIENTS = 3000
SEED = 42
# What Meltano puts before each line it logs: "2026-01-01T00:00:00Z [error    ] tap-cliniko  ".
LOG_PREFIX = re.compile(r"^\S+Z \[\w+\s*\]\s+\S+\s+")
USER_AGENT = "tap-cliniko demo (demo@example.com)"


class DemoError(Exception):
    """A step failed; the message says which, in one line."""


@dataclass
class Meltano:
    """The project's `meltano`, run in one environment with a few extra variables."""

    environment: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def state_id(self) -> str:
        """The state id `meltano run --state-id-suffix` gives the demo pipeline."""
        return f"{self.environment}:{PIPELINE[0]}-to-{PIPELINE[1]}:{STATE_SUFFIX}"

    def __call__(self, *args: str, check: bool = True) -> str:
        """Run `meltano ARGS`, logging its output to .demo/meltano.log; return its stdout."""
        command = [meltano_executable(), f"--environment={self.environment}", *args]
        result = subprocess.run(
            command,
            cwd=ROOT,
            env={
                **os.environ,
                **warehouse_env(),
                "MELTANO_DATABASE_URI": f"sqlite:///{STATE_DB}",
                **self.env,
            },
            capture_output=True,
            text=True,
            check=False,
        )
        with LOG.open("a", encoding="utf-8") as log:
            log.write(f"$ meltano {' '.join(command[1:])}\n{result.stdout}{result.stderr}\n")
        if check and result.returncode != 0:
            reason = last_error(result.stderr)
            shown = " ".join(arg for arg in args if not arg.startswith("--"))
            raise DemoError(f"`meltano {shown}` failed{reason} (log: {rel(LOG)})")
        return result.stdout

    def run(self) -> float:
        """Run the pipeline once; return how long it took in seconds."""
        started = time.monotonic()
        self("run", f"--state-id-suffix={STATE_SUFFIX}", *PIPELINE)
        return time.monotonic() - started

    def build_models(self) -> float:
        """Build and test transform/'s models; return how long it took in seconds."""
        started = time.monotonic()
        self("invoke", f"{MODELS}:build")
        return time.monotonic() - started

    def bookmarks(self) -> dict[str, str]:
        """The pipeline's replication_key_value per stream, from Meltano's state store."""
        out = self("state", "get", self.state_id, check=False).strip()
        try:
            state = json.loads(out.splitlines()[-1]) if out else {}
        except ValueError:
            state = {}
        marks = state.get("singer_state", {}).get("bookmarks", {})
        return {name: marks.get(name, {}).get("replication_key_value", "-") for name in STREAMS}


def warehouse_env() -> dict[str, str]:
    """Point the loader and dbt at the demo's DuckDB file; dbt's own files go to .demo/ too."""
    return {
        "TARGET_DUCKDB_FILEPATH": str(WAREHOUSE),
        "DBT_DUCKDB_PATH": str(WAREHOUSE),
        "DBT_TARGET_PATH": str(DEMO / "dbt-target"),
        "DBT_LOG_PATH": str(DEMO / "dbt-logs"),
    }


def meltano_executable() -> str:
    """Meltano from PATH (dev.py puts .venv-meltano/bin there), else the project's own."""
    found = shutil.which("meltano") or ROOT / ".venv-meltano" / "bin" / "meltano"
    if not Path(found).exists():
        raise DemoError("meltano not found: run the demo with `python3 dev.py demo`")
    return str(found)


def last_error(stderr: str) -> str:
    """The most telling error line of a failed run (a plugin's own first), as a short suffix."""
    lines = [LOG_PREFIX.sub("", line).strip(" │|") for line in stderr.splitlines()]
    for marker in ("error: ", "error"):
        for text in reversed(lines):
            if marker in text.lower() and "Block run completed" not in text:
                return ": " + text[-200:]
    return ""


def rel(path: Path) -> str:
    """A path relative to the project root, for short messages."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


class Warehouse:
    """Reads what target-duckdb loaded into .demo/cliniko.duckdb."""

    def __init__(self, path: Path) -> None:
        try:
            import duckdb
        except ImportError as exc:
            raise DemoError("the demo reads DuckDB: pip install 'tap-cliniko[dev]'") from exc
        self.duckdb = duckdb
        self.path = path

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Run one read-only query."""
        if not self.path.exists():
            return []
        try:
            with self.duckdb.connect(str(self.path), read_only=True) as db:
                return db.sql(sql).fetchall()
        except self.duckdb.CatalogException:
            return []  # the target made no table for a stream without rows
        except self.duckdb.Error as exc:
            raise DemoError(f"reading {rel(self.path)}: {exc}") from exc

    def loaded_since(self, mark: Any) -> dict[str, list[tuple[str, str]]]:
        """(id, updated_at) per stream of the rows the target wrote after `mark`."""
        where = "" if mark is None else f" WHERE _sdc_batched_at > '{mark}'"
        return {
            stream: self.query(
                f"SELECT id, strftime(updated_at, '%Y-%m-%dT%H:%M:%SZ')"
                f" FROM {SCHEMA}.{stream}{where}"
            )
            for stream in STREAMS
        }

    def last_load(self) -> Any:
        """When the target last wrote a row (its own clock, so no time-zone guessing)."""
        union = " UNION ALL ".join(f"SELECT _sdc_batched_at FROM {SCHEMA}.{s}" for s in STREAMS)
        found = self.query(f"SELECT max(_sdc_batched_at) FROM ({union})")
        return found[0][0] if found else None

    def current_by_status(self) -> dict[str, int]:
        """patients_current's rows per status."""
        rows = self.query(
            f"SELECT status, count(*) FROM {MODELS_SCHEMA}.patients_current GROUP BY 1"
        )
        return {str(status): int(count) for status, count in rows}

    def current_samples(self, ids: set[str]) -> list[tuple[Any, ...]]:
        """patients_current rows for some ids, deleted, then archived, then active."""
        listed = ", ".join(f"'{i}'" for i in sorted(ids))
        return self.query(
            "SELECT id, status, coalesce(first_name || ' ' || left(last_name, 1) || '.', '-'),"
            f" strftime(last_changed_at, '%Y-%m-%d %H:%M:%S') FROM {MODELS_SCHEMA}.patients_current"
            f" WHERE id IN ({listed}) ORDER BY status DESC, last_changed_at DESC, id"
        )

    def samples(self, count: int = 4) -> list[tuple[Any, ...]]:
        """A few active patients, newest change first."""
        return self.query(
            "SELECT id, first_name || ' ' || left(last_name, 1) || '.', coalesce(city, '-'),"
            f" strftime(updated_at, '%Y-%m-%d %H:%M') FROM {SCHEMA}.patients"
            f" ORDER BY updated_at DESC, id LIMIT {count}"
        )


def change_some_patients(server: SandboxServer) -> dict[str, set[str]]:
    """Create, update, archive and delete patients through the HTTP API, as a clinic would."""
    session = requests.Session()
    session.auth = (server.config.api_key, "")
    session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
    url = f"{server.base_url}/patients"
    active = sorted(i for i, e in server.store.snapshot().items() if e["status"] == "active")
    changed = {
        "patients": set(active[:5]),
        "archived_patients": set(active[5:8]),
        "deleted_patients": set(active[8:10]),
    }
    for patient_id in changed["patients"]:
        session.patch(f"{url}/{patient_id}", json={"notes": "Seen today."}).raise_for_status()
    for patient_id in changed["archived_patients"]:
        session.post(f"{url}/{patient_id}/archive").raise_for_status()
    for patient_id in changed["deleted_patients"]:
        session.delete(f"{url}/{patient_id}").raise_for_status()
    created = session.post(url, json={"first_name": "Ada", "last_name": "Lovelace", "email": None})
    created.raise_for_status()
    changed["patients"].add(str(created.json()["id"]))
    return changed


def show_counts(title: str, counts: dict[str, int]) -> None:
    """Rows per stream, aligned."""
    print(f"   {title}")
    for stream in STREAMS:
        print(f"     {stream:<18} {counts.get(stream, 0):>6,}")


def show_bookmarks(before: dict[str, str], after: dict[str, str]) -> None:
    """Each stream's bookmark before and after the run."""
    print("   state (bookmark per stream)")
    for stream in STREAMS:
        print(f"     {stream:<18} {before.get(stream, '-'):<21} -> {after.get(stream, '-')}")


def show_models(warehouse: Warehouse, took: float, changed: set[str]) -> None:
    """patients_current per status, and the rows of the patients the clinic just changed."""
    counts = warehouse.current_by_status()
    print(f"   {MODELS_SCHEMA}.patients_current built and tested in {took:.1f}s")
    for status in ("active", "archived", "deleted"):
        print(f"     {status:<18} {counts.get(status, 0):>6,}")
    print("   the patients changed in step 4, as the model has them now")
    for patient_id, status, name, changed_at in warehouse.current_samples(changed):
        print(f"     {patient_id}  {status:<9} {name:<20} {changed_at}")


def check_models(server: SandboxServer, warehouse: Warehouse) -> None:
    """Fail unless patients_current has every patient once, with the server's status."""
    expected = {s: 0 for s in STATUS_STREAM}
    for entry in server.store.snapshot().values():
        expected[entry["status"]] += 1
    found = warehouse.current_by_status()
    if {s: found.get(s, 0) for s in expected} != expected:
        raise DemoError(f"patients_current has {found}, the server {expected}")


def check_first_load(server: SandboxServer, loaded: dict[str, list[tuple[str, str]]]) -> None:
    """Fail unless every patient of the local Cliniko arrived in its stream, once."""
    for stream in STREAMS:
        expected = {
            i for i, e in server.store.snapshot().items() if STATUS_STREAM[e["status"]] == stream
        }
        ids = [row[0] for row in loaded[stream]]
        if set(ids) != expected or len(ids) != len(expected):
            raise DemoError(f"{stream}: {len(ids):,} rows loaded, the server has {len(expected):,}")


def explore_command() -> str:
    """A query on the demo's warehouse that runs with what the demo installed."""
    python = Path(sys.executable)
    shown = rel(python) if python.is_relative_to(ROOT) else str(python)
    query = (
        "SELECT city, count(*) AS patients FROM tap_cliniko.patients"
        " GROUP BY city ORDER BY patients DESC, city LIMIT 5"
    )
    code = (
        f"import duckdb; duckdb.connect({json.dumps(rel(WAREHOUSE))}, read_only=True)"
        f".sql({json.dumps(query)}).show()"
    )
    return f"{shown} -c {shlex.quote(code)}"


def run_local(patients: int = PATIENTS) -> None:
    """The full demo against a fresh local Cliniko."""
    shutil.rmtree(DEMO, ignore_errors=True)
    DEMO.mkdir(parents=True)
    warehouse = Warehouse(WAREHOUSE)
    config = SandboxConfig(patients=patients, seed=SEED, data_dir=DEMO / "cliniko")
    print(f"1. Local Cliniko, {patients:,} synthetic patients ...", end=" ", flush=True)
    with SandboxServer(config) as server:
        print(server.base_url)
        meltano = Meltano(
            "local",
            {"TAP_CLINIKO_BASE_URL": server.base_url, "TAP_CLINIKO_API_KEY": config.api_key},
        )
        print(f"2. meltano install tap-cliniko target-duckdb {MODELS} ...", end=" ", flush=True)
        started = time.monotonic()
        meltano("install", *PIPELINE, MODELS)
        print(f"ready ({time.monotonic() - started:.0f}s)")

        print(f"3. meltano run {' '.join(PIPELINE)}   (first run: everything)")
        took = meltano.run()
        first = warehouse.loaded_since(None)
        check_first_load(server, first)
        show_counts(
            f"loaded in {took:.1f}s into {rel(WAREHOUSE)}",
            {s: len(rows) for s, rows in first.items()},
        )
        print("   a few patients (19-digit ids, as Cliniko has them)")
        for patient_id, name, city, updated in warehouse.samples():
            print(f"     {patient_id}  {name:<20} {city:<12} {updated}")
        before = meltano.bookmarks()
        mark = warehouse.last_load()

        print("4. A clinic's day, through the API: 1 new, 5 updated, 3 archived, 2 deleted")
        changed = change_some_patients(server)

        print(f"5. meltano run {' '.join(PIPELINE)}   (second run: incremental)")
        took = meltano.run()
        second = warehouse.loaded_since(mark)
        print(f"   rows written in {took:.1f}s (changed + re-read at the bookmark's second)")
        for stream in STREAMS:
            ids = {row[0] for row in second[stream]}
            at_bookmark = {i for i, updated in second[stream] if updated == before[stream]}
            missing = changed[stream] - ids
            if missing:
                raise DemoError(f"{stream}: changed patients not loaded: {sorted(missing)}")
            reread = at_bookmark - changed[stream]
            other = ids - changed[stream] - reread
            line = f"     {stream:<18} {len(ids):>6,} = {len(changed[stream])} changed"
            line += f" + {len(reread)} at the bookmark"
            print(line + (f" + {len(other)} other" if other else ""))
        show_bookmarks(before, meltano.bookmarks())

        print(f"6. meltano invoke {MODELS}:build   (transform/: models and their dbt tests)")
        took = meltano.build_models()
        show_models(warehouse, took, {i for ids in changed.values() for i in ids})
        check_models(server, warehouse)
    print(
        f"7. Local Cliniko stopped. Explore {rel(WAREHOUSE)} (schemas {SCHEMA}, {MODELS_SCHEMA}):"
    )
    print(f"   {explore_command()}")


def run_real() -> None:
    """The same pipeline against the real account named by TAP_CLINIKO_API_KEY."""
    if not os.environ.get("TAP_CLINIKO_USER_AGENT"):
        raise DemoError("set TAP_CLINIKO_USER_AGENT too: 'Your app name (contact e-mail)'")
    DEMO.mkdir(exist_ok=True)
    warehouse = Warehouse(WAREHOUSE)
    meltano = Meltano("prod")
    print(f"1. meltano install tap-cliniko target-duckdb {MODELS} ...", end=" ", flush=True)
    meltano("install", *PIPELINE, MODELS)
    print("ready")
    before, mark = meltano.bookmarks(), warehouse.last_load()
    print(f"2. meltano run {' '.join(PIPELINE)}   (your Cliniko account)")
    took = meltano.run()
    written = {s: len(rows) for s, rows in warehouse.loaded_since(mark).items()}
    show_counts(f"rows written in {took:.1f}s into {rel(WAREHOUSE)}", written)
    show_bookmarks(before, meltano.bookmarks())
    print(f"3. meltano invoke {MODELS}:build   (transform/: models and their dbt tests)")
    took = meltano.build_models()
    counts = warehouse.current_by_status()
    print(f"   {MODELS_SCHEMA}.patients_current built and tested in {took:.1f}s: {counts}")
    print("   run the demo again: only patients changed since then are read.")


def main(argv: list[str] | None = None) -> int:
    """Run the demo; one line on stderr and exit 1 when a step fails."""
    parser = argparse.ArgumentParser(prog="python3 dev.py demo")
    parser.add_argument("--patients", type=int, default=PATIENTS, help="local Cliniko's size")
    args = parser.parse_args(argv)
    try:
        run_real() if os.environ.get("TAP_CLINIKO_API_KEY") else run_local(args.patients)
    except DemoError as exc:
        print(f"\ndemo: {exc}", file=sys.stderr)
        return 1
    except (OSError, requests.RequestException) as exc:
        print(f"\ndemo: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
