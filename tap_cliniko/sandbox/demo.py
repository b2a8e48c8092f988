"""The demo: local Cliniko -> `meltano run tap-cliniko target-duckdb`, twice, with changes between.

With TAP_CLINIKO_API_KEY set, the same pipeline runs once against that real account instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import requests

from tap_cliniko.sandbox import SandboxConfig, SandboxServer

ROOT = Path.cwd()
DEMO = ROOT / ".demo"
WAREHOUSE = DEMO / "warehouse.duckdb"
JOB = "tap-cliniko-to-target-duckdb"
DEMO_KEY = "sandbox-demo-key-au1"
USER_AGENT = "tap-cliniko demo (demo@example.com)"
STREAMS = ("patients", "archived_patients", "deleted_patients")


class DemoError(Exception):
    """A step failed; the message says which and what to look at."""


def meltano(*args: str, environment: str, env: dict[str, str] | None = None) -> str:
    """Run a meltano command in this project, failing with its last log lines."""
    command = [shutil.which("meltano") or "meltano", f"--environment={environment}", *args]
    result = subprocess.run(
        command, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True
    )
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-8:])
        raise DemoError(f"`meltano {' '.join(args)}` failed:\n{tail}")
    return result.stdout


def bookmarks(environment: str) -> dict[str, str]:
    """The pipeline's bookmarks from Meltano's state store."""
    out = subprocess.run(
        [shutil.which("meltano") or "meltano", "state", "get", f"{environment}:{JOB}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout
    try:
        state = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    except ValueError:
        return {}
    marks = state.get("singer_state", {}).get("bookmarks", {})
    return {name: marks.get(name, {}).get("replication_key_value", "-") for name in STREAMS}


def loaded(batched_after: float | None = None) -> dict[str, int]:
    """Rows per stream in the warehouse (only those loaded after a moment, if given)."""
    counts = {}
    with duckdb.connect(str(WAREHOUSE), read_only=True) as db:
        for stream in STREAMS:
            where = ""
            if batched_after is not None:
                where = f" WHERE _sdc_batched_at > to_timestamp({batched_after})"
            try:
                counts[stream] = db.sql(f"SELECT count(*) FROM cliniko.{stream}{where}").fetchall()[
                    0
                ][0]
            except duckdb.CatalogException:
                counts[stream] = 0
    return counts


def samples() -> list[tuple[Any, ...]]:
    """A few loaded patients, to show what arrived."""
    with duckdb.connect(str(WAREHOUSE), read_only=True) as db:
        return db.sql(
            "SELECT id, first_name, left(last_name, 1) || '.', city, updated_at"
            " FROM cliniko.patients ORDER BY updated_at DESC LIMIT 4"
        ).fetchall()


def change_some_patients(server: SandboxServer) -> dict[str, list[str]]:
    """Update, archive and delete a few patients through the HTTP API, as a clinic would."""
    session = requests.Session()
    session.auth = (DEMO_KEY, "")
    session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
    active = sorted(i for i, e in server.store.snapshot().items() if e["status"] == "active")
    changed: dict[str, list[str]] = {
        "updated": active[:5],
        "archived": active[5:8],
        "deleted": active[8:10],
    }
    for patient_id in changed["updated"]:
        response = session.patch(
            f"{server.base_url}/patients/{patient_id}", json={"notes": "Seen today."}
        )
        response.raise_for_status()
    for patient_id in changed["archived"]:
        session.post(f"{server.base_url}/patients/{patient_id}/archive").raise_for_status()
    for patient_id in changed["deleted"]:
        session.delete(f"{server.base_url}/patients/{patient_id}").raise_for_status()
    return changed


def table(rows: dict[str, Any], title: str) -> None:
    print(f"\n  {title}")
    for name in STREAMS:
        print(f"    {name:<18} {rows.get(name, 0)}")


def run_local() -> None:
    shutil.rmtree(DEMO, ignore_errors=True)
    DEMO.mkdir(parents=True)
    print("1. Starting the local Cliniko with 3,000 synthetic patients ...")
    config = SandboxConfig(
        patients=3000, seed=42, data_dir=DEMO / "cliniko", api_key=DEMO_KEY, rate_limit_per_minute=0
    )
    with SandboxServer(config) as server:
        env = {"TAP_CLINIKO_BASE_URL": server.base_url, "TAP_CLINIKO_API_KEY": DEMO_KEY}
        print(f"   serving at {server.base_url}")
        print("2. meltano install (first time only takes a while) ...")
        meltano("install", environment="sandbox")
        subprocess.run(  # a fresh demo starts from no state; there may be none to clear
            [shutil.which("meltano") or "meltano", "state", "clear", "--force", f"sandbox:{JOB}"],
            cwd=ROOT,
            capture_output=True,
        )
        print("3. meltano run tap-cliniko target-duckdb  (full sync)")
        started = time.time()
        meltano("run", "tap-cliniko", "target-duckdb", environment="sandbox", env=env)
        print(f"   done in {time.time() - started:.1f}s into {WAREHOUSE.relative_to(ROOT)}")
        table(loaded(), "rows loaded")
        print("\n  a few patients:")
        for row in samples():
            print("    " + " | ".join(str(v) for v in row))
        before = bookmarks("sandbox")
        first_done = time.time()
        time.sleep(1.1)
        print("\n4. Changing patients through the API: 5 updated, 3 archived, 2 deleted")
        change_some_patients(server)
        print("5. meltano run tap-cliniko target-duckdb  (incremental)")
        meltano("run", "tap-cliniko", "target-duckdb", environment="sandbox", env=env)
        table(loaded(batched_after=first_done), "rows written by the incremental run")
        after = bookmarks("sandbox")
        print("\n  bookmarks (state) before -> after:")
        for name in STREAMS:
            print(f"    {name:<18} {before.get(name)} -> {after.get(name)}")
        print("\n6. Stopping the local Cliniko. Explore the data: duckdb .demo/warehouse.duckdb")


def run_real() -> None:
    if not os.environ.get("TAP_CLINIKO_USER_AGENT"):
        raise DemoError("set TAP_CLINIKO_USER_AGENT too, e.g. 'Acme reporting (data@acme.example)'")
    DEMO.mkdir(exist_ok=True)
    print("Running meltano run tap-cliniko target-duckdb against your Cliniko account ...")
    meltano("install", environment="prod")
    meltano("run", "tap-cliniko", "target-duckdb", environment="prod")
    table(loaded(), "rows loaded")
    print("\n  bookmarks:", bookmarks("prod"))


def main() -> int:
    try:
        run_real() if os.environ.get("TAP_CLINIKO_API_KEY") else run_local()
    except DemoError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    except (OSError, requests.RequestException, duckdb.Error) as exc:
        print(f"demo: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
