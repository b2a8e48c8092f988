"""Small syncs at the limit (issue 21): 1,000 and 4,000 patients at 300 and 600 ms.

`python3 dev.py bench --scenario small-syncs` syncs the patient streams of N patients from a
fresh local Cliniko (200 requests a minute, the added latency) with the tap (its defaults),
with `tap spec` (benchmarks/tap_speculative.py: the tap with its first request not sent
alone, never shipped) and with benchmarks/oracle_loop.py both ways: `oracle first` asks its
first request alone, as the tap does so that a wrong key costs one request, and `oracle c8`
sends 8 at once from the start. Told each list's pages, the oracle needs no first answer to
plan, makes the fewest requests (ceil(rows/100) per list) and checks nothing, so it is the
fastest either way can be. Each contender runs ROUNDS times, in turn; the median round is
judged on wall <= 1.10 x T(M) + start-up. Writes section 8 of RESULTS.md between the MARKERS
and small_syncs.json.
"""

from __future__ import annotations

import json
import math
from typing import Any

from accounts import HERE, dataset
from limit import CONCURRENCY, Run
from measure import round_trip, run_once
from plot_targets import plot_targets
from scenarios import git_commit, machine
from sections import replace_section

SIZES = (1_000, 4_000)
LATENCIES = (300, 600)
CONTENDERS = ("tap c8", "tap spec", "oracle first", "oracle c8")
ROUNDS = 3
TARGET = 1.10
RESULTS = HERE / "RESULTS.md"
FIGURES = HERE / "small_syncs.json"
MARKERS = "<!-- small-syncs -->", "<!-- /small-syncs -->"


def ratio(run: Run) -> float:
    base = run.limit + run.startup
    return run.wall / base if base else 0.0


def median_run(runs: list[Run]) -> Run:
    """The round whose ratio is the median (the middle one of three)."""
    return sorted(runs, key=ratio)[len(runs) // 2]


def alone_rounds(requests: int) -> int:
    """Round trips of `requests` when the first goes alone and the rest 8 at a time."""
    return 1 + math.ceil((requests - 1) / CONCURRENCY)


def section(rows: list[dict[str, Any]], figures: dict[str, Any]) -> str:
    lines = [
        MARKERS[0],
        "## 8. Small syncs at the limit",
        "",
        f"Produced by `python3 dev.py bench --scenario small-syncs` at commit"
        f" `{figures['commit']}` on {figures['machine']}; written between marker comments.",
        "",
        "The patient streams of N patients from a fresh local Cliniko (200 requests a minute,"
        " the added latency), synced by the tap with its defaults and by"
        " `benchmarks/oracle_loop.py`, a yardstick told how many pages each list has: it makes"
        " the fewest requests (ceil(rows/100) a list), checks nothing and needs no first answer"
        " to plan. `oracle first` sends its first request alone and the rest 8 at a time once"
        " it is answered, as the tap does so that a wrong key or host costs one request;"
        " `oracle c8` sends 8 at once from the start. `tap spec`"
        " (`benchmarks/tap_speculative.py`, a yardstick never shipped) is the tap with its"
        " first request not sent alone. Each ran"
        f" {ROUNDS} times in turn; the table shows the median round (by ratio) and every"
        f" round's ratio. Target: wall <= {TARGET:.2f} x T(M) + start-up. Rounds = 1 +"
        " ceil((M - 1) / 8) is the fewest round trips with the first request alone, against"
        " T(M)'s ceil(M / 8).",
        "",
        "| N | latency | contender | wall s | start-up s | after start-up s | r ms | M | T(M) s"
        " | fewest round trips, first alone | wall / (T(M) + start-up) | every round | records"
        f" | within {TARGET:.2f}x |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for row in rows:
        run = row["median"]
        lines.append(
            f"| {run.n:,} | {run.latency_ms:.0f} ms | {run.contender} | {run.wall:.2f} |"
            f" {run.startup:.2f} | {run.wall - run.startup:.2f} | {run.r * 1000:.0f} |"
            f" {run.total_requests} |"
            f" {run.limit:.2f} | {alone_rounds(run.total_requests)} | {ratio(run):.2f} |"
            f" {', '.join(f'{r:.2f}' for r in row['ratios'])} | {run.records:,} |"
            f" {'yes' if row['met'] else 'no'} |"
        )
    lines += ["", "### Target", ""]
    for row in rows:
        run = row["median"]
        if run.contender != "tap c8":
            continue
        lines.append(
            f"- Full sync, {run.n:,} patients, {run.latency_ms:.0f} ms: tap {ratio(run):.2f}"
            f" (wall {run.wall:.2f} s against {TARGET:.2f} x T(M) {run.limit:.2f} s + start-up"
            f" {run.startup:.2f} s = {TARGET * run.limit + run.startup:.2f} s; M ="
            f" {run.total_requests}, {run.throttled} 429s):"
            f" {'met' if row['met'] else 'NOT met'}."
        )
    lines += ["", figures["reasons"], MARKERS[1]]
    return "\n".join(lines) + "\n"


REASONS = """\
### Why

- With its first request alone, a sync of M requests takes at least 1 + ceil((M - 1) / 8)
  round trips, one more than T(M)'s ceil(M / 8) unless M - 1 is a multiple of 8. The
  fewest requests these syncs can make (ceil(rows/100) a list) are {least}. `oracle
  first`, which makes no request more than it must and checks nothing, gets {oracle_first}.
- Without the first request alone, `oracle c8` gets {oracle_c8}: after the last answer it
  still writes the last page and exits (it took {oracle_tail} s past its round trips at
  300 ms), and with T(M) two round trips that alone is most of the 10% the target allows.
  {verdict}
- The tap gets {tap}, and `tap spec`, the tap with its first request not alone,
  {tap_spec}. The tap's first request goes alone on purpose (`FirstAnswer` in
  `tap_cliniko/concurrency.py`): a wrong key, shard or host is learned from one request
  and reported in one line, not from every stream's requests side by side
  (tests/test_bad_input.py::test_wrong_key_with_every_stream_is_one_request_and_one_line,
  which this issue requires to keep passing). A scheduler retrying a mistyped job every
  few minutes would otherwise send Cliniko eight failed logins a try; what Cliniko does
  with repeated failed logins is not documented (it documents blocking clients
  automatically for a missing User-Agent). Giving that up would not meet the target
  either (`tap spec` above), so we keep it.
- After its start-up the tap took {tap_after} against `oracle first`'s {oracle_after}:
  its windows' requests beyond the fewest (section 4) and its own checks and writer. Its
  ratio is no worse than the oracle's for the longer start-up it is divided by."""


def reasons(rows: list[dict[str, Any]]) -> str:
    def medians(contender: str, latency: int | None = None) -> list[Run]:
        return [
            row["median"]
            for row in rows
            if row["median"].contender == contender
            and (latency is None or row["median"].latency_ms == latency)
        ]

    def listed(runs: list[Run]) -> str:
        return "; ".join(
            f"{ratio(run):.2f} at {run.n:,} patients, {run.latency_ms:.0f} ms" for run in runs
        )

    def after(runs: list[Run]) -> str:
        return "; ".join(
            f"{run.wall - run.startup:.2f} s at {run.n:,}/{run.latency_ms:.0f} ms" for run in runs
        )

    fewest = [(run.n, sum(run.pages.values())) for run in medians("tap c8", LATENCIES[0])]
    least = "; ".join(
        f"{m} for {n:,} patients, {math.ceil(m / CONCURRENCY)} round trips in T(M) and"
        f" {alone_rounds(m)} with the first alone"
        for n, m in fewest
    )
    oracle = medians("oracle c8", LATENCIES[0])
    tails = [
        run.wall - run.startup - math.ceil(run.total_requests / CONCURRENCY) * run.r
        for run in oracle
    ]
    met = [row["median"] for row in rows if row["met"]]
    verdict = (
        "No contender is within 1.10x in any of these syncs."
        if not met
        else "Within 1.10x: "
        + "; ".join(f"{run.contender} at {run.n:,}/{run.latency_ms:.0f} ms" for run in met)
        + ", and no other run."
    )
    return REASONS.format(
        least=least,
        oracle_first=listed(medians("oracle first")),
        oracle_c8=listed(medians("oracle c8")),
        oracle_tail=" and ".join(f"{tail:.2f}" for tail in tails),
        verdict=verdict,
        tap=listed(medians("tap c8")),
        tap_spec=listed(medians("tap spec")),
        tap_after=after(medians("tap c8")),
        oracle_after=after(medians("oracle first")),
    )


def small_syncs() -> int:
    figures: dict[str, Any] = {"machine": machine(), "commit": git_commit()}
    print(f"small syncs on {figures['machine']}", flush=True)
    rows: list[dict[str, Any]] = []
    for n in SIZES:
        with dataset(n) as data:
            for latency in LATENCIES:
                r = round_trip(str(n), data, n, 0.0, latency)
                runs: dict[str, list[Run]] = {c: [] for c in CONTENDERS}
                for _ in range(ROUNDS):
                    for contender in CONTENDERS:
                        run, _ = run_once(contender, "small sync", n, data, latency_ms=latency, r=r)
                        runs[contender].append(run)
                for contender in CONTENDERS:
                    middle = median_run(runs[contender])
                    complete = all(run.exit_code == 0 for run in runs[contender])
                    rows.append(
                        {
                            "median": middle,
                            "ratios": [ratio(run) for run in runs[contender]],
                            "met": complete
                            and middle.throttled == 0
                            and middle.wall <= TARGET * middle.limit + middle.startup,
                        }
                    )
    figures["reasons"] = reasons(rows)
    RESULTS.write_text(replace_section(RESULTS.read_text(), section(rows, figures), MARKERS))
    FIGURES.write_text(
        json.dumps(
            {
                **figures,
                "target": TARGET,
                "runs": [
                    {
                        "n": row["median"].n,
                        "latency_ms": row["median"].latency_ms,
                        "contender": row["median"].contender,
                        "wall": row["median"].wall,
                        "startup": row["median"].startup,
                        "requests": row["median"].total_requests,
                        "limit": row["median"].limit,
                        "ratio": ratio(row["median"]),
                        "ratios": row["ratios"],
                        "records": row["median"].records,
                        "met": row["met"],
                    }
                    for row in rows
                ],
            },
            indent=1,
        )
        + "\n"
    )
    plot_targets()
    print(f"wrote section 8 of {RESULTS}", flush=True)
    return 0 if all(row["median"].exit_code == 0 for row in rows) else 1
