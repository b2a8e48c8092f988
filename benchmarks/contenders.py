"""The contenders (the tap at each max_concurrency, the SDK's defaults, dlt) and their commands."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

from accounts import HERE, KEY, ROOT
from limit import (
    BUDGET,
)

DLT_VENV = ROOT / ".venv-bench-dlt"
DLT_SPEC = "dlt==1.31.0"
USER_AGENT = "tap-cliniko bench (bench@example.com)"
TAP_CONTENDERS = ("tap c8", "tap c2", "tap c1")  # c8 first: its M predicts the others' time


def dlt_python() -> Path:
    """dlt in its own virtualenv, so its dependencies never meet the tap's."""
    python = DLT_VENV / "bin" / "python"
    stamp = DLT_VENV / ".installed"
    if not (stamp.exists() and stamp.read_text() == DLT_SPEC):
        venv.EnvBuilder(with_pip=True, symlinks=True).create(DLT_VENV)
        subprocess.run([python, "-m", "pip", "install", "--quiet", DLT_SPEC], check=True)
        stamp.write_text(DLT_SPEC)
    return python


def patient_catalog(config: dict[str, Any]) -> dict[str, Any]:
    """The tap's catalog with only the three patient streams selected (what the others read)."""
    from tap_cliniko.tap import TapCliniko

    catalog = TapCliniko(config=config).catalog_dict
    for entry in catalog["streams"]:
        for metadata in entry["metadata"]:
            if metadata["breadcrumb"] == []:
                metadata["metadata"]["selected"] = entry["tap_stream_id"].endswith("patients")
    return catalog


def tap_config(base_url: str, contender: str, rate_limited: bool) -> dict[str, Any]:
    config: dict[str, Any] = {
        "api_key": KEY,
        "user_agent": USER_AGENT,
        "base_url": base_url,
        "max_requests_per_minute": BUDGET if rate_limited else 0,
    }
    if contender.startswith("tap c"):
        config["max_concurrency"] = int(contender.removeprefix("tap c"))
    return config


#: oracle_loop.py's two ways: every request 8 at a time, or the first alone (as the tap's).
ORACLES = {"oracle c8": [], "oracle first": ["--first-alone"]}


def command(
    contender: str,
    base_url: str,
    work: Path,
    *,
    rate_limited: bool,
    patients_only: bool,
    pages: dict[str, int] | None = None,
) -> tuple[list[str], Path]:
    """The command line of one contender, and where its state file goes if it gets one.

    pages: ceil(rows/100) of each patient route, which only the oracle loop is told.
    """
    if contender in ORACLES:
        counts = [str(count) for count in (pages or {}).values()]
        script = str(HERE / "oracle_loop.py")
        return [sys.executable, script, base_url, KEY, *counts, *ORACLES[contender]], work / "s"
    if contender == "dlt":
        return [str(dlt_python()), str(HERE / "dlt_baseline.py"), base_url, KEY], work / "state"
    if contender == "bare":
        return [sys.executable, str(HERE / "bare_loop.py"), base_url, KEY], work / "state"
    config = tap_config(base_url, contender, rate_limited)
    config_file = work / "config.json"
    config_file.write_text(json.dumps(config))
    if contender == "sdk-default":
        args = [sys.executable, str(HERE / "sdk_default_tap.py")]
    elif contender == "tap spec":  # max_concurrency 8, first request not alone
        args = [sys.executable, str(HERE / "tap_speculative.py")]
    else:
        args = [sys.executable, "-c", "from tap_cliniko.tap import main; main()"]
    if patients_only:
        catalog_file = work / "catalog.json"
        catalog_file.write_text(json.dumps(patient_catalog(config)))
        args += ["--catalog", str(catalog_file)]
    return [*args, "--config", str(config_file)], work / "state.json"
