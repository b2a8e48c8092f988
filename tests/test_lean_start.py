"""A tap process loads only the SDK modules it runs (tap_cliniko/_sdk.py), and the SDK's
package is still whole for anything that asks it for a name."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from tests.conftest import selecting, tap_config

#: What the SDK's package __init__ imports that a tap never runs (the target side).
TARGET_SIDE = ("singer_sdk.target_base", "joblib", "numpy")

REPORT = textwrap.dedent(
    """
    import atexit, json, sys
    atexit.register(lambda: sys.stderr.write(
        "LOADED " + json.dumps([m for m in {names!r} if m in sys.modules]) + "\\n"))
    from tap_cliniko.tap import main
    main()
    """
)


def test_a_sync_loads_none_of_the_sdks_target_side(tmp_path: Path, sandbox: Any) -> None:
    with sandbox(patients=120, collections=0.2) as server:
        config = tap_config(server.base_url)
        streams = ("patients", "deleted_patients", "appointment_types", "invoices")
        (tmp_path / "config.json").write_text(json.dumps(config))
        (tmp_path / "catalog.json").write_text(json.dumps(selecting(config, streams)))
        files = [
            "--config",
            str(tmp_path / "config.json"),
            "--catalog",
            str(tmp_path / "catalog.json"),
        ]
        run = subprocess.run(
            [sys.executable, "-c", REPORT.format(names=TARGET_SIDE), *files],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert run.returncode == 0, run.stderr[-2000:]
    records = [json.loads(line) for line in run.stdout.splitlines() if '"RECORD"' in line]
    assert {r["stream"] for r in records} == set(streams)
    assert sum(r["stream"] == "patients" for r in records) > 50
    loaded = [line for line in run.stderr.splitlines() if line.startswith("LOADED ")]
    assert loaded == ["LOADED []"], loaded


WHOLE = textwrap.dedent(
    """
    import sys, warnings
    import tap_cliniko.tap
    import singer_sdk
    from tap_cliniko._sdk import completed
    assert not completed(singer_sdk), "the package __init__ ran at the tap's import"
    assert "singer_sdk.target_base" not in sys.modules
    from singer_sdk import typing as th, metrics  # modules of the package: no __init__
    assert not completed(singer_sdk)
    from singer_sdk import RESTStream, Stream, Tap, Target
    from singer_sdk.streams.rest import RESTStream as rest
    from singer_sdk.tap_base import Tap as tap
    from singer_sdk.target_base import Target as target
    assert completed(singer_sdk)
    assert (RESTStream, Tap, Target) == (rest, tap, target)
    assert sorted(singer_sdk.__all__)[:2] == ["BatchSink", "GraphQLStream"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from singer_sdk import SQLTap  # the package's own __getattr__, as before
    assert "deprecated" in str(caught[0].message)
    namespace = {}
    exec("from singer_sdk import *", namespace)
    assert {"Tap", "Target", "Sink", "InlineMapper"} <= set(namespace)
    import singer_sdk.testing  # the SDK's test helpers import the package's names
    print("whole")
    """
)


def test_the_sdk_package_is_whole_once_asked_for_a_name() -> None:
    run = subprocess.run(
        [sys.executable, "-c", WHOLE], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0 and run.stdout.strip() == "whole", run.stderr[-2000:]


def test_an_sdk_imported_first_is_left_as_it_is() -> None:
    script = (
        "import singer_sdk, tap_cliniko.tap; from tap_cliniko._sdk import completed;"
        " assert completed(singer_sdk) and 'Target' in vars(singer_sdk); print('as is')"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0 and run.stdout.strip() == "as is", run.stderr[-2000:]
