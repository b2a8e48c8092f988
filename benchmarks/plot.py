"""wall_time.png: every rate-limited run's wall time against its limit T(M)."""

from __future__ import annotations

from accounts import HERE
from limit import TOLERANCE, Run
from scenarios import LATENCIES, Bench


def short_label(run: Run) -> str:
    """1k, 100k, whole, incr 1 ... for the plot's tap c8 points."""
    if run.scenario == "full sync":
        return f"{run.n / 1000:g}k"
    return {"whole account": "whole"}.get(run.scenario, run.scenario.replace("incremental", "incr"))


def plot(bench: Bench) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"tap c8": "o", "tap c2": "^", "tap c1": "v", "dlt": "s"}
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    for axis, latency in zip(axes, LATENCIES, strict=True):
        runs = [r for r in bench.runs if r.latency_ms == latency and r.total_requests]
        for contender, marker in styles.items():
            points = [
                (r.limit, max(r.wall - r.startup, 0.01)) for r in runs if r.contender == contender
            ]
            if points:
                axis.plot(*zip(*sorted(points), strict=True), marker, label=contender, alpha=0.8)
        for run in runs:
            if run.contender == "tap c8":
                axis.annotate(
                    short_label(run),
                    (run.limit, max(run.wall - run.startup, 0.01)),
                    fontsize=6,
                    xytext=(4, -3),
                    textcoords="offset points",
                )
        if runs:
            low = min(r.limit for r in runs) * 0.8
            high = max(max(r.limit, r.wall) for r in runs) * 1.25
            axis.plot([low, high], [low, high], "k-", lw=0.8, label="T(M)")
            axis.plot(
                [low, high], [low * TOLERANCE, high * TOLERANCE], "k:", label=f"{TOLERANCE} T(M)"
            )
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("T(M), s")
        axis.set_ylabel("wall time minus start-up, s")
        axis.set_title(f"{latency} ms latency, 200 requests/min")
        axis.legend(fontsize=8)
    figure.suptitle(
        "Every rate-limited run against its limit T(M) (on or under the dotted line: target met)"
    )
    figure.tight_layout()
    figure.savefig(HERE / "wall_time.png", dpi=110)
