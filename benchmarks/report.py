"""RESULTS.md and WHOLE_ACCOUNT.md from the runs: tables, requests per stream, targets judged."""

from __future__ import annotations

import math
from collections.abc import Callable

from contenders import TAP_CONTENDERS
from limit import BUDGET, CLINIKO_PER_MINUTE, CONCURRENCY, TOLERANCE, Run, old_bound_seconds
from measure import ROUND_TRIP_SAMPLES, ROUTES, UNFILTERED
from scenarios import (
    LATENCIES,
    SLOW_LIMIT,
    Bench,
)


def exit_note(run: Run) -> str:
    return "" if run.exit_code == 0 else f" (exit {run.exit_code})"


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def run_table(runs: list[Run | None], first_column: Callable[[Run], str], head: str) -> list[str]:
    lines = [
        f"| {head} | contender | wall s | start-up s | r ms | T(M) s | old bound s |"
        " wall / (T(M) + start-up) | 1.15 T(M) + start-up s | requests | 429s | records |"
        " within |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in runs:
        if run is None:
            continue
        lines.append(
            f"| {first_column(run)} | {run.contender} | {run.wall:.1f} | {run.startup:.2f} |"
            f" {run.r * 1000:.0f} | {run.limit:.1f} | {old_bound_seconds(run.total_requests):.1f} |"
            f" {run.ratio:.2f} | {run.allowed:.1f} | {run.total_requests} | {run.throttled} |"
            f" {run.records:,} |"
            f" {'yes' if run.met else 'no'}{exit_note(run)} |"
        )
    return lines


def report(bench: Bench, sizes: list[int], whole: int, quick: bool) -> str:
    find = bench.find
    contenders = (*TAP_CONTENDERS, "dlt")
    lines = ["# Benchmark results", "", f"Machine: {bench.machine}.", ""]
    lines += [
        f"Produced by `python3 dev.py bench{' --quick' if quick else ''}` at commit"
        f" `{bench.commit}`, against the local Cliniko over real HTTP on 127.0.0.1 (server and"
        " tap share the machine's cores). Figures only: nothing here is asserted by a test.",
        "",
        "## The limit and how runs are judged",
        "",
        "For a sync of M requests, a budget of B requests in any rolling minute, at most C in"
        " flight and a round trip of r seconds, no client can finish faster than",
        "",
        "    T(M) = max(floor((M - 1) / B) * 60 s + r, ceil(M / C) * r)",
        "",
        f"- B = {BUDGET} (the tap's default `max_requests_per_minute`), C = {CONCURRENCY} (its"
        " default `max_concurrency`), for every contender: T(M) is the limit of a polite"
        " client, not of the contender's own setting.",
        "- r = the added latency plus the base round trip: the median of"
        f" {ROUND_TRIP_SAMPLES} timed single requests for a page of 100 patients, asked of a"
        " second local Cliniko on the same data with the same latency.",
        "- M = every request the local Cliniko saw during the run (any status).",
        "- start-up = from the contender's process start to its first request reaching the"
        " server (Python, imports, catalog; the server logs each request's arrival).",
        f"- Target: wall <= {TOLERANCE} x T(M) + start-up, and zero 429s. The local Cliniko"
        f" enforces {CLINIKO_PER_MINUTE} requests per key in any rolling 60 s (a fresh server,"
        " so a fresh minute, for every run).",
        "- old bound = M at 200 a minute, the bound of earlier runs, for comparison.",
        f"- `tap cK` is the tap with `max_concurrency` K. K = 1 and 2 run only where the run"
        f" of K = 8 predicts they take under {SLOW_LIMIT:.0f} s (T(M) with C = K, plus"
        " start-up); dlt (its REST client following `links.next`, one request in flight) runs"
        " in every patients scenario.",
        "",
    ]
    if bench.skipped:
        lines += ["Not run (predicted over the limit above):", ""]
        for skip in bench.skipped:
            lines.append(
                f"- {skip.contender}, {skip.scenario}, N = {skip.n:,}, {skip.latency_ms:.0f} ms:"
                f" predicted {skip.predicted:.0f} s."
            )
        lines.append("")
    lines += ["## 1. Full syncs of N patients (patient streams, 200 requests/min)", ""]
    for n in sizes:
        lines += [f"### {n:,} patients", ""]
        runs = [find(c, "full sync", n, lat) for lat in LATENCIES for c in contenders]
        lines += run_table(runs, lambda r: f"{r.latency_ms:.0f} ms", "latency")
        lines.append("")
    lines += [f"## 2. Whole account: {whole:,} patients, every default stream", ""]
    runs = [find(c, "whole account", whole, lat) for lat in LATENCIES for c in TAP_CONTENDERS]
    lines += run_table(runs, lambda r: f"{r.latency_ms:.0f} ms", "latency")
    lines += ["", "Requests per stream (`tap c8`); floor = one per route visited, or"]
    lines += ["ceil(records/100) when more. A child stream's reads of its parents' list count"]
    lines += ["under the parent's name.", ""]
    whole_runs = [
        r for r in (find("tap c8", "whole account", whole, lat) for lat in LATENCIES) if r
    ]
    if whole_runs:
        head = " | ".join(f"requests {r.latency_ms:.0f} ms" for r in whole_runs)
        lines += [
            f"| stream | records | {head} | floor |",
            "|---|---:|" + "---:|" * (len(whole_runs) + 1),
        ]
        streams = sorted(set().union(*(r.per_stream for r in whole_runs)))
        for stream in streams:
            base = whole_runs[0]
            floor = max(
                base.routes_per_stream.get(stream, 0),
                math.ceil(base.records_per_stream[stream] / 100),
            )
            cells = " | ".join(str(r.per_stream[stream]) for r in whole_runs)
            lines.append(
                f"| `{stream}` | {base.records_per_stream[stream]:,} | {cells} | {floor} |"
            )
    lines += ["", "## 3. Incremental run, nothing changed (whole account, default catalog)", ""]
    lines += [
        "Straight after the whole-account sync of section 2, the tap (`max_concurrency` 8) runs"
        " again on its final state against a fresh local Cliniko on the same, unchanged data;"
        " then once more on the state of that run (the steady state of a quiet account).",
        "",
    ]
    incremental = [
        find("tap c8", s, whole, lat)
        for lat in LATENCIES
        for s in ("incremental 1", "incremental 2")
    ]
    lines += run_table(incremental, lambda r: f"{r.latency_ms:.0f} ms, {r.scenario}", "run")
    done = [r for r in incremental if r]
    if done:
        lines += [
            "",
            "Requests per stream (target: at most 2) / records it emitted again. A parent"
            " collection's list read without a bookmark filter is a child stream reading its"
            " parents, shown on its own row.",
            "",
        ]
        head = " | ".join(f"{r.latency_ms:.0f} ms {r.scenario}" for r in done)
        lines += [f"| stream | {head} |", "|---|" + "---:|" * len(done)]
        for stream in sorted(set().union(*(r.per_stream for r in done))):
            counts = []
            for r in done:
                emitted = "" if UNFILTERED in stream else f" / {r.records_per_stream[stream]}"
                counts.append(f"{r.per_stream[stream]}{emitted}")
            lines.append(f"| `{stream}` | " + " | ".join(counts) + " |")
    lines += ["", "## 4. Requests of a full sync beyond ceil(rows/100) per route", ""]
    lines += [
        "extra = requests - ceil(rows/100); short = answers carrying fewer than 100 rows (every"
        " id window's read ends in one, so extra <= short means no full page was read twice,"
        " i.e. at most one extra request per window).",
        "",
        "| N | latency | contender | route | ceil(rows/100) | requests | extra | short |",
        "|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    for n in sizes:
        for latency in LATENCIES:
            for contender in contenders:
                run = find(contender, "full sync", n, latency)
                if not run:
                    continue
                for route in ROUTES:
                    lines.append(
                        f"| {n:,} | {latency} ms | {contender} | `{route}` | {run.pages[route]} |"
                        f" {run.requests[route]} | {run.requests[route] - run.pages[route]} |"
                        f" {run.short[route]} |"
                    )
    lines += ["", "## 5. Record path (no latency, no rate limit)", ""]
    lines += [
        "records/s is wall-clock and includes the local server's share of the cores; records"
        " per CPU second is the contender's process alone.",
        "",
        "| N | contender | records/s | records per CPU s | CPU s | peak RSS MB |"
        " CPU vs SDK default |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        sdk = find("sdk-default", "record path", n)
        for contender in ("tap", "sdk-default", "dlt"):
            if path_run := find(contender, "record path", n):
                ratio = path_run.per_cpu_second / sdk.per_cpu_second if sdk and sdk.cpu else 0
                lines.append(
                    f"| {n:,} | {contender} | {path_run.per_second:,.0f} |"
                    f" {path_run.per_cpu_second:,.0f} | {path_run.cpu:.1f} |"
                    f" {path_run.rss_mb:.0f} | {ratio:.2f}x |"
                )
    lines += ["", "## Targets", ""]
    lines += targets(bench, sizes, whole)
    lines += ["", "![wall time against T(M)](wall_time.png)", ""]
    return "\n".join(lines)


def judged(run: Run, what: str) -> str:
    return (
        f"- {what}: wall {run.wall:.1f} s against {TOLERANCE} x T(M) {run.limit:.1f} s +"
        f" start-up {run.startup:.2f} s = {run.allowed:.1f} s (wall / (T(M) + start-up) ="
        f" {run.ratio:.2f}; M = {run.total_requests},"
        f" old bound {old_bound_seconds(run.total_requests):.1f} s),"
        f" {run.throttled} 429s{exit_note(run)}:"
        f" {verdict(run.met)}."
    )


def targets(bench: Bench, sizes: list[int], whole: int) -> list[str]:
    find = bench.find
    out = ["Judged on the tap with its defaults (`tap c8`).", ""]
    for n in sizes:
        for latency in LATENCIES:
            if run := find("tap c8", "full sync", n, latency):
                out.append(judged(run, f"Full sync, {n:,} patients, {latency} ms"))
    for latency in LATENCIES:
        if run := find("tap c8", "whole account", whole, latency):
            out.append(judged(run, f"Whole account ({whole:,} patients), {latency} ms"))
    for latency in LATENCIES:
        for scenario in ("incremental 1", "incremental 2"):
            if run := find("tap c8", scenario, whole, latency):
                out.append(
                    judged(run, f"Incremental, nothing changed ({scenario[-1]}), {latency} ms")
                )
                over = {s: c for s, c in sorted(run.per_stream.items()) if c > 2}
                streams = sum(1 for stream in run.per_stream if UNFILTERED not in stream)
                out.append(
                    f"- Incremental, nothing changed ({scenario[-1]}), {latency} ms:"
                    f" {run.total_requests} requests over {streams} streams,"
                    f" most {max(run.per_stream.values(), default=0)}"
                    f" for one stream; over 2: {over or 'none'} (target at most 2 per stream):"
                    f" {verdict(not over)}."
                )
    for n in sizes:
        for latency in LATENCIES:
            if run := find("tap c8", "full sync", n, latency):
                extra = {r.rsplit("/", 1)[-1]: run.requests[r] - run.pages[r] for r in ROUTES}
                short = {r.rsplit("/", 1)[-1]: run.short[r] for r in ROUTES}
                ok = all(extra[k] <= max(1, short[k]) for k in extra)
                out.append(
                    f"- Full sync, {n:,} patients, {latency} ms: requests beyond ceil(rows/100)"
                    f" per route {extra}, short answers {short} (target: at most one per window):"
                    f" {verdict(ok)}."
                )
    taps = [r for r in bench.runs if r.contender.startswith("tap") and r.latency_ms]
    if taps:
        throttled = sum(r.throttled for r in taps)
        out.append(
            f"- 429s over all {len(taps)} rate-limited runs of the tap (any `max_concurrency`):"
            f" {throttled} (target 0): {verdict(throttled == 0)}."
        )
    for n in sizes:
        tap, sdk = find("tap", "record path", n), find("sdk-default", "record path", n)
        if tap and sdk and sdk.cpu and tap.cpu:
            ratio = tap.per_cpu_second / sdk.per_cpu_second
            out.append(
                f"- Record path, {n:,} patients (issue 3's target, 3x the SDK default in records"
                f" per CPU second): {ratio:.2f}x: {verdict(ratio >= 3)}."
            )
    return out


def whole_account_text(bench: Bench, patients: int) -> str:
    """Sections 2 and 3 of the report and their targets, for WHOLE_ACCOUNT.md."""
    text = "# Whole-account benchmark (python3 dev.py bench --whole-account N)\n\n"
    full = report(bench, [], patients, quick=False).replace(
        "`python3 dev.py bench`", f"`python3 dev.py bench --whole-account {patients}`"
    )
    text += full.split("## 1. ", 1)[0].split("\n", 2)[2]  # machine, commit, the limit
    text += "## " + full.split("## 2. ", 1)[1].split("## 4. ", 1)[0]
    return text + "## Targets\n\n" + "\n".join(targets(bench, [], patients)) + "\n"
