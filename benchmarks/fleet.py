"""Many accounts at once (issue 21): 20 local Cliniko accounts synced side by side.

`python3 dev.py bench --scenario accounts20` starts 20 local Cliniko accounts of different
sizes (ACCOUNTS patients each, 200 requests per rolling minute each, 300 ms added latency),
starts 20 tap processes at once on this machine (patient streams, the tap's defaults), then
does the same with 20 dlt REST clients. Each account is judged like every other run
(wall <= 1.15 x T(M) + start-up, no 429); the fleet's total wall, total CPU seconds and
peak total RSS are reported, and every account's records are counted against what its
server holds. Writes section 6 of RESULTS.md between the MARKERS, leaving the rest alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accounts import HERE, ROOT, dataset, sandbox_config
from contenders import command, dlt_python
from limit import BUDGET, CONCURRENCY, TOLERANCE, Run
from measure import logged_run, pages_needed, read_output, round_trip
from plot_targets import plot_targets
from scenarios import git_commit, machine
from sections import replace_section

from tap_cliniko.sandbox import SandboxServer

LATENCY_MS = 300
PER_MINUTE = 200
# 20 accounts from 500 to 6,000 patients, about evenly spread (65,000 patients in all).
ACCOUNTS = [int(round(500 + i * 5_500 / 19, -2)) for i in range(20)]
SAMPLE_EVERY = 0.2  # seconds between samples of the processes' RSS
RESULTS = HERE / "RESULTS.md"
FIGURES = HERE / "accounts20.json"  # the last run's figures
MARKERS = "<!-- accounts20 -->", "<!-- /accounts20 -->"
#: The oracle loop (oracle_loop.py) is a yardstick: told each list's pages, it asks for them all
#: 8 at a time from its first request and checks nothing, so no client can wait less.
CONTENDERS = ("tap c8", "dlt", "oracle c8")
NAMES = {"tap c8": "tap (`tap c8`)", "dlt": "dlt REST client", "oracle c8": "oracle loop"}
CORES = os.cpu_count() or 1


@dataclass
class Fleet:
    """One contender's 20 runs at once, and what they cost together."""

    contender: str
    runs: list[Run]
    wall: float  # from the first process start to the last exit
    cpu: float  # user + system seconds of all the processes
    peak_rss_mb: float  # the largest sum of the processes' RSS at one sample
    server_cpu: float  # CPU seconds of the benchmark's process (the 20 servers) meanwhile
    held: list[int] = field(default_factory=list)  # patients each server holds (all routes)

    @property
    def cpu_floor(self) -> float:
        """The shortest wall the CPU work allows: all of it spread over every core."""
        return (self.cpu + self.server_cpu) / CORES

    @property
    def median_ratio(self) -> float:
        return statistics.median(run.ratio for run in self.runs)

    @property
    def within(self) -> int:
        return sum(run.met for run in self.runs)

    @property
    def lost(self) -> int:
        return sum(held - run.records for held, run in zip(self.held, self.runs, strict=True))

    @property
    def complete(self) -> bool:
        return all(held == run.records for held, run in zip(self.held, self.runs, strict=True))


def rss_mb(pid: int) -> tuple[float, float]:
    """VmRSS and VmHWM of a running process, in MB (0, 0 once it has gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0, 0.0
    found = {}
    for line in status.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            found[line[:5]] = int(line.split()[1]) / 1024
    return found.get("VmRSS", 0.0), found.get("VmHWM", 0.0)


@dataclass
class Process:
    args: list[str]
    out: Path
    pid: int = 0
    started: float = 0.0  # epoch, the clock of the server's log
    started_mono: float = 0.0
    ended_mono: float = 0.0
    exit_code: int = -1
    cpu: float = 0.0
    peak_mb: float = 0.0


def run_all(processes: list[Process]) -> tuple[float, float, float, float]:
    """Start every process at once; each one's wall, CPU and peak RSS; the peak total RSS.

    A thread per process waits for it with wait4, so each exit is timed to the moment and
    each one's own rusage is kept; RSS is sampled from /proc every SAMPLE_EVERY seconds.
    """
    done = threading.Event()
    peak_total = 0.0

    def wait(process: Process) -> None:
        _, status, usage = os.wait4(process.pid, 0)
        process.ended_mono = time.monotonic()
        process.exit_code = os.waitstatus_to_exitcode(status)
        process.cpu = usage.ru_utime + usage.ru_stime

    def sample() -> None:
        nonlocal peak_total
        while not done.is_set():
            total = 0.0
            for process in processes:
                if not process.ended_mono:
                    current, high = rss_mb(process.pid)
                    total += current
                    process.peak_mb = max(process.peak_mb, high)
            peak_total = max(peak_total, total)
            done.wait(SAMPLE_EVERY)

    files = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = resource.getrusage(resource.RUSAGE_SELF)
    first = time.monotonic()
    for process in processes:
        out = process.out.open("wb")
        err = process.out.with_suffix(".err").open("wb")
        files += [out, err]
        process.started = time.time()
        process.started_mono = time.monotonic()
        # Not subprocess.Popen: its own reaping would race the wait4 threads.
        process.pid = os.posix_spawn(
            process.args[0],
            process.args,
            dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_DUP2, out.fileno(), 1),
                (os.POSIX_SPAWN_DUP2, err.fileno(), 2),
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            ],
        )
    sampler = threading.Thread(target=sample)
    sampler.start()
    waiters = [threading.Thread(target=wait, args=(p,)) for p in processes]
    for waiter in waiters:
        waiter.start()
    for waiter in waiters:
        waiter.join()
    wall = max(p.ended_mono for p in processes) - first
    done.set()
    sampler.join()
    for handle in files:
        handle.close()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    own_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    servers = own_after.ru_utime + own_after.ru_stime - own.ru_utime - own.ru_stime
    return wall, cpu, peak_total, servers


def fleet(contender: str, r: float) -> Fleet:
    """The 20 accounts' servers, fresh (a fresh rolling minute each), and one process each."""
    with contextlib.ExitStack() as stack:
        servers = []
        for patients in ACCOUNTS:
            data = stack.enter_context(dataset(patients))
            config = sandbox_config(patients, 0.0, data, LATENCY_MS, PER_MINUTE)
            servers.append(stack.enter_context(SandboxServer(config)))
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-fleet-")))
        processes = []
        for i, server in enumerate(servers):
            home = work / f"account{i:02}"
            home.mkdir()
            args, _ = command(
                contender,
                server.base_url,
                home,
                rate_limited=True,
                patients_only=True,
                pages=pages_needed(server),
            )
            processes.append(Process(args, home / "out.jsonl"))
        held = [len(server.store.snapshot()) for server in servers]
        for server in servers:
            server.requests.clear()
        wall, cpu, peak, server_cpu = run_all(processes)
        runs = []
        for patients, server, process in zip(ACCOUNTS, servers, processes, strict=True):
            records, _ = read_output(process.out, contender)
            runs.append(
                logged_run(
                    contender,
                    "accounts20",
                    patients,
                    LATENCY_MS,
                    r,
                    wall=process.ended_mono - process.started_mono,
                    cpu=process.cpu,
                    rss_mb=process.peak_mb,
                    exit_code=process.exit_code,
                    started=process.started,
                    records=records,
                    log=list(server.requests),
                )
            )
            if process.exit_code:
                tail = process.out.with_suffix(".err").read_text(errors="replace")
                print(f"  {contender} {patients:,}: exit {process.exit_code}", flush=True)
                print("   ", tail.strip().splitlines()[-1:], flush=True)
    return Fleet(contender, runs, wall, cpu, peak, server_cpu, held)


def print_fleet(result: Fleet) -> None:
    for run, held in zip(result.runs, result.held, strict=True):
        print(
            f"  {run.contender:<7} N={run.n:>6,} wall={run.wall:5.1f}s start-up={run.startup:5.1f}s"
            f" M={run.total_requests:>3} T(M)={run.limit:4.1f}s ratio={run.ratio:4.2f}"
            f" cpu={run.cpu:4.1f}s rss={run.rss_mb:4.0f}MB records={run.records:,}/{held:,}"
            f" 429s={run.throttled} {'within' if run.met else 'over'}",
            flush=True,
        )
    print(
        f"  {result.contender}: total wall {result.wall:.1f}s, CPU {result.cpu:.1f}s,"
        f" (servers {result.server_cpu:.1f}s), peak total RSS {result.peak_rss_mb:,.0f} MB,"
        f" median ratio {result.median_ratio:.2f},"
        f" {result.within}/{len(result.runs)} within {TOLERANCE}x,"
        f" {'every record' if result.complete else f'{result.lost} records missing'}",
        flush=True,
    )


def table(result: Fleet) -> list[str]:
    lines = [
        "| patients | wall s | start-up s | M | T(M) s | wall / (T(M) + start-up) |"
        " 1.15 T(M) + start-up s | CPU s | peak RSS MB | 429s | records / held | within |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run, held in zip(result.runs, result.held, strict=True):
        exit_note = "" if run.exit_code == 0 else f" (exit {run.exit_code})"
        lines.append(
            f"| {run.n:,} | {run.wall:.1f} | {run.startup:.1f} | {run.total_requests} |"
            f" {run.limit:.1f} | {run.ratio:.2f} | {run.allowed:.1f} | {run.cpu:.1f} |"
            f" {run.rss_mb:.0f} | {run.throttled} | {run.records:,} / {held:,} |"
            f" {'yes' if run.met else 'no'}{exit_note} |"
        )
    return lines


def summary(fleets: list[Fleet]) -> list[str]:
    """The fleets side by side: what each cost together and how its accounts fared."""

    def row(label: str, cell: Any) -> str:
        return f"| {label} | " + " | ".join(cell(f) for f in fleets) + " |"

    return [
        "| | " + " | ".join(NAMES[f.contender] for f in fleets) + " |",
        "|---|" + "---:|" * len(fleets),
        row("total wall s (first start to last exit)", lambda f: f"{f.wall:.1f}"),
        row("total CPU s of the 20 processes", lambda f: f"{f.cpu:.1f}"),
        row(
            "CPU s of the 20 servers meanwhile (the benchmark's process)",
            lambda f: f"{f.server_cpu:.1f}",
        ),
        row(f"(clients + servers) CPU s / {CORES} cores", lambda f: f"{f.cpu_floor:.1f}"),
        row(
            f"peak total RSS MB (sum over the 20, sampled every {SAMPLE_EVERY} s)",
            lambda f: f"{f.peak_rss_mb:,.0f}",
        ),
        row("median start-up s", lambda f: f"{statistics.median(r.startup for r in f.runs):.1f}"),
        row("median wall / (T(M) + start-up)", lambda f: f"{f.median_ratio:.2f}"),
        row(f"accounts within {TOLERANCE}x", lambda f: f"{f.within}/20"),
        row(
            "requests, 429s",
            lambda f: (
                f"{sum(r.total_requests for r in f.runs)}, {sum(r.throttled for r in f.runs)}"
            ),
        ),
        row("records lost (held - synced)", lambda f: str(f.lost)),
    ]


def section(fleets: dict[str, Fleet], figures: dict[str, Any]) -> str:
    tap, dlt, oracle = (fleets[c] for c in CONTENDERS)
    lines = [
        MARKERS[0],
        "## 6. Twenty accounts at once",
        "",
        f"Produced by `python3 dev.py bench --scenario accounts20` at commit"
        f" `{figures['commit']}` on {figures['machine']}; written between marker comments,"
        " so the rest of this file is left as it was (and a full run keeps this section).",
        "",
        f"20 local Cliniko accounts, {ACCOUNTS[0]:,} to {ACCOUNTS[-1]:,} patients"
        f" ({sum(ACCOUNTS):,} in all), each its own server allowing {PER_MINUTE} requests"
        f" in any rolling minute, {LATENCY_MS} ms added latency; 20 processes started at once"
        " on the machine's cores (which the 20 servers share too), patient streams only. The"
        " tap runs with its defaults (B = 190, C = 8), one process per account; then the"
        " same accounts, on fresh servers, with 20 dlt REST clients, and then with 20 copies"
        " of `benchmarks/oracle_loop.py`, a yardstick: told how many pages each list has, it"
        " asks for all of them by page number, 8 at a time from its first request, and checks"
        " nothing (it would skip rows where they change mid-read), so no client needs fewer"
        " requests or round trips (its CPU is that of requests and json)."
        " T(M) is"
        f" `benchmarks/limit.py`'s, with B = {BUDGET}, C = {CONCURRENCY} for all; r ="
        f" {figures['r'] * 1000:.0f} ms, one page of 100 patients timed on a quiet server"
        " (every account's pages are 100 rows). Start-up is each process's start to its"
        " first request reaching its server; each account is judged on wall <="
        f" {TOLERANCE} x T(M) + start-up and no 429. Records are counted against the"
        " patients each server holds (active, archived and deleted).",
        "",
        *summary([fleets[c] for c in CONTENDERS]),
        "",
    ]
    for contender in CONTENDERS:
        lines += [f"### {NAMES[contender]}, per account", "", *table(fleets[contender]), ""]
    lines += [
        "### Target",
        "",
        f"- Each of 20 accounts within {TOLERANCE}x of its own T(M) + start-up: tap"
        f" {tap.within}/20 (median {tap.median_ratio:.2f}), dlt {dlt.within}/20 (median"
        f" {dlt.median_ratio:.2f}), oracle loop {oracle.within}/20 (median"
        f" {oracle.median_ratio:.2f}): {'met' if tap.within == 20 else 'NOT met'}.",
        f"- Nothing lost: tap {'met' if tap.complete else 'NOT met'}"
        f" ({tap.lost} missing), dlt {'complete' if dlt.complete else 'incomplete'}.",
        f"- Total CPU seconds and peak total RSS against dlt: tap {tap.cpu:.1f} CPU-s vs"
        f" {dlt.cpu:.1f}, {tap.peak_rss_mb:,.0f} MB vs {dlt.peak_rss_mb:,.0f} MB (reported;"
        " no threshold was set).",
        "",
        figures["reasons"],
        MARKERS[1],
    ]
    return "\n".join(lines) + "\n"


REASONS = """\
### Why

- The machine has {cores} cores and 21 busy processes share them: the 20 clients and the
  benchmark's own process, whose threads serve the 20 accounts. The run is CPU-bound, not
  rate-bound: each account needs at most {max_m} requests, under one minute's budget of
  190, so its T(M) is ceil(M/8) x r, {t_min:.1f}-{t_max:.1f} s; what an account waits for
  is a core. The clients and servers of the tap's fleet used {tap_cpu:.1f} + {tap_srv:.1f}
  CPU-s, so on {cores} cores no schedule finishes the fleet in under {tap_floor:.1f} s
  (dlt: {dlt_cpu:.1f} + {dlt_srv:.1f}, {dlt_floor:.1f} s); the fleet took {tap_wall:.1f} s
  (dlt {dlt_wall:.1f} s), {tap_vs_floor:.2f}x that floor (dlt {dlt_vs_floor:.2f}x). The
  1.15x target counts no CPU; the next point measures what a client doing the least can
  reach here.
- The oracle loop: told each list's pages, it makes the fewest requests ({oracle_m} in
  all), asks 8 at a time from its first one on and does none of the tap's per-record work;
  its 20 processes used {oracle_cpu:.1f} CPU-s (the tap's {tap_cpu:.1f}) and its fleet
  finished in {oracle_wall:.1f} s, with {oracle_within}/20 accounts within 1.15x (median
  {oracle_ratio:.2f}; its start-up, a median {oracle_startup:.1f} s, is short, so its
  allowance is too). Its own CPU-s alone, spread over {cores} cores, take
  {oracle_own_floor:.1f} s, against its largest account's allowance of
  {oracle_allow_max:.1f} s{oracle_conclusion}. The 20 servers meanwhile used
  {oracle_srv:.1f} CPU-s, {oracle_srv_share:.0%} of one core over the fleet's wall: they
  run in the benchmark's one process, where Python's GIL lets them use little more than
  one core.
- Start-up: 20 interpreters importing at once. One tap alone starts in about 0.5 s
  (sections 1-3); here the tap's start-ups run from {tap_su_min:.1f} to {tap_su_max:.1f} s
  (median {tap_startup:.1f} s; dlt's median {dlt_startup:.1f} s). Measured alone in a fresh
  interpreter, `import singer_sdk` costs {sdk_cpu:.2f} CPU-s, `import tap_cliniko.tap`
  {tap_import:.2f} CPU-s and dlt's REST client {dlt_import:.2f} CPU-s: 20 taps' imports are
  about {import_total:.0f} CPU-s, about {import_wall:.0f} s of wall on {cores} cores before the
  last of them can send a request (the catalog and config on top). The tap never runs
  `singer_sdk`'s package __init__ (the SDK's target side, joblib and numpy under it: see
  `tap_cliniko/_sdk.py`), so its import holds only the SDK modules it uses; before that
  (commit 2e48533) it cost 0.52 CPU-s and start-ups here ran 5.3-6.1 s.
- After its first request, an account's process still shares the cores with the other
  19 start-ups and syncs (JSON parsing, record writing, the servers' pages), so the part
  after start-up is not T(M) either: it took a median {tap_after:.1f} s for the tap
  against a median T(M) of {tap_t:.1f} s. The target assumes each client has a core of its
  own for its sync; with 20 at once on {cores} cores it does not (tap: {tap_small:.2f} for
  the smallest account, {tap_large:.2f} for the largest).
- Against dlt (one request in flight, no rate limit of its own): the tap's fleet
  finished in {tap_wall:.1f} s against {dlt_wall:.1f} s with {tap_cpu:.1f} client CPU-s
  against {dlt_cpu:.1f}; peak total RSS {tap_rss:,.0f} MB against {dlt_rss:,.0f} MB (about
  {tap_each:.0f} MB against {dlt_each:.0f} MB a process: the SDK and the tap's schemas).
- What the target would take here: every account runs from the same start, so the
  largest account's allowance, {allow_max:.1f} s (1.15 x T(M) + its start-up), bounds
  when the last one may finish; the fleet's clients and servers would then have to fit
  their work into {cores} x {allow_max:.1f} = {allow_cpu:.1f} CPU-s. They need {need:.1f}
  CPU-s (the servers' {tap_srv:.1f} are the benchmark's, the same for any client).
- Earlier runs (this run's own figures are the ones above; runs vary with what else the
  machine is doing): at commit 2e48533, before the tap stopped running the SDK's package
  __init__, tap 15.3 s vs dlt 28.0 s, CPU-s 21.8 vs 24.3, peak total RSS 1,450 MB vs
  1,292 MB, median ratio 1.79 vs 2.65; before that tap 22.0 s vs dlt 45.2 s, median
  ratio 2.05 vs 1.87, and at the first run (commit a4068db) tap 24.6 s vs dlt 40.2 s,
  median ratio 1.92 vs 2.22; 0/20 within 1.15x each time, nothing lost."""


def reasons(fleets: dict[str, Fleet], imports: dict[str, float]) -> str:
    tap, dlt, oracle = (fleets[c] for c in CONTENDERS)
    startups = [r.startup for r in tap.runs]
    import_total = len(tap.runs) * imports["tap"]
    allow_max = max(r.allowed for r in tap.runs)
    return REASONS.format(
        cores=CORES,
        allow_max=allow_max,
        allow_cpu=CORES * allow_max,
        need=tap.cpu + tap.server_cpu,
        max_m=max(r.total_requests for f in fleets.values() for r in f.runs),
        t_min=min(r.limit for r in tap.runs),
        t_max=max(r.limit for r in tap.runs),
        tap_cpu=tap.cpu,
        tap_srv=tap.server_cpu,
        oracle_m=sum(r.total_requests for r in oracle.runs),
        oracle_cpu=oracle.cpu,
        oracle_wall=oracle.wall,
        oracle_within=oracle.within,
        oracle_ratio=oracle.median_ratio,
        oracle_startup=statistics.median(r.startup for r in oracle.runs),
        oracle_srv=oracle.server_cpu,
        oracle_srv_share=oracle.server_cpu / oracle.wall,
        oracle_own_floor=oracle.cpu / CORES,
        oracle_allow_max=max(r.allowed for r in oracle.runs),
        oracle_conclusion=(
            ": whatever its paging or record path, a fleet needing that much CPU cannot end"
            " within the largest allowance, so its last account to finish is over"
            if oracle.cpu / CORES > max(r.allowed for r in oracle.runs)
            else ""
        ),
        tap_floor=tap.cpu_floor,
        dlt_cpu=dlt.cpu,
        dlt_srv=dlt.server_cpu,
        dlt_floor=dlt.cpu_floor,
        tap_wall=tap.wall,
        dlt_wall=dlt.wall,
        tap_vs_floor=tap.wall / tap.cpu_floor,
        dlt_vs_floor=dlt.wall / dlt.cpu_floor,
        tap_su_min=min(startups),
        tap_su_max=max(startups),
        tap_startup=statistics.median(startups),
        dlt_startup=statistics.median(r.startup for r in dlt.runs),
        sdk_cpu=imports["singer_sdk"],
        tap_import=imports["tap"],
        dlt_import=imports["dlt"],
        import_total=import_total,
        import_wall=import_total / CORES,
        tap_after=statistics.median(r.wall - r.startup for r in tap.runs),
        tap_t=statistics.median(r.limit for r in tap.runs),
        tap_small=tap.runs[0].ratio,
        tap_large=tap.runs[-1].ratio,
        tap_rss=tap.peak_rss_mb,
        dlt_rss=dlt.peak_rss_mb,
        tap_each=tap.peak_rss_mb / len(tap.runs),
        dlt_each=dlt.peak_rss_mb / len(dlt.runs),
    )


def import_cpu(python: str, statement: str) -> float:
    """CPU seconds of `statement` in a fresh interpreter, less those of a bare interpreter."""

    def cpu(code: str) -> float:
        samples = []
        for _ in range(5):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run([python, "-c", code], check=True, cwd=ROOT)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            samples.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        return min(samples)  # the least disturbed of five

    return cpu(statement) - cpu("pass")


def accounts20() -> int:
    os.chdir(ROOT)
    started = time.monotonic()
    figures: dict[str, Any] = {"machine": machine(), "commit": git_commit()}
    figures["import_cpu"] = {
        "singer_sdk": import_cpu(sys.executable, "import singer_sdk"),
        "tap": import_cpu(sys.executable, "import tap_cliniko.tap"),
        "dlt": import_cpu(
            str(dlt_python()), "from dlt.sources.helpers.rest_client import RESTClient"
        ),
    }
    print(
        "  import CPU-s, each alone: "
        + ", ".join(f"{k} {v:.2f}" for k, v in figures["import_cpu"].items()),
        flush=True,
    )
    print(f"20 accounts at once on {figures['machine']}", flush=True)
    for patients in ACCOUNTS:  # made once into benchmarks/.data, before anything is timed
        with dataset(patients):
            pass
    with dataset(ACCOUNTS[0]) as data:
        figures["r"] = r = round_trip(str(ACCOUNTS[0]), data, ACCOUNTS[0], 0.0, LATENCY_MS)
    fleets = {}
    for contender in CONTENDERS:
        print(f"{contender}: 20 processes at once", flush=True)
        fleets[contender] = fleet(contender, r)
        print_fleet(fleets[contender])
    figures["reasons"] = reasons(fleets, figures["import_cpu"])
    RESULTS.write_text(replace_section(RESULTS.read_text(), section(fleets, figures), MARKERS))
    FIGURES.write_text(
        json.dumps(
            {
                **figures,
                "accounts": ACCOUNTS,
                "fleets": {
                    c: {
                        "wall": f.wall,
                        "cpu": f.cpu,
                        "peak_rss_mb": f.peak_rss_mb,
                        "server_cpu": f.server_cpu,
                        "held": f.held,
                        "runs": [
                            {
                                "n": r.n,
                                "wall": r.wall,
                                "startup": r.startup,
                                "requests": r.total_requests,
                                "limit": r.limit,
                                "ratio": r.ratio,
                                "cpu": r.cpu,
                                "rss_mb": r.rss_mb,
                                "records": r.records,
                                "throttled": r.throttled,
                                "exit_code": r.exit_code,
                                "met": r.met,
                            }
                            for r in f.runs
                        ],
                    }
                    for c, f in fleets.items()
                },
            },
            indent=1,
        )
        + "\n"
    )
    plot_targets()
    print(f"wrote section 6 of {RESULTS} in {(time.monotonic() - started) / 60:.1f} minutes")
    return 0 if all(f.complete for f in fleets.values()) else 1


if __name__ == "__main__":
    raise SystemExit(accounts20())
