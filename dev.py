"""Set up and run tap-cliniko's jobs with nothing but Python 3.11 and git.

    python3 dev.py demo    # local Cliniko -> meltano run tap-cliniko -> DuckDB, twice
    python3 dev.py test    # lint, types and the whole test suite (what CI runs)
    python3 dev.py bench   # the speed benchmark (benchmarks/RESULTS.md)
    python3 dev.py plugin  # regenerate plugin.yaml (the Meltano Hub definition) from --about

Each job first makes or refreshes the virtualenvs it needs; a second run reuses them.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
MELTANO_VENV = ROOT / ".venv-meltano"
MELTANO_SPEC = "meltano==4.4.1"
NO_LOSS_TESTS = "tests/test_no_loss.py"


def _python(env_dir: Path) -> Path:
    return env_dir / "bin" / "python"


def _ensure_venv(env_dir: Path, requirements: list[str], stamp_inputs: list[Path]) -> Path:
    """Create env_dir and pip-install requirements unless its stamp says they are current."""
    digest = hashlib.sha256(" ".join(requirements).encode())
    for path in stamp_inputs:
        digest.update(path.read_bytes())
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


def ensure_envs() -> Path:
    """Make the project venv (tap, sandbox, test tools) and Meltano's own venv."""
    python = _ensure_venv(VENV, ["-e", ".[dev]"], [ROOT / "pyproject.toml"])
    _ensure_venv(MELTANO_VENV, [MELTANO_SPEC], [])
    return python


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


def test(args: list[str]) -> int:
    python = ensure_envs()
    checks: list[list[str | Path]] = [
        [python, "-m", "ruff", "check", "."],
        [python, "-m", "ruff", "format", "--check", "."],
        [python, "-m", "mypy", "tap_cliniko", "dev.py", "tools"],
    ]
    for check in checks:
        if (code := _run(*check)) != 0:
            print(f"dev.py: {' '.join(map(str, check[1:]))} failed", file=sys.stderr)
            return code
    if args:
        return _run(python, "-m", "pytest", *args)
    # The no-loss property tests run hundreds of schedules, each a local Cliniko and the tap
    # in one process (one core, one GIL): they get both cores, the rest of the suite first.
    code = _run(python, "-m", "pytest", f"--ignore={NO_LOSS_TESTS}")
    return code or _run(python, "-m", "pytest", "-n", "2", NO_LOSS_TESTS)


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
