"""One run of one contender against a fresh local Cliniko: time, memory, requests, records."""

from __future__ import annotations

import json
import math
import resource
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import requests
from accounts import KEY, ROOT, sandbox_config
from contenders import (
    USER_AGENT,
    command,
)
from limit import (
    CLINIKO_PER_MINUTE,
    Run,
)

from tap_cliniko.sandbox import SandboxServer
from tap_cliniko.sandbox.resources import NESTED

ROUTES = ("/v1/patients", "/v1/patients/archived", "/v1/patients/deleted")
VARIANTS = dict(zip(ROUTES, ("", "archived", "deleted"), strict=True))  # route -> store variant
ROUND_TRIP_SAMPLES = 5
PARENT_LISTS = {f"/v1/{nested.parent}" for nested in NESTED}
UNFILTERED = " (unfiltered list: child streams' parents)"


@dataclass
class Measured:
    wall: float
    cpu: float
    rss_mb: float
    exit_code: int
    stderr: str
    started: float  # epoch seconds, on the clock the server's log uses


def peak_rss_mb(pid: int) -> float:
    """VmHWM of a running process, in MB (0 once it has gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(args: list[str], out_path: Path) -> Measured:
    """Run a process: its wall time, CPU seconds, peak RSS (MB), exit code, stderr, start.

    Peak RSS is sampled from /proc: a forked child's ru_maxrss starts at the parent's size.
    """
    err_path = out_path.with_suffix(".err")
    peak = 0.0
    with out_path.open("wb") as out, err_path.open("wb") as err:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started_epoch = time.time()
        started = time.monotonic()
        process = subprocess.Popen(args, stdout=out, stderr=err, cwd=ROOT)
        while process.poll() is None:
            peak = max(peak, peak_rss_mb(process.pid))
            time.sleep(0.02)
        wall = time.monotonic() - started
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
    stderr = err_path.read_text(errors="replace")
    return Measured(wall, cpu, peak, process.returncode, stderr, started_epoch)


def read_output(out_path: Path, contender: str) -> tuple[Counter[str], dict[str, Any] | None]:
    """Records per stream and the last STATE of a run's stdout."""
    records: Counter[str] = Counter()
    state = None
    with out_path.open("rb") as handle:
        for line in handle:
            if contender == "dlt":
                records["patients"] += 1
            elif line.startswith((b'{"type":"RECORD"', b'{"type": "RECORD"')):
                head = line[:120]
                start = head.find(b'"stream":') + 9
                name = head[start:].lstrip(b' "').split(b'"', 1)[0]
                records[name.decode()] += 1
            elif b'"STATE"' in line[:30]:
                state = json.loads(line)["value"]
    return records, state


def pages_needed(server: SandboxServer) -> dict[str, int]:
    """ceil(rows/100) per patient route: the fewest requests a full sync can make."""
    statuses = Counter(entry["status"] for entry in server.store.snapshot().values())
    return {
        route: max(1, math.ceil(statuses[status] / 100))
        for route, status in zip(ROUTES, ("active", "archived", "deleted"), strict=True)
    }


def short_answers(server: SandboxServer) -> Counter[str]:
    """Per patient route, the answers that carried fewer rows than asked for.

    Each read of an id window ends in one (or in an empty page), so a full sync that reads no
    full page twice sends at most that many requests beyond ceil(rows/100). The server does not
    log row counts: each logged query is asked again of the unchanged store.
    """
    short: Counter[str] = Counter()
    for record in server.requests:
        if record.path not in VARIANTS or record.status != 200:
            continue
        query = parse_qs(record.query_string)
        per_page = int(query.get("per_page", ["50"])[0])
        rows, _ = server.store.page(
            VARIANTS[record.path],
            query.get("q[]", []),
            query.get("sort", [None])[0],
            int(query.get("page", ["1"])[0]),
            per_page,
            resource="patients",
        )
        if len(rows) < per_page:
            short[record.path] += 1
    return short


def stream_of(path: str) -> str:
    """The stream a request path belongs to (/v1/invoices/deleted -> invoices, ...)."""
    parts = path.removeprefix("/v1/").split("/")
    if parts[0] == "patients" and len(parts) > 1:
        return f"{parts[1]}_patients"
    if len(parts) >= 3 and parts[2] == "practitioners":
        return {"businesses": "business_practitioners"}.get(
            parts[0], f"{parts[0][:-1]}_practitioners"
        )
    return parts[0]


def stream_key(path: str, query_string: str, incremental: bool) -> str:
    """stream_of, but on an incremental run a parent collection's list read without a bookmark
    filter is counted apart: it is a child stream reading its parents, not the parent's own run.
    """
    stream = stream_of(path)
    if incremental and path in PARENT_LISTS and ">=" not in unquote(query_string):
        return stream + UNFILTERED
    return stream


_round_trips: dict[tuple[str, float], float] = {}


def round_trip(
    key: str, data_dir: Path, patients: int, collections: float, latency: float
) -> float:
    """r: the median of a few timed single requests for a page of 100 patients, at `latency`.

    Asked of a second local Cliniko on the same data without the rate limit, so that the run's
    own server starts with its whole budget. Includes the added latency and the base round trip.
    """
    if (key, latency) in _round_trips:
        return _round_trips[(key, latency)]
    config = sandbox_config(patients, collections, data_dir, latency_ms=latency)
    with SandboxServer(config) as server, requests.Session() as session:
        session.auth = (KEY, "")
        session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
        url = f"{server.base_url}/patients"
        session.get(url, params={"per_page": 100}, timeout=30).raise_for_status()  # warm-up
        samples = []
        for _ in range(ROUND_TRIP_SAMPLES):
            started = time.monotonic()
            session.get(url, params={"per_page": 100}, timeout=30).raise_for_status()
            samples.append(time.monotonic() - started)
    _round_trips[(key, latency)] = statistics.median(samples)
    return _round_trips[(key, latency)]


def logged_run(
    contender: str,
    scenario: str,
    n: int,
    latency_ms: float,
    r: float,
    *,
    wall: float,
    cpu: float,
    rss_mb: float,
    exit_code: int,
    started: float,
    records: Counter[str],
    log: list[Any],
    **details: Any,
) -> Run:
    """A Run from what one process cost and the requests its local Cliniko logged meanwhile.

    started: the process's start on the server log's clock (epoch seconds); the server notes
    each request's arrival, before its added latency, so start-up ends at the first one.
    """
    return Run(
        contender=contender,
        scenario=scenario,
        n=n,
        latency_ms=latency_ms,
        wall=wall,
        cpu=cpu,
        rss_mb=rss_mb,
        records=sum(records.values()),
        exit_code=exit_code,
        total_requests=len(log),
        throttled=sum(1 for record in log if record.status == 429),
        startup=min((record.started for record in log), default=started) - started,
        r=r,
        records_per_stream=records,
        **details,
    )


def run_once(
    contender: str,
    scenario: str,
    n: int,
    data_dir: Path,
    *,
    collections: float = 0.0,
    latency_ms: float = 0,
    state: dict[str, Any] | None = None,
    r: float = 0.0,
) -> tuple[Run, dict[str, Any] | None]:
    """One run of one contender against a fresh local Cliniko (a fresh rolling minute)."""
    rate_limited = latency_ms > 0
    limit = CLINIKO_PER_MINUTE if rate_limited else 0
    config = sandbox_config(n, collections, data_dir, latency_ms, limit)
    with SandboxServer(config) as server, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pages = pages_needed(server) if not collections else {}
        args, state_file = command(
            contender,
            server.base_url,
            work,
            rate_limited=rate_limited,
            patients_only=not collections,
            pages=pages,
        )
        if state is not None:
            state_file.write_text(json.dumps(state))
            args += ["--state", str(state_file)]
        out_path = work / "out.jsonl"
        server.requests.clear()
        measured = measure(args, out_path)
        records, new_state = read_output(out_path, contender)
        log = list(server.requests)
        short = short_answers(server) if not collections else Counter()
    routes: dict[str, set[str]] = {}
    for record in log:
        routes.setdefault(stream_of(record.path), set()).add(record.path)
    run = logged_run(
        contender,
        scenario,
        n,
        latency_ms,
        r,
        wall=measured.wall,
        cpu=measured.cpu,
        rss_mb=measured.rss_mb,
        exit_code=measured.exit_code,
        started=measured.started,
        records=records,
        log=log,
        requests=Counter(record.path for record in log),
        pages=pages,
        short=short,
        per_stream=Counter(
            stream_key(record.path, record.query_string, state is not None) for record in log
        ),
        routes_per_stream={stream: len(paths) for stream, paths in routes.items()},
        progress_lines=sum(
            1 for line in measured.stderr.splitlines() if " left" in line and "(" in line
        ),
    )
    status = "ok" if run.exit_code == 0 else f"EXIT {run.exit_code}: "
    if run.exit_code:
        status += str(measured.stderr.strip().splitlines()[-1:])
    bound = (
        f" start-up={run.startup:4.1f}s r={r * 1000:4.0f}ms T(M)={run.limit:6.1f}s"
        f" wall/(T+start-up)={run.ratio:5.2f}"
        if rate_limited
        else ""
    )
    print(
        f"  {scenario:<22} {latency_ms:>4.0f}ms {contender:<11} N={n:>7,} wall={run.wall:7.1f}s"
        f" cpu={run.cpu:6.1f}s rss={run.rss_mb:5.0f}MB records={run.records:>7,}"
        f" requests={run.total_requests:>5} 429s={run.throttled}{bound} {status}",
        flush=True,
    )
    return run, new_state
