"""targets.png: issue 21's targets, each against its threshold, from the last runs' figures
(accounts20.json from `--scenario accounts20`, record_path.json from `--scenario
record-path`, small_syncs.json from `--scenario small-syncs`); a panel whose figures are
missing says so."""

from __future__ import annotations

import json
from typing import Any

from accounts import HERE

RATIO_TARGET, RSS_TARGET_MB, FLEET_TARGET, SMALL_TARGET = 0.9, 100, 1.15, 1.10
MARKERS = {"tap c8": "o", "dlt": "s", "oracle c8": "^", "oracle first": "v"}


def load(name: str) -> dict[str, Any] | None:
    path = HERE / name
    return json.loads(path.read_text()) if path.exists() else None


def plot_targets() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (fleet, small, record, memory) = plt.subplots(1, 4, figsize=(18, 4.4))
    accounts = load("accounts20.json")
    if accounts:
        for contender, fleet_runs in accounts["fleets"].items():
            runs = fleet_runs["runs"]
            x, y = [r["n"] for r in runs], [r["ratio"] for r in runs]
            fleet.plot(x, y, MARKERS.get(contender, "x"), label=contender)
        fleet.axhline(FLEET_TARGET, color="k", ls=":", label=f"target {FLEET_TARGET}x")
        fleet.set_xlabel("patients of the account")
        fleet.set_ylabel("wall / (T(M) + start-up)")
        fleet.legend(fontsize=8)
    fleet.set_title("20 accounts at once: each account", fontsize=10)
    syncs = load("small_syncs.json")
    if syncs:
        runs = syncs["runs"]
        cases = sorted({(r["n"], r["latency_ms"]) for r in runs})
        labels = [f"{n / 1000:g}k, {latency:.0f} ms" for n, latency in cases]
        contenders = list(dict.fromkeys(r["contender"] for r in runs))
        width = 0.8 / len(contenders)
        for i, contender in enumerate(contenders):
            ratios = {
                (r["n"], r["latency_ms"]): r.get("judged", r["ratio"])
                for r in runs
                if r["contender"] == contender
            }
            x = [j + (i - (len(contenders) - 1) / 2) * width for j in range(len(cases))]
            small.bar(x, [ratios.get(case, 0) for case in cases], width, label=contender)
        small.set_xticks(range(len(cases)), labels, fontsize=8)
        small.axhline(SMALL_TARGET, color="k", ls=":", label=f"target {SMALL_TARGET}x")
        small.set_ylim(0.9, None)
        small.set_ylabel("(wall - start-up) / T(M)")
        small.legend(fontsize=8)
    rounds = f"median of {syncs['rounds']} rounds" if syncs and "rounds" in syncs else "median"
    small.set_title(f"Small syncs ({rounds})", fontsize=10)
    paths = load("record_path.json")
    if paths:
        sizes = [s["n"] for s in paths["sizes"]]
        labels = [f"{n / 1000:g}k" for n in sizes]
        record.bar(labels, [s["ratio"] for s in paths["sizes"]], color="tab:blue")
        record.axhline(RATIO_TARGET, color="k", ls=":", label=f"target {RATIO_TARGET}x")
        record.set_ylabel("tap / bare loop, rows per CPU second")
        record.legend(fontsize=8)
        names = [*labels, "whole account"]
        rss = [s["tap"]["rss_mb"] for s in paths["sizes"]] + [paths["whole"]["rss_mb"]]
        memory.bar(names, rss, color="tab:green")
        memory.axhline(RSS_TARGET_MB, color="k", ls=":", label=f"target {RSS_TARGET_MB} MB")
        memory.set_ylabel("tap peak RSS, MB")
        memory.legend(fontsize=8)
    record.set_title("Record path: patients synced", fontsize=10)
    memory.set_title("Memory: one tap process", fontsize=10)
    for axis, figures in ((fleet, accounts), (small, syncs), (record, paths), (memory, paths)):
        if not figures:
            axis.text(0.5, 0.5, "not run yet", ha="center", transform=axis.transAxes)
    figure.suptitle("Issue 21's targets (dotted: the threshold)")
    figure.tight_layout()
    figure.savefig(HERE / "targets.png", dpi=110)
