"""Real Singer targets, each in its own virtualenv (made once, reused), and a real PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGET_VENVS = ROOT / ".venv-targets"
TARGETS = {
    "target-jsonl": ["target-jsonl==0.1.4"],
    # 0.8.0 with duckdb >= 1.0 drops the first row of each batch (see meltano.yml).
    "target-duckdb": ["target-duckdb==0.6.0", "duckdb==0.10.3"],
    "target-postgres": ["meltanolabs-target-postgres==0.8.1"],
    "target-csv": ["meltanolabs-target-csv==0.5.0"],
}


def target_executable(name: str) -> Path:
    """The target's command, installing it into .venv-targets/<name> unless already there."""
    requirements = TARGETS[name]
    env_dir = TARGET_VENVS / name
    stamp = env_dir / ".installed"
    digest = hashlib.sha256(json.dumps(requirements).encode()).hexdigest()
    executable = env_dir / "bin" / name
    if not (stamp.exists() and stamp.read_text() == digest and executable.exists()):
        make_venv(env_dir, requirements)
        stamp.write_text(digest)
    return executable


def make_venv(env_dir: Path, requirements: list[str]) -> Path:
    """A fresh virtualenv at env_dir with requirements installed; returns its bin folder."""
    venv.EnvBuilder(with_pip=True, symlinks=True, clear=True).create(env_dir)
    pip = [env_dir / "bin" / "python", "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--disable-pip-version-check", *requirements], check=True)
    return env_dir / "bin"


def run_tap(config: dict[str, Any], workdir: Path, state: dict[str, Any] | None = None) -> bytes:
    """Run the tap's real CLI and return its Singer output."""
    config_file = workdir / "tap-config.json"
    config_file.write_text(json.dumps(config))
    args = [sys.executable, "-c", "from tap_cliniko.tap import main; main()"]
    args += ["--config", str(config_file)]
    if state is not None:
        state_file = workdir / "tap-state.json"
        state_file.write_text(json.dumps(state))
        args += ["--state", str(state_file)]
    result = subprocess.run(args, capture_output=True, check=False, timeout=300)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    return result.stdout


def run_target(name: str, config: dict[str, Any], messages: bytes, workdir: Path) -> list[dict]:
    """Pipe Singer messages into a real target process; return the STATE lines it emitted."""
    config_file = workdir / f"{name}-config.json"
    config_file.write_text(json.dumps(config))
    result = subprocess.run(
        [target_executable(name), "--config", str(config_file)],
        input=messages,
        capture_output=True,
        check=False,
        timeout=300,
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    return [json.loads(line) for line in result.stdout.decode().splitlines() if line.strip()]


def last_state(messages: bytes) -> dict[str, Any]:
    """The last STATE the tap wrote (what a runner would store for the next run)."""
    states = [
        json.loads(line)["value"]
        for line in messages.decode().splitlines()
        if line.startswith('{"type":"STATE"')
    ]
    assert states, "the tap wrote no state"
    return states[-1]


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real PostgreSQL server (pgserver: a PyPI package shipping the binaries)."""
    os.environ.setdefault("XDG_RUNTIME_DIR", str(tmp_path_factory.mktemp("xdg")))
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pgdata"), cleanup_mode="stop")
    try:
        yield server
    finally:
        server.cleanup()
