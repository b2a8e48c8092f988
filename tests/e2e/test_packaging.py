"""The tap as users install it: a wheel in a fresh virtualenv, and `meltano run` offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

import tap_cliniko
from tests.conftest import SANDBOX_KEY, USER_AGENT
from tests.e2e.conftest import ROOT, Meltano, make_venv


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
    assert streams == {"patients", "archived_patients", "deleted_patients"}
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
    ids = {m["record"]["id"] for m in records if m["type"] == "RECORD"}
    assert ids == set(snapshot)


def test_meltano_run_into_target_jsonl_offline(
    meltano: Meltano, sandbox: Any, tmp_path: Path
) -> None:
    """Meltano with the project's plugins (in .venv-stack/, never the project's .meltano/)."""
    out = tmp_path / "out"
    out.mkdir()
    with sandbox(patients=80, seed=72, api_key="sandbox-key-au1") as server:
        meltano.env.update(
            TAP_CLINIKO_BASE_URL=server.base_url, TARGET_JSONL_DESTINATION_PATH=str(out)
        )
        meltano("--environment=local", "run", "--full-refresh", "tap-cliniko", "target-jsonl")
        snapshot = server.store.snapshot()
    loaded = set()
    for stream in ("patients", "archived_patients", "deleted_patients"):
        for line in (out / f"{stream}.jsonl").read_text().splitlines():
            loaded.add(json.loads(line)["id"])
    assert loaded == set(snapshot)


def test_release_build_passes_twine_check(tmp_path: Path) -> None:
    """`python -m build` makes an sdist and a wheel of the one version; twine accepts both."""
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert build.returncode == 0, (build.stdout + build.stderr)[-3000:]
    version = tap_cliniko.__version__
    built = sorted(path.name for path in dist.iterdir())
    assert built == [f"tap_cliniko-{version}-py3-none-any.whl", f"tap_cliniko-{version}.tar.gz"]
    check = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, dist.iterdir())],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count("PASSED") == 2, check.stdout
    assert f"## {version}" in (ROOT / "CHANGELOG.md").read_text(), "CHANGELOG lacks this version"


def test_ci_workflow_runs_the_readme_test_command() -> None:
    """GitHub Actions runs .ci/run on Python 3.11, and .ci/run is README's test command."""
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    steps = workflow["jobs"]["test"]["steps"]
    assert [s["run"] for s in steps if "run" in s] == ["bash .ci/run"]
    python = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python"))
    assert python["with"]["python-version"] == "3.11"
    assert workflow["jobs"]["test"]["env"]["CI"] == "true"
    assert "exec python3 dev.py test" in (ROOT / ".ci" / "run").read_text()
    assert "python3 dev.py test\n" in (ROOT / "README.md").read_text()
