"""Set up and run tap-cliniko's jobs with nothing but Python 3.11 and git.

    python3 dev.py demo    # local Cliniko -> meltano run tap-cliniko -> DuckDB, twice
    python3 dev.py test    # lint, types and the whole test suite (what CI runs)
    python3 dev.py test --quick           # lint, types, all but e2e, property, slow
    python3 dev.py test tests/test_paging.py  # lint, types, then pytest with these arguments
    python3 dev.py bench   # the speed benchmark (benchmarks/RESULTS.md)
    python3 dev.py plugin  # regenerate plugin.yaml (the Meltano Hub definition) from --about

Each job first makes or refreshes the virtualenvs it needs; a second run reuses them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import tomllib
import venv
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
MELTANO_VENV = ROOT / ".venv-meltano"
MELTANO_SPEC = "meltano==4.4.1"


def _python(env_dir: Path) -> Path:
    return env_dir / "bin" / "python"


def _ensure_venv(env_dir: Path, requirements: list[str], inputs: bytes = b"") -> Path:
    """Create env_dir and pip-install requirements unless its stamp says they are current."""
    digest = hashlib.sha256(" ".join(requirements).encode())
    digest.update(inputs)
    stamp = env_dir / ".installed"
    if stamp.exists() and stamp.read_text() == digest.hexdigest() and _python(env_dir).exists():
        return _python(env_dir)
    print(f"dev.py: installing into {env_dir.name} (first run takes a few minutes)", flush=True)
    if not _python(env_dir).exists():
        venv.EnvBuilder(with_pip=True, symlinks=os.name != "nt").create(env_dir)
    pip = [str(_python(env_dir)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, *requirements], check=True, cwd=ROOT)
    stamp.write_text(digest.hexdigest())
    return _python(env_dir)


def _install_inputs() -> bytes:
    """What an install of the project depends on: pyproject.toml less its tool settings."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project.pop("tool", None)  # ruff, mypy and pytest settings need no reinstall
    return json.dumps(project, sort_keys=True).encode()


def ensure_envs() -> Path:
    """Make the project venv (tap, sandbox, test tools) and Meltano's own venv, side by side."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        project = pool.submit(_ensure_venv, VENV, ["-e", ".[dev]"], _install_inputs())
        meltano = pool.submit(_ensure_venv, MELTANO_VENV, [MELTANO_SPEC])
        meltano.result()
        return project.result()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join(
        [str(VENV / "bin"), str(MELTANO_VENV / "bin"), env.get("PATH", "")]
    )
    env.setdefault("PYTHONUTF8", "1")
    return env


def _run(*cmd: str | Path) -> int:
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, env=_env()).returncode


def demo(args: list[str]) -> int:
    python = ensure_envs()
    return _run(python, "-m", "tap_cliniko.sandbox.demo", *args)


#: The whole suite on both cores: e2e tests share a worker, the longest stages start first.
PARALLEL = ["-n", "2", "--dist", "loadgroup", "--no-loadscope-reorder"]
QUICK = ["-m", "not e2e and not property and not slow"]
SLOWEST = "--durations=25"


class Stages:
    """Runs the test command's stages in order and tells each one's wall time at the end."""

    def __init__(self) -> None:
        self.times: list[tuple[str, float, int]] = []

    def run(self, name: str, *cmd: str | Path) -> int:
        start = time.monotonic()
        code = _run(*cmd)
        self.times.append((name, time.monotonic() - start, code))
        if code != 0:
            print(f"dev.py: {name} failed (exit {code})", file=sys.stderr)
        return code

    def report(self) -> None:
        print("\ndev.py: wall time of each stage", flush=True)
        for name, seconds, code in self.times:
            minutes, rest = divmod(round(seconds), 60)
            status = "ok" if code == 0 else f"failed, exit {code}"
            print(f"  {name:<28} {minutes:3d} min {rest:02d} s  {status}", flush=True)
        total = round(sum(seconds for _, seconds, _ in self.times))
        print(f"  {'total':<28} {total // 60:3d} min {total % 60:02d} s", flush=True)


def test(args: list[str]) -> int:
    """Lint, types, then pytest: the whole suite, `--quick` for the inner loop, or given args."""
    stages = Stages()
    start = time.monotonic()
    python = ensure_envs()
    stages.times.append(("set-up (virtualenvs)", time.monotonic() - start, 0))
    quick = "--quick" in args
    args = [a for a in args if a != "--quick"]
    try:
        for name, check in (
            ("ruff check", ["ruff", "check", "."]),
            ("ruff format --check", ["ruff", "format", "--check", "."]),
            ("mypy", ["mypy", "tap_cliniko", "dev.py", "tools"]),
        ):
            if code := stages.run(name, python, "-m", *check):
                return code
        if quick:  # further arguments go to pytest too (--quick with them was the whole suite)
            tier = [*PARALLEL, *QUICK, SLOWEST, *args]
            return stages.run("pytest --quick", python, "-m", "pytest", *tier)
        if args:
            return stages.run("pytest " + " ".join(args), python, "-m", "pytest", SLOWEST, *args)
        return stages.run("pytest (whole suite)", python, "-m", "pytest", *PARALLEL, SLOWEST)
    finally:
        stages.report()


def bench(args: list[str]) -> int:
    python = ensure_envs()
    return _run(python, "benchmarks/bench.py", *args)


def plugin(args: list[str]) -> int:
    python = ensure_envs()
    return _run(python, "tools/plugin_definition.py", *args)


JOBS = {"demo": demo, "test": test, "bench": bench, "plugin": plugin}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in JOBS:
        print(f"usage: python3 dev.py {{{'|'.join(JOBS)}}} [args...]", file=sys.stderr)
        return 2
    try:
        return JOBS[sys.argv[1]](sys.argv[2:])
    except subprocess.CalledProcessError as exc:
        print(f"dev.py: set-up step failed: {' '.join(map(str, exc.cmd))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
