"""The demo: a local Cliniko -> `meltano run tap-cliniko target-duckdb`, twice, changes between,
then the dbt models (`meltano invoke dbt-duckdb:build`) and a few rows of patients_current.

Every default-selected stream is loaded; two questions a clinic asks are answered in SQL on the
loaded tables (appointments and did-not-arrive rate per practitioner last month, invoiced revenue
per business this year).

With TAP_CLINIKO_API_KEY set, the same pipeline runs once against that real account instead.

`--clinics N` (2 or more): a health group instead, N local Clinikos of different sizes, each
loaded into its own schema (cliniko_<name>) with its own state id suffix, the loads side by
side, then the models over all of them with an `account` column (orchestration/accounts.yml's
conventions, without Dagster).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import requests

from tap_cliniko.sandbox import SandboxConfig, SandboxServer
from tap_cliniko.sandbox.profile import ProfileError
from tap_cliniko.sandbox.profile import apply as apply_profile
from tap_cliniko.sandbox.profile import read as read_profile
from tap_cliniko.sandbox.resources import BY_NAME

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
PATIENT_STREAMS = tuple(STATUS_STREAM.values())
#: The routes of the rows other rows name; without one, transform/'s relationship tests warn.
PARENT_ROUTES = ("/patients/deleted", "/invoices/deleted", "/practitioners/inactive")
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

    def build_models(self, every_route: bool = True) -> float:
        """Build and test transform/'s models; return how long it took in seconds."""
        started = time.monotonic()
        if every_route:
            self("invoke", f"{MODELS}:build")
        else:  # the account lacks routes some relationship tests need: they warn
            self("invoke", MODELS, "build", "--vars", '{"cliniko_every_route": false}')
        return time.monotonic() - started

    def bookmarks(self) -> dict[str, str]:
        """The pipeline's replication_key_value per stream, from Meltano's state store."""
        out = self("state", "get", self.state_id, check=False).strip()
        try:
            state = json.loads(out.splitlines()[-1]) if out else {}
        except ValueError:
            state = {}
        marks = state.get("singer_state", {}).get("bookmarks", {})
        return {
            name: str(mark.get("replication_key_value", "-"))
            for name, mark in marks.items()
            if isinstance(mark, dict)
        }


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

    def streams(self) -> list[str]:
        """The tables the target made, one per stream that had rows."""
        rows = self.query(
            "SELECT table_name FROM information_schema.tables"
            f" WHERE table_schema = '{SCHEMA}' ORDER BY table_name"
        )
        return [row[0] for row in rows]

    def columns(self, stream: str) -> set[str]:
        rows = self.query(
            "SELECT column_name FROM information_schema.columns"
            f" WHERE table_schema = '{SCHEMA}' AND table_name = '{stream}'"
        )
        return {row[0] for row in rows}

    def counts(self) -> dict[str, int]:
        """Rows per stream (the target keeps the latest row per key)."""
        return {s: self.query(f"SELECT count(*) FROM {SCHEMA}.{s}")[0][0] for s in self.streams()}

    def loaded_since(self, mark: Any) -> dict[str, list[tuple[str, str]]]:
        """(id, updated_at) per stream with ids of the rows the target wrote after `mark`."""
        where = "" if mark is None else f" WHERE _sdc_batched_at > '{mark}'"
        return {
            stream: self.query(
                f"SELECT id, strftime(updated_at, '%Y-%m-%dT%H:%M:%SZ')"
                f" FROM {SCHEMA}.{stream}{where}"
            )
            for stream in self.streams()
            if {"id", "updated_at"} <= self.columns(stream)
        }

    def last_load(self) -> Any:
        """When the target last wrote a row (its own clock, so no time-zone guessing)."""
        union = " UNION ALL ".join(
            f"SELECT max(_sdc_batched_at) AS loaded FROM {SCHEMA}.{s}" for s in self.streams()
        )
        found = self.query(f"SELECT max(loaded) FROM ({union})") if union else []
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

    def dna_by_practitioner(self, start: date, end: date) -> list[tuple[Any, ...]]:
        """Appointments (none cancelled, archived or deleted) and DNA % per practitioner."""
        return self.query(
            "SELECT p.display_name, count(*) AS appointments,"
            " round(100 * avg(CASE WHEN a.did_not_arrive THEN 1 ELSE 0 END), 1) AS dna_percent"
            f" FROM {SCHEMA}.individual_appointments a"
            f" JOIN {SCHEMA}.practitioners p ON p.id = a.practitioner_id"
            " WHERE a.cancelled_at IS NULL AND a.archived_at IS NULL AND a.deleted_at IS NULL"
            f" AND a.starts_at >= TIMESTAMP '{start}' AND a.starts_at < TIMESTAMP '{end}'"
            " GROUP BY p.display_name ORDER BY appointments DESC, p.display_name"
        )

    def revenue_by_business(self, since: date) -> list[tuple[Any, ...]]:
        """Invoices (not archived or deleted) and their total per business since a date."""
        return self.query(
            "SELECT b.business_name, count(*) AS invoices,"
            " sum(CAST(i.total_amount AS DECIMAL(14, 2))) AS revenue"
            f" FROM {SCHEMA}.invoices i JOIN {SCHEMA}.businesses b ON b.id = i.business_id"
            " WHERE i.archived_at IS NULL AND i.deleted_at IS NULL"
            f" AND CAST(i.issue_date AS DATE) >= DATE '{since}'"
            " GROUP BY b.business_name ORDER BY revenue DESC"
        )


def session_for(server: SandboxServer) -> requests.Session:
    """A requests session that writes to the local Cliniko as a clinic's app would."""
    session = requests.Session()
    session.auth = (server.config.api_key, "")
    session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
    return session


def change_some_patients(server: SandboxServer) -> dict[str, set[str]]:
    """Create, update, archive and delete patients through the HTTP API, as a clinic would
    (as many as the account has: a small replay of a profile may have few)."""
    session = session_for(server)
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
    updated, archived, deleted = (len(changed[s]) for s in changed)
    created = session.post(url, json={"first_name": "Ada", "last_name": "Lovelace", "email": None})
    created.raise_for_status()
    changed["patients"].add(str(created.json()["id"]))
    print(f"   patients: 1 new, {updated} updated, {archived} archived, {deleted} deleted")
    return changed


def change_some_appointments(server: SandboxServer) -> dict[str, set[str]]:
    """Book, cancel, mark did-not-arrive and delete appointments; pay and issue invoices.
    What the account lacks (no appointments, no future ones, no open invoice) is skipped."""
    session = session_for(server)
    base = server.base_url
    store = server.store
    live = sorted(
        (
            e["record"]
            for e in store.snapshot("individual_appointments").values()
            if e["status"] == "active"
        ),
        key=lambda r: r["starts_at"],
    )
    if not live or not server.serves("/individual_appointments"):
        print("   appointments and invoices: the account has no appointments, skipped")
        return {}
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    future = [r["id"] for r in live if r["starts_at"] > now]
    past = [r["id"] for r in live if r["starts_at"] <= now and not r["did_not_arrive"]]
    template = live[-1]
    booked = session.post(
        f"{base}/individual_appointments",
        json={
            **{f"{k}_id": _link_id(template[k]) for k in LINKS},
            "starts_at": template["starts_at"],
            "notes": "Booked online.",
        },
    )
    booked.raise_for_status()
    appointments = {str(booked.json()["id"])}
    done = ["1 booked"]
    if future:
        cancelled = future.pop(0)
        session.patch(
            f"{base}/individual_appointments/{cancelled}/cancel", json={"cancellation_reason": 30}
        ).raise_for_status()
        appointments.add(cancelled)
        done.append("1 cancelled")
    if past:
        session.patch(
            f"{base}/individual_appointments/{past[-1]}", json={"did_not_arrive": True}
        ).raise_for_status()
        appointments.add(past[-1])
        done.append("1 did not arrive")
    if future:
        session.delete(f"{base}/individual_appointments/{future[0]}").raise_for_status()
        appointments.add(future[0])
        done.append("1 deleted")
    print(f"   appointments: {', '.join(done)}")
    changed = {"individual_appointments": appointments}
    if not server.serves("/invoices"):
        return changed
    open_invoices = [
        e["record"]["id"]
        for e in store.snapshot("invoices").values()
        if e["status"] == "active" and e["record"]["status"] == 10
    ]
    invoices, done = set(), []
    if open_invoices:
        session.patch(
            f"{base}/invoices/{open_invoices[0]}", json={"status": 20, "status_description": "Paid"}
        ).raise_for_status()
        invoices.add(open_invoices[0])
        done.append("1 paid")
    issued = session.post(
        f"{base}/invoices",
        json={
            "patient_id": _link_id(template["patient"]),
            "business_id": _link_id(template["business"]),
            "practitioner_id": _link_id(template["practitioner"]),
            "total_amount": "85.00",
        },
    )
    issued.raise_for_status()
    invoices.add(str(issued.json()["id"]))
    print(f"   invoices: {', '.join([*done, '1 new'])}")
    return changed | {"invoices": invoices}


LINKS = ("patient", "practitioner", "business", "appointment_type")


def _link_id(link: dict[str, Any]) -> str:
    return str(link["links"]["self"].rsplit("/", 1)[1])


def show_counts(title: str, counts: dict[str, int]) -> None:
    """Rows per stream, aligned, two columns."""
    print(f"   {title}")
    names = sorted(counts)
    half = -(-len(names) // 2)
    for left, right in zip(names[:half], [*names[half:], ""], strict=False):
        line = f"     {left:<32} {counts[left]:>7,}"
        if right:
            line += f"     {right:<32} {counts[right]:>7,}"
        print(line)


def show_bookmarks(before: dict[str, str], after: dict[str, str], streams: list[str]) -> None:
    """Each changed stream's bookmark before and after the run."""
    print("   state (bookmark per changed stream; lookback_seconds, 5 minutes by default, keeps")
    print("   it behind Cliniko's clock, so a row saved meanwhile is read again, never lost)")
    for stream in streams:
        print(f"     {stream:<24} {before.get(stream, '-'):<21} -> {after.get(stream, '-')}")


def show_models(warehouse: Warehouse, took: float, changed: set[str]) -> None:
    """patients_current per status, and the rows of the patients the clinic just changed."""
    counts = warehouse.current_by_status()
    print(f"   {MODELS_SCHEMA}.patients_current built and tested in {took:.1f}s")
    for status in ("active", "archived", "deleted"):
        print(f"     {status:<18} {counts.get(status, 0):>6,}")
    print("   the patients changed in step 4, as the model has them now")
    for patient_id, status, name, changed_at in warehouse.current_samples(changed):
        print(f"     {patient_id}  {status:<9} {name:<20} {changed_at}")


def check_models(server: SandboxServer, warehouse: Warehouse, unseen: int = 0) -> None:
    """Fail unless patients_current has every patient once, with the server's status (an
    account without /patients/deleted: the `unseen` deleted since the first run stay active,
    as last read, and those deleted before it never arrived)."""
    expected = {s: 0 for s in STATUS_STREAM}
    for entry in server.store.snapshot().values():
        expected[entry["status"]] += 1
    if not server.serves("/patients/deleted"):  # a profile's account without the route
        expected["deleted"] = 0
        expected["active"] += unseen
    found = warehouse.current_by_status()
    if {s: found.get(s, 0) for s in expected} != expected:
        raise DemoError(f"patients_current has {found}, the server {expected}")


def expected_ids(server: SandboxServer, stream: str) -> set[str] | None:
    """Ids the server holds for a stream, or None for a stream the demo does not check."""
    if stream in PATIENT_STREAMS:
        if stream == "deleted_patients" and not server.serves("/patients/deleted"):
            return set()
        return {
            i for i, e in server.store.snapshot().items() if STATUS_STREAM[e["status"]] == stream
        }
    resource = BY_NAME.get(stream)
    if resource is None or resource.computed:
        return None
    if not server.serves(f"/{stream}"):
        return set()
    # The rows a variant route holds, where the account (a profile's) has the route.
    listed = {v for v in ("deleted", "inactive") if server.serves(f"/{stream}/{v}")}
    return {
        i
        for i, e in server.store.snapshot(stream).items()
        if e["status"] not in ("deleted", "inactive")
        or (e["status"] in listed and e["status"] in resource.variants)
    }


def check_first_load(server: SandboxServer, warehouse: Warehouse) -> None:
    """Fail unless every row of the local Cliniko arrived in its stream, once."""
    loaded = warehouse.loaded_since(None)
    for stream in ("patients", "individual_appointments", "invoices", "practitioners"):
        if stream not in loaded:
            raise DemoError(f"{stream}: nothing loaded")
    for stream, rows in loaded.items():
        expected = expected_ids(server, stream)
        if expected is None:
            continue
        ids = [row[0] for row in rows]
        if set(ids) != expected or len(ids) != len(expected):
            raise DemoError(f"{stream}: {len(ids):,} rows loaded, the server has {len(expected):,}")


def explore_command(
    query: str = (
        "SELECT city, count(*) AS patients FROM tap_cliniko.patients"
        " GROUP BY city ORDER BY patients DESC, city LIMIT 5"
    ),
) -> str:
    """A query on the demo's warehouse that runs with what the demo installed."""
    python = Path(sys.executable)
    shown = rel(python) if python.is_relative_to(ROOT) else str(python)
    code = (
        f"import duckdb; duckdb.connect({json.dumps(rel(WAREHOUSE))}, read_only=True)"
        f".sql({json.dumps(query)}).show()"
    )
    return f"{shown} -c {shlex.quote(code)}"


def last_month(today: date) -> tuple[date, date]:
    """The calendar month before today's: [first day, first day of this month)."""
    first = today.replace(day=1)
    previous = date(first.year - (first.month == 1), (first.month - 2) % 12 + 1, 1)
    return previous, first


def answer_questions(warehouse: Warehouse) -> None:
    """Two questions a clinic asks, answered in SQL on the loaded tables."""
    today = datetime.now(UTC).date()
    start, end = last_month(today)
    print(f"   Appointments and did-not-arrive rate per practitioner, {start:%B %Y}:")
    for name, count, percent in warehouse.dna_by_practitioner(start, end) or [("-", 0, 0)]:
        print(f"     {name:<28} {count:>5,} appointments   {percent or 0:>5}% did not arrive")
    since = today.replace(month=1, day=1)
    print(f"   Invoiced revenue per business since {since}:")
    for name, count, revenue in warehouse.revenue_by_business(since) or [("-", 0, 0)]:
        print(f"     {name:<28} {count:>5,} invoices   {revenue or 0:>12,.2f}")


def run_local(patients: int = PATIENTS, profile: Path | None = None, scale: float = 1.0) -> None:
    """The full demo against a fresh local Cliniko (shaped like a doctor's profile if given)."""
    shutil.rmtree(DEMO, ignore_errors=True)
    DEMO.mkdir(parents=True)
    warehouse = Warehouse(WAREHOUSE)
    config = SandboxConfig(patients=patients, seed=SEED, data_dir=DEMO / "cliniko")
    if profile is not None:
        config = apply_profile(config, read_profile(profile), scale)
        patients = config.patients
        print(f"0. The account of {rel(profile)} (scale {scale:g})")
    print(f"1. Local Cliniko, a clinic of {patients:,} synthetic patients ...", end=" ", flush=True)
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

        print(f"3. meltano run {' '.join(PIPELINE)}   (first run: every default stream)")
        took = meltano.run()
        check_first_load(server, warehouse)
        show_counts(f"loaded in {took:.1f}s into {rel(WAREHOUSE)}", warehouse.counts())
        print("   checked: each stream (computed ones aside) holds every row the server has, once")
        print("   a few patients (19-digit ids, as Cliniko has them)")
        for patient_id, name, city, updated in warehouse.samples():
            print(f"     {patient_id}  {name:<20} {city:<12} {updated}")
        answer_questions(warehouse)
        before = meltano.bookmarks()
        mark = warehouse.last_load()

        print("4. A clinic's day, through the API")
        changed = change_some_patients(server) | change_some_appointments(server)
        deleted = len(changed["deleted_patients"])
        for stream, ids in changed.items():  # what the account's routes can show of them
            if (listed := expected_ids(server, stream)) is not None:
                ids &= listed

        print(f"5. meltano run {' '.join(PIPELINE)}   (second run: incremental)")
        took = meltano.run()
        second = warehouse.loaded_since(mark)
        print(f"   rows written in {took:.1f}s (changed + re-read at the bookmark's second)")
        for stream, wanted in changed.items():
            rows = second.get(stream, [])
            ids = {row[0] for row in rows}
            missing = wanted - ids
            if missing:
                raise DemoError(f"{stream}: changed rows not loaded: {sorted(missing)}")
            at_bookmark = {i for i, updated in rows if updated == before.get(stream)}
            reread = at_bookmark - wanted
            other = ids - wanted - reread
            line = f"     {stream:<24} {len(ids):>6,} = {len(wanted)} changed"
            line += f" + {len(reread)} at the bookmark"
            if other:  # a row updated in the look-back before the bookmark, or moved with them
                line += f" + {len(other)} more in the look-back (lookback_seconds)"
            print(line)
        show_bookmarks(before, meltano.bookmarks(), list(changed))

        print(f"6. meltano invoke {MODELS}:build   (transform/: models and their dbt tests)")
        every_route = all(server.serves(route) for route in PARENT_ROUTES)
        took = meltano.build_models(every_route)
        show_models(warehouse, took, {i for s in PATIENT_STREAMS for i in changed.get(s, set())})
        check_models(server, warehouse, unseen=deleted)
        print("   checked: patients_current has every patient once, with the server's status")
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
    answer_questions(warehouse)
    show_bookmarks(before, meltano.bookmarks(), sorted(written))
    print(f"3. meltano invoke {MODELS}:build   (transform/: models and their dbt tests)")
    took = meltano.build_models()
    counts = warehouse.current_by_status()
    print(f"   {MODELS_SCHEMA}.patients_current built and tested in {took:.1f}s: {counts}")
    print("   run the demo again: only rows changed since then are read.")


CLINIC_NAMES = ("north", "south", "east", "west", "central")


def run_clinics(count: int, patients: int) -> None:
    """N local clinics side by side into one warehouse, then the models over all of them."""
    if not 2 <= count <= len(CLINIC_NAMES):
        raise DemoError(f"--clinics takes 2 to {len(CLINIC_NAMES)}")
    shutil.rmtree(DEMO, ignore_errors=True)
    DEMO.mkdir(parents=True)
    warehouse = Warehouse(WAREHOUSE)
    names = CLINIC_NAMES[:count]
    with contextlib.ExitStack() as stack:
        servers = {}
        for number, name in enumerate(names):
            size = max(10, patients // (number + 1))  # different sizes, different data
            config = SandboxConfig(
                patients=size, seed=SEED + number, data_dir=DEMO / f"cliniko-{name}"
            )
            servers[name] = stack.enter_context(SandboxServer(config))
            print(f"1. Local Cliniko '{name}', {size:,} patients: {servers[name].base_url}")
        meltano = Meltano("local")
        print(f"2. meltano install tap-cliniko target-duckdb {MODELS} ...", flush=True)
        meltano("install", *PIPELINE, MODELS)

        def load(name: str) -> float:
            server = servers[name]
            clinic = Meltano(
                "local",
                {
                    "TAP_CLINIKO_BASE_URL": server.base_url,
                    "TAP_CLINIKO_API_KEY": server.config.api_key,
                    "TARGET_DUCKDB_DEFAULT_TARGET_SCHEMA": f"cliniko_{name}",
                },
            )
            started = time.monotonic()
            clinic("run", f"--state-id-suffix={name}", *PIPELINE)
            return time.monotonic() - started

        # DuckDB takes one writer (and Meltano 4.4 one run per checkout): the clinics take turns.
        print(f"3. meltano run --state-id-suffix=<clinic> {' '.join(PIPELINE)}, per clinic")
        for name in names:
            print(f"   {name:<8} loaded into cliniko_{name} in {load(name):.1f}s")
        accounts = json.dumps({"cliniko_accounts": {n: f"cliniko_{n}" for n in names}})
        print(f"4. meltano invoke {MODELS} build --vars '{accounts}'")
        meltano("invoke", MODELS, "build", "--vars", accounts)
        rows = warehouse.query(
            f"SELECT account, status, count(*) FROM {MODELS_SCHEMA}.patients_current"
            " GROUP BY ALL ORDER BY ALL"
        )
        print(f"   {MODELS_SCHEMA}.patients_current, per clinic and status:")
        for account, status, found in rows:
            print(f"     {account:<8} {status:<9} {found:>6,}")
        for name, server in servers.items():
            got = sum(n for a, _, n in rows if a == name)
            if got != len(server.store.snapshot()):
                raise DemoError(f"{name}: {got} patients modelled, the server has more or fewer")
    print(f"5. Local Clinikos stopped. Explore {rel(WAREHOUSE)}:")
    query = (
        f"SELECT account, count(*) AS appointments FROM {MODELS_SCHEMA}.appointments"
        " GROUP BY account ORDER BY account"
    )
    print(f"   {explore_command(query)}")


def main(argv: list[str] | None = None) -> int:
    """Run the demo; one line on stderr and exit 1 when a step fails."""
    parser = argparse.ArgumentParser(prog="python3 dev.py demo")
    parser.add_argument("--patients", type=int, default=PATIENTS, help="local Cliniko's size")
    parser.add_argument(
        "--profile", type=Path, help="shape the local Cliniko like this tap-cliniko-doctor profile"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="the profile's rows times this")
    parser.add_argument(
        "--clinics", type=int, default=1, help="local clinics side by side, each its own account"
    )
    args = parser.parse_args(argv)
    if args.profile is None and args.scale != 1.0:
        parser.exit(2, "demo: error: --scale scales a --profile: give the profile too\n")
    if args.profile is not None and args.clinics != 1:
        parser.exit(2, "demo: error: --profile shapes one clinic: leave out --clinics\n")
    try:
        if args.clinics != 1:
            run_clinics(args.clinics, args.patients)
        elif os.environ.get("TAP_CLINIKO_API_KEY"):
            run_real()
        else:
            run_local(args.patients, args.profile, args.scale)
    except (DemoError, ProfileError) as exc:
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
