"""Real Singer targets in their own virtualenvs, a real PostgreSQL, and a tap-to-target pipe."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import threading
import venv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TARGET_VENVS = ROOT / ".venv-targets"
# Meltano's plugins for the tests: never the project's own .meltano/ (MELTANO_SYS_DIR_ROOT).
MELTANO_SYS_DIR = ROOT / ".venv-stack" / "meltano"
PIPE_TIMEOUT = 300
MELTANO_TIMEOUT = 900


def prerequisite(module: str) -> ModuleType:
    """Import a test prerequisite: missing fails the test under CI, skips it elsewhere."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        message = f"e2e prerequisite missing: {module} ({exc}); pip install -e '.[dev]'"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)


def loader_pins() -> dict[str, list[str]]:
    """Each loader's pip requirements, as meltano.yml pins them (one place for versions)."""
    project = yaml.safe_load((ROOT / "meltano.yml").read_text())
    return {loader["name"]: loader["pip_url"].split() for loader in project["plugins"]["loaders"]}


def install_target(name: str) -> Path:
    """The target's executable in .venv-targets/<name>, (re)installed when its pins change."""
    requirements = loader_pins()[name]
    env_dir = TARGET_VENVS / name
    executable = env_dir / "bin" / name
    digest = hashlib.sha256(json.dumps([sys.version, *requirements]).encode()).hexdigest()
    with installing(env_dir, digest, executable) as needed:
        if needed:
            make_venv(env_dir, requirements)
    return executable


@contextlib.contextmanager
def locked(env_dir: Path) -> Iterator[None]:
    """An exclusive lock on env_dir (a file beside it) for as long as the block runs."""
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(env_dir.parent / f".{env_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def installing(env_dir: Path, digest: str, needed_file: Path) -> Iterator[bool]:
    """Hold env_dir's install lock; yields whether it must be (re)built, stamps it after.

    Two pytest workers (or two test sessions) may want the same venv at once: one builds
    it while the other waits, then finds the stamp and uses it.
    """
    stamp = env_dir / ".installed"
    with locked(env_dir):
        needed = not (stamp.exists() and stamp.read_text() == digest and needed_file.exists())
        yield needed
        if needed:
            stamp.write_text(digest)


def make_venv(env_dir: Path, requirements: list[str]) -> Path:
    """A fresh virtualenv at env_dir with requirements installed; returns its bin folder."""
    venv.EnvBuilder(with_pip=True, symlinks=True, clear=True).create(env_dir)
    pip = [env_dir / "bin" / "python", "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--disable-pip-version-check", *requirements], check=True)
    return env_dir / "bin"


@pytest.fixture(scope="session")
def target_executable() -> Callable[[str], Path]:
    """Install (once per pinned version) and return a target's executable by its name."""
    return install_target


def tap_executable() -> Path:
    """The `tap-cliniko` console script of the environment running the tests."""
    script = Path(sys.executable).with_name("tap-cliniko")
    if not script.exists():
        pytest.fail(f"{script} is missing: pip install -e '.[dev]'")
    return script


@dataclass
class PipeRun:
    """One tap | target run: what the tap wrote and the STATE lines the target emitted."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    target_states: list[dict[str, Any]] = field(default_factory=list)

    def records(self, stream: str) -> list[dict[str, Any]]:
        """The records the tap wrote for a stream, in order."""
        return [
            m["record"] for m in self.messages if m["type"] == "RECORD" and m["stream"] == stream
        ]

    @property
    def tap_state(self) -> dict[str, Any]:
        """The last STATE the tap wrote."""
        states = [m["value"] for m in self.messages if m["type"] == "STATE"]
        assert states, "the tap wrote no STATE"
        return states[-1]

    @property
    def state(self) -> dict[str, Any]:
        """The state a runner keeps for the next run: the last one the target confirmed."""
        assert self.target_states, "the target emitted no STATE"
        return self.target_states[-1]


def _tee(source: IO[bytes], sink: IO[bytes], copy: list[bytes]) -> None:
    """Copy the tap's stdout into the target's stdin, keeping each line; drain if it dies."""
    open_sink = True
    for line in source:
        copy.append(line)
        if open_sink:
            try:
                sink.write(line)
            except BrokenPipeError:
                open_sink = False  # the target failed; its exit code tells
    with contextlib.suppress(BrokenPipeError):
        sink.close()


def run_pipe(
    tap_config: dict[str, Any],
    target: Path,
    target_config: dict[str, Any],
    workdir: Path,
    state: dict[str, Any] | None = None,
    catalog: dict[str, Any] | None = None,
    tap_code: int = 0,
) -> PipeRun:
    """Run `tap-cliniko --config ... [--state ...] | target --config ...` as real processes.

    tap_code: the exit code the tap must end with (1: a run meant to fail).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    tap_args = [tap_executable(), "--config", workdir / "tap-config.json"]
    (workdir / "tap-config.json").write_text(json.dumps(tap_config))
    if catalog is not None:
        (workdir / "catalog.json").write_text(json.dumps(catalog))
        tap_args += ["--catalog", workdir / "catalog.json"]
    if state is not None:
        (workdir / "state.json").write_text(json.dumps(state))
        tap_args += ["--state", workdir / "state.json"]
    (workdir / "target-config.json").write_text(json.dumps(target_config))
    target_args = [target, "--config", workdir / "target-config.json"]
    copy: list[bytes] = []
    with (
        (workdir / "tap.err").open("wb") as tap_err,
        (workdir / "target.out").open("wb") as target_out,
        (workdir / "target.err").open("wb") as target_err,
    ):
        tap = subprocess.Popen(tap_args, stdout=subprocess.PIPE, stderr=tap_err, cwd=workdir)
        sink = subprocess.Popen(
            target_args, stdin=subprocess.PIPE, stdout=target_out, stderr=target_err, cwd=workdir
        )
        assert tap.stdout is not None and sink.stdin is not None
        pump = threading.Thread(target=_tee, args=(tap.stdout, sink.stdin, copy), daemon=True)
        pump.start()
        try:
            exit_code, target_code = tap.wait(PIPE_TIMEOUT), sink.wait(PIPE_TIMEOUT)
        finally:
            for process in (tap, sink):
                if process.poll() is None:
                    process.kill()
        pump.join(PIPE_TIMEOUT)
        tap.stdout.close()
    assert exit_code == tap_code, (workdir / "tap.err").read_text()[-3000:]
    assert target_code == 0, (workdir / "target.err").read_text()[-3000:]
    target_lines = (workdir / "target.out").read_text().splitlines()
    return PipeRun(
        messages=[json.loads(line) for line in copy if line.strip()],
        target_states=[json.loads(line) for line in target_lines if line.startswith("{")],
    )


@dataclass
class Postgres:
    """A running PostgreSQL (pgserver) with a psql that returns rows as text lines."""

    server: Any

    @property
    def uri(self) -> str:
        """A SQLAlchemy URL for psycopg 3 over the server's Unix socket."""
        return str(self.server.get_uri()).replace("postgresql://", "postgresql+psycopg://", 1)

    @property
    def settings(self) -> dict[str, str]:
        """host (the Unix socket's folder), port, user and dbname, as dbt-postgres takes them."""
        info = self.server.get_postmaster_info()
        host = info.socket_dir or info.hostname
        return {"host": str(host), "port": str(info.port), "user": "postgres", "dbname": "postgres"}

    def rows(self, sql: str) -> list[str]:
        """Run one query; each result row as one unaligned text line."""
        settings = "\\set QUIET on\n\\pset format unaligned\n\\pset tuples_only on\n"
        return [line for line in str(self.server.psql(f"{settings}{sql};\n")).splitlines() if line]


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    """A real PostgreSQL server for the session, from the pgserver package (binaries on PyPI)."""
    os.environ.setdefault("XDG_RUNTIME_DIR", str(tmp_path_factory.mktemp("xdg")))
    pgserver = prerequisite("pgserver")
    server = pgserver.get_server(tmp_path_factory.mktemp("pgdata"), cleanup_mode="stop")
    try:
        yield Postgres(server)
    finally:
        server.cleanup()


def meltano_executable() -> str:
    """Meltano from PATH (dev.py puts .venv-meltano/bin there), else the project's own."""
    found = shutil.which("meltano") or str(ROOT / ".venv-meltano" / "bin" / "meltano")
    if not Path(found).exists():
        pytest.fail("meltano is missing: run the tests with `python3 dev.py test`")
    return found


def isolated_environ(workdir: Path) -> dict[str, str]:
    """This process's environment for Meltano, minus plugin settings, with a throwaway database.

    Plugins live in .venv-stack/meltano (installed once); the system database, dbt's target
    and logs live in workdir, so a test never writes the project's .meltano/ or transform/.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    plugin_prefixes = ("TAP_CLINIKO_", "TARGET_", "DBT_", "MELTANO_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(plugin_prefixes)}
    env.update(
        MELTANO_SYS_DIR_ROOT=str(MELTANO_SYS_DIR),
        MELTANO_DATABASE_URI=f"sqlite:///{workdir / 'meltano.db'}",
        MELTANO_SEND_ANONYMOUS_USAGE_STATS="false",
        MELTANO_ENVIRONMENT="local",
        DBT_TARGET_PATH=str(workdir / "dbt-target"),
        DBT_LOG_PATH=str(workdir / "dbt-logs"),
    )
    return env


@dataclass
class Meltano:
    """`meltano` on this project, with the test's own system database and plugin settings."""

    env: dict[str, str]
    log: Path

    def __call__(self, *args: str) -> str:
        """Run `meltano ARGS` from the project root; fail with its last output unless it exits 0."""
        result = subprocess.run(
            [meltano_executable(), *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=MELTANO_TIMEOUT,
            check=False,
        )
        with self.log.open("a", encoding="utf-8") as log:
            log.write(f"$ meltano {' '.join(args)}\n{result.stdout}{result.stderr}\n")
        assert result.returncode == 0, f"meltano {' '.join(args)}: {result.stderr[-4000:]}"
        return result.stdout


@pytest.fixture(scope="session")
def meltano_plugins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every plugin of meltano.yml installed once per session into .venv-stack/meltano."""
    workdir = tmp_path_factory.mktemp("meltano-install")
    with locked(MELTANO_SYS_DIR):  # another worker may be installing: wait, then skip
        Meltano(isolated_environ(workdir), workdir / "meltano.log")("install")
    return MELTANO_SYS_DIR


@pytest.fixture
def meltano(meltano_plugins: Path, tmp_path: Path) -> Meltano:
    """A Meltano for one test: shared plugins, its own system database (state), dbt folders."""
    return Meltano(isolated_environ(tmp_path / "meltano"), tmp_path / "meltano.log")


@pytest.fixture(scope="session")
def dagster_python() -> Path:
    """Python of .venv-stack/dagster: orchestration/requirements.txt, (re)built when it changes."""
    requirements = ROOT / "orchestration" / "requirements.txt"
    env_dir = ROOT / ".venv-stack" / "dagster"
    digest = hashlib.sha256(sys.version.encode() + requirements.read_bytes()).hexdigest()
    with installing(env_dir, digest, env_dir / "bin" / "python") as needed:
        if needed:
            make_venv(env_dir, ["-r", str(requirements)])
    return env_dir / "bin" / "python"
