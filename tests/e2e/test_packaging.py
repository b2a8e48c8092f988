"""The tap as users install it: a wheel in a fresh virtualenv, and `meltano run` offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tap_cliniko.resources import BY_NAME
from tap_cliniko.streams import STREAM_NAMES
from tests.conftest import SANDBOX_KEY, USER_AGENT
from tests.e2e.conftest import ROOT, make_venv


def test_wheel_in_a_fresh_virtualenv_carries_its_schemas(sandbox: Any, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), str(ROOT)],
        check=True,
    )
    wheel = next(dist.glob("tap_cliniko-*.whl"))
    tap = make_venv(tmp_path / "venv", [str(wheel)]) / "tap-cliniko"
    about = subprocess.run([tap, "--about", "--format=json"], capture_output=True, check=True)
    assert "api_key" in json.loads(about.stdout)["settings"]["properties"]
    discover = subprocess.run([tap, "--discover"], capture_output=True, check=True, cwd=tmp_path)
    streams = {s["tap_stream_id"] for s in json.loads(discover.stdout)["streams"]}
    assert streams == set(STREAM_NAMES)  # every stream's schema is in the wheel
    with sandbox(patients=50, seed=71) as server:
        config = tmp_path / "config.json"
        config.write_text(
            json.dumps(
                {"api_key": SANDBOX_KEY, "user_agent": USER_AGENT, "base_url": server.base_url}
            )
        )
        sync = subprocess.run([tap, "--config", str(config)], capture_output=True, cwd=tmp_path)
        snapshot = server.store.snapshot()
    assert sync.returncode == 0, sync.stderr.decode()[-2000:]
    records = [json.loads(line) for line in sync.stdout.decode().splitlines()]
    patients = ("patients", "archived_patients", "deleted_patients")
    ids = {m["record"]["id"] for m in records if m["type"] == "RECORD" and m["stream"] in patients}
    assert ids == set(snapshot)
    synced = {m["stream"] for m in records if m["type"] == "RECORD"}
    assert synced == {n for n in STREAM_NAMES if not (n in BY_NAME and BY_NAME[n].clinical)}


def test_meltano_run_into_target_jsonl_offline(sandbox: Any, tmp_path: Path) -> None:
    meltano = shutil.which("meltano") or str(ROOT / ".venv-meltano" / "bin" / "meltano")
    out = tmp_path / "out"
    out.mkdir()
    with sandbox(patients=80, seed=72, api_key="sandbox-key-au1") as server:
        env = {
            **os.environ,
            "MELTANO_PROJECT_ROOT": str(ROOT),
            "TAP_CLINIKO_BASE_URL": server.base_url,
            "TARGET_JSONL_DESTINATION_PATH": str(out),
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
        }
        env.pop("TAP_CLINIKO_API_KEY", None)
        for args in (["install"], ["run", "--full-refresh", "tap-cliniko", "target-jsonl"]):
            result = subprocess.run(
                [meltano, "--environment=local", *args],
                cwd=ROOT,
                env=env,
                capture_output=True,
                timeout=600,
                check=False,
            )
            assert result.returncode == 0, result.stderr.decode()[-3000:]
        snapshot = server.store.snapshot()
    loaded = set()
    for stream in ("patients", "archived_patients", "deleted_patients"):
        for line in (out / f"{stream}.jsonl").read_text().splitlines():
            loaded.add(json.loads(line)["id"])
    assert loaded == set(snapshot)
    # meltano.yml's select leaves the clinical streams out; everything else is loaded.
    files = {path.stem for path in out.glob("*.jsonl")}
    assert files == {n for n in STREAM_NAMES if not (n in BY_NAME and BY_NAME[n].clinical)}
