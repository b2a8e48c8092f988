"""The synthetic accounts the runs read: made once into benchmarks/.data, copied for each run."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tap_cliniko.sandbox import SandboxConfig, SandboxServer

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "benchmarks"
DATA = HERE / ".data"
KEY = "bench0key-au1"


@contextlib.contextmanager
def dataset(patients: int, collections: float = 0.0) -> Iterator[Path]:
    """A copy of a synthetic account's SQLite file, made once and kept in DATA.

    Runs only read it; each run's local Cliniko is new, so its rolling minute starts empty.
    """
    name = str(patients) if not collections else f"whole-{patients}"
    source = DATA / name
    if not (source / "cliniko.sqlite3").exists():
        source.mkdir(parents=True, exist_ok=True)
        print(f"  making the {name} account (once; kept in {DATA})", flush=True)
        started = time.monotonic()
        SandboxServer(sandbox_config(patients, collections, source)).stop()
        print(f"  made in {time.monotonic() - started:.0f} s", flush=True)
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as work:
        shutil.copy(source / "cliniko.sqlite3", Path(work) / "cliniko.sqlite3")
        yield Path(work)


def sandbox_config(
    patients: int, collections: float, data_dir: Path, latency_ms: float = 0, rate_limit: int = 0
) -> SandboxConfig:
    return SandboxConfig(
        patients=patients,
        collections=collections,
        seed=7,
        data_dir=data_dir,
        api_key=KEY,
        latency_ms=latency_ms,
        rate_limit_per_minute=rate_limit,
        rate_limit_header="both",
    )
