"""`tap-cliniko --test`: the SDK's connection check, one record per stream, as users run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import SANDBOX_KEY, STREAMS, tap_config

TAP = Path(sys.executable).with_name("tap-cliniko")


def run_test_flag(config: dict[str, Any], workdir: Path) -> subprocess.CompletedProcess[str]:
    """Run `tap-cliniko --config FILE --test` as a user would."""
    path = workdir / "config.json"
    path.write_text(json.dumps(config))
    return subprocess.run(
        [TAP, "--config", path, "--test"], capture_output=True, text=True, timeout=120, check=False
    )


def test_connection_check_reads_one_record_per_stream(sandbox: Any, tmp_path: Path) -> None:
    with sandbox(patients=40, seed=91) as server:
        result = run_test_flag(tap_config(server.base_url), tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    messages = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    records = [m["stream"] for m in messages if m["type"] == "RECORD"]
    assert len(records) == len(set(records)), "one record per stream, no more"
    assert set(STREAMS) <= set(records), "every patient stream was read"
    # The SDK stops each stream after one record on purpose; that is not an error to show.
    assert " ERROR " not in result.stderr, result.stderr[-2000:]
    assert SANDBOX_KEY not in result.stdout + result.stderr


def test_connection_check_with_a_wrong_key_fails_in_one_line(sandbox: Any, tmp_path: Path) -> None:
    with sandbox(patients=5, seed=92) as server:
        config = tap_config(server.base_url, api_key="wrong0key0value-au1")
        result = run_test_flag(config, tmp_path)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("tap-cliniko: error: HTTP 401"), last
    assert "Traceback" not in result.stderr
    assert "wrong0key0value" not in result.stdout + result.stderr


def test_schema_test_prints_every_streams_schema_and_no_record(
    sandbox: Any, tmp_path: Path
) -> None:
    """`--test=schema` asks Cliniko nothing: no answer would release the held SCHEMA lines."""
    with sandbox(patients=5, seed=93) as server:
        config = tap_config(server.base_url)
        path = tmp_path / "config.json"
        path.write_text(json.dumps(config))
        catalog = subprocess.run(
            [TAP, "--config", path, "--discover"], capture_output=True, text=True, check=True
        )
        result = subprocess.run(
            [TAP, "--config", path, "--test=schema"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        asked = len(server.requests)
    assert result.returncode == 0, result.stderr[-2000:]
    messages = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert {m["type"] for m in messages} == {"SCHEMA"}, "SCHEMA lines only, no RECORD or STATE"
    streams = [m["stream"] for m in messages]
    # The SDK's test selects every stream, as --test does (README: Checking the connection).
    every = {entry["tap_stream_id"] for entry in json.loads(catalog.stdout)["streams"]}
    assert sorted(streams) == sorted(every), "one SCHEMA per stream"
    assert asked == 0, "nothing was asked of Cliniko"
