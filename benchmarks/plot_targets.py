"""targets.png: issue 21's targets, each against its threshold, from the last runs' figures
(accounts20.json from `--scenario accounts20`, record_path.json from `--scenario
record-path`); a panel whose figures are missing says so."""

from __future__ import annotations

import json
from typing import Any

from accounts import HERE

RATIO_TARGET, RSS_TARGET_MB, FLEET_TARGET = 0.9, 100, 1.15


def load(name: str) -> dict[str, Any] | None:
    path = HERE / name
    return json.loads(path.read_text()) if path.exists() else None


def plot_targets() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (fleet, record, memory) = plt.subplots(1, 3, figsize=(14, 4.4))
    accounts = load("accounts20.json")
    if accounts:
        for contender, marker in (("tap c8", "o"), ("dlt", "s")):
            runs = accounts["fleets"][contender]["runs"]
            fleet.plot([r["n"] for r in runs], [r["ratio"] for r in runs], marker, label=contender)
        fleet.axhline(FLEET_TARGET, color="k", ls=":", label=f"target {FLEET_TARGET}x")
        fleet.set_xlabel("patients of the account")
        fleet.set_ylabel("wall / (T(M) + start-up)")
        fleet.legend(fontsize=8)
    fleet.set_title("20 accounts at once: each account", fontsize=10)
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
    for axis, figures in ((fleet, accounts), (record, paths), (memory, paths)):
        if not figures:
            axis.text(0.5, 0.5, "not run yet", ha="center", transform=axis.transAxes)
    figure.suptitle("Issue 21's targets (dotted: the threshold)")
    figure.tight_layout()
    figure.savefig(HERE / "targets.png", dpi=110)
