"""Speed of tap-cliniko against the local Cliniko over real HTTP: figures and ratios, no asserts.

    python3 dev.py bench            # the full run, about an hour on 2 cores
    python3 dev.py bench --quick    # small sizes, to try the script (about 6 minutes)
    python3 dev.py bench --whole-account N   # only the whole-account scenario (WHOLE_ACCOUNT.md)
    python3 dev.py bench --scenario accounts20   # only 20 accounts at once (1-2 minutes)
    python3 dev.py bench --scenario record-path [--sizes 20000,100000]   # tap vs bare loop
    python3 dev.py bench --scenario small-syncs   # 1,000 and 4,000 patients (about 5 minutes)

Writes benchmarks/RESULTS.md and benchmarks/wall_time.png. `--scenario accounts20` (issue 21,
benchmarks/fleet.py) starts 20 local Cliniko accounts of 500 to 6,000 patients (200
requests/min each, 300 ms latency), syncs them at once with 20 tap processes, then with 20
dlt REST clients and 20 oracle loops (benchmarks/oracle_loop.py, the yardstick), and writes
only section 6 of RESULTS.md (between its marker comments); `--scenario small-syncs`
(benchmarks/small.py) writes only section 8. A full run or `--report-only` renders the rest
and keeps those sections as they are.

The physical limit of a sync of M requests (issue 12): with a budget of B requests in any
rolling minute, at most C requests in flight and a round trip of r seconds, no client can
finish faster than

    T(M) = max(floor((M - 1) / B) * 60 s + r, ceil(M / C) * r)

Every rate-limited run is judged on wall <= 1.15 * T(M) + start-up (the time from the
process start to its first request reaching the server) and zero 429s.
"""

from __future__ import annotations

import argparse
import sys
import time

from accounts import HERE
from fleet import MARKERS as ACCOUNTS20
from fleet import accounts20
from plot import plot
from recpath import MARKERS as RECORD_PATH
from recpath import record_path
from report import report, whole_account_text
from scenarios import (
    LATENCIES,
    QUICK_SIZES,
    QUICK_WHOLE_PATIENTS,
    RUNS_FILE,
    SIZES,
    WHOLE_PATIENTS,
    Bench,
    machine,
)
from sections import keep_section
from small import MARKERS as SMALL_SYNCS
from small import small_syncs


def whole_account_only(patients: int) -> int:
    """The old `--whole-account N` job: the whole-account scenario alone, into WHOLE_ACCOUNT.md."""
    bench = Bench()
    for latency in LATENCIES:
        bench.whole_account(patients, latency)
    text = whole_account_text(bench, patients)
    (HERE / "WHOLE_ACCOUNT.md").write_text(text)
    print(text)
    return 0


NOTES = ("<!-- notes -->", "<!-- /notes -->")  # the hand-written reasons, kept across runs
PLOT_LINE = "![wall time against T(M)](wall_time.png)"


def kept(rendered: str) -> str:
    """A freshly rendered RESULTS.md with the scenario sections (6, 7 and 8) and the
    hand-written notes (between NOTES, put back before the plot) of the file kept."""
    old = (HERE / "RESULTS.md").read_text() if (HERE / "RESULTS.md").exists() else ""
    text = rendered
    for markers in (ACCOUNTS20, RECORD_PATH, SMALL_SYNCS):
        text = keep_section(text, old, markers)
    start, end = old.find(NOTES[0]), old.find(NOTES[1])
    if start >= 0 and end > start and NOTES[0] not in text and PLOT_LINE in text:
        notes = old[start : end + len(NOTES[1])]
        text = text.replace(PLOT_LINE, f"{notes}\n\n{PLOT_LINE}", 1)
    return text


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"N = {', '.join(map(str, QUICK_SIZES))} and a whole account of"
        f" {QUICK_WHOLE_PATIENTS} patients",
    )
    parser.add_argument("--sizes", help="comma-separated N values for the patients scenarios")
    parser.add_argument("--whole-patients", type=int, help="patients of the whole account")
    parser.add_argument(
        "--whole-account",
        type=int,
        metavar="N",
        help="only the whole-account scenario with N patients (writes WHOLE_ACCOUNT.md)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help=f"render RESULTS.md and the plot again from {RUNS_FILE.name}, running nothing",
    )
    parser.add_argument(
        "--scenario",
        choices=("all", "accounts20", "record-path", "small-syncs"),
        default="all",
        help="accounts20: only 20 accounts synced at once (section 6 of RESULTS.md);"
        " record-path: only the tap against a bare requests + json loop, and memory"
        " (section 7; --sizes N,...); small-syncs: 1,000 and 4,000 patients at 300 and"
        " 600 ms, the tap against the oracle loop (section 8);"
        " all (the default): every other scenario",
    )
    args = parser.parse_args()
    if args.scenario == "accounts20":
        return accounts20()
    if args.scenario == "small-syncs":
        return small_syncs()
    if args.scenario == "record-path":
        return record_path([int(s) for s in args.sizes.split(",")] if args.sizes else None)
    if args.whole_account:
        return whole_account_only(args.whole_account)
    if args.report_only:
        bench, sizes, whole, quick = Bench.load()
        (HERE / "RESULTS.md").write_text(kept(report(bench, sizes, whole, quick)))
        plot(bench)
        return 0
    sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else (QUICK_SIZES if args.quick else SIZES)
    )
    whole = args.whole_patients or (QUICK_WHOLE_PATIENTS if args.quick else WHOLE_PATIENTS)
    print(f"benchmark on {machine()}", flush=True)
    started = time.monotonic()
    bench = Bench()
    sizes = sorted(sizes)
    # Largest first: its runs are rate-bound, so a busy machine disturbs them least.
    for n in reversed(sizes):
        print(f"N = {n:,}", flush=True)
        bench.record_path(n)
        for latency in LATENCIES:
            bench.full_sync(n, latency)
    print(f"whole account, {whole:,} patients", flush=True)
    for latency in LATENCIES:
        bench.whole_account(whole, latency)
    (HERE / "RESULTS.md").write_text(kept(report(bench, sizes, whole, args.quick)))
    bench.save(sizes, whole, args.quick)
    plot(bench)
    minutes = (time.monotonic() - started) / 60
    print(f"wrote {HERE / 'RESULTS.md'} and {HERE / 'wall_time.png'} in {minutes:.0f} minutes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
