"""The tap as users install it: a wheel in a fresh virtualenv, and Meltano offline.

Meltano runs only in temporary copies of the project: the project's own .meltano/ (plugins
and the system database holding state) is never written, so a user's next `meltano run`
never resumes from a test's bookmarks.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import tap_cliniko
from tap_cliniko.resources import BY_NAME
from tap_cliniko.sandbox import SandboxConfig
from tap_cliniko.sandbox.cli import parse_args
from tap_cliniko.streams import STREAM_NAMES
from tests.conftest import SANDBOX_KEY, STATUS_STREAM, STREAMS, USER_AGENT
from tests.e2e.conftest import ROOT, Postgres, make_venv, prerequisite
from tools.plugin_definition import read_meltano_yml

MELTANO = shutil.which("meltano") or str(ROOT / ".venv-meltano" / "bin" / "meltano")
# What meltano.yml's select loads: every stream but the clinical ones.
DEFAULT_STREAMS = {n for n in STREAM_NAMES if not (n in BY_NAME and BY_NAME[n].clinical)}
# README's bash blocks that run elsewhere than in README's order in a copy of the project.
OPT_IN = "opt-in: tests/e2e/test_packaging.py"
FRESH_PROJECT = "fresh project: tests/e2e/test_packaging.py"
FRESH_LOCAL = "fresh project, local Cliniko: tests/e2e/test_packaging.py"
STACK = "tested by tests/e2e/test_stack.py"  # also run here, in order with the rest
# Health groups' commands name accounts of yours (tests/e2e/test_dagster_accounts.py runs their
# equivalent on local Clinikos).
ACCOUNTS = "accounts: your own, not run by the tests"
MARKERS = {"", OPT_IN, FRESH_PROJECT, FRESH_LOCAL, STACK, ACCOUNTS}
PLACEHOLDER = re.compile(r"<[a-z ]+>")


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
    assert synced == DEFAULT_STREAMS, "every stream but the clinical ones, by default"


def clone_files() -> list[str]:
    """The files a fresh clone of this working tree has (tracked, or new and not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    return [name for name in listed.stdout.decode().split("\0") if (ROOT / name).is_file()]


def fingerprint(folder: Path) -> dict[str, tuple[int, int]] | None:
    """Every file under folder with its size and modification time (None: no folder)."""
    if not folder.exists():
        return None
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


@pytest.fixture(scope="session")
def project_meltano() -> dict[str, tuple[int, int]] | None:
    """The project's own .meltano/ before any Meltano test ran."""
    return fingerprint(ROOT / ".meltano")


def meltano_env(**extra: str) -> dict[str, str]:
    """This environment without the tap's, Meltano's and targets' variables, plus extra."""
    prefixes = ("TAP_CLINIKO_", "MELTANO_", "TARGET_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env["PATH"] = os.pathsep.join([str(Path(MELTANO).parent), env.get("PATH", "")])
    env["MELTANO_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    return {**env, **extra}


@pytest.fixture
def project_copy(
    tmp_path: Path, project_meltano: dict[str, tuple[int, int]] | None
) -> Iterator[Callable[..., subprocess.CompletedProcess[str]]]:
    """A copy of the project (as a fresh clone has it) and a `meltano ...` runner inside it."""
    copy = tmp_path / "project"
    for name in clone_files():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, copy / name)
    git_commit_all(copy)

    def run(command: str, **env: str) -> subprocess.CompletedProcess[str]:
        args = shlex.split(command)
        if args[0] == "meltano":
            args[0] = MELTANO
        result = subprocess.run(
            args,
            cwd=copy,
            env=meltano_env(**env),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
        return result

    run.root = copy  # type: ignore[attr-defined]
    yield run


def git_commit_all(folder: Path) -> None:
    """Make folder a git repository holding its files as one commit (a fresh clone)."""
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "clone"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
            cwd=folder,
            check=True,
            capture_output=True,
        )


def git_listed_files(folder: Path) -> list[Path]:
    """The files `git status --porcelain` lists (changed, or new and not ignored)."""
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all", "-z"],
        cwd=folder,
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    return [folder / entry[3:] for entry in status.split("\0") if entry and entry[0] != "D"]


def assert_no_listed_file_holds(folder: Path, *secrets: str) -> None:
    """What `git add -A` would commit holds none of the secrets."""
    listed = git_listed_files(folder)
    assert listed, "nothing changed: the commands did not run?"
    holding = [
        str(path.relative_to(folder))
        for path in listed
        if path.is_file() and any(secret in path.read_text(errors="replace") for secret in secrets)
    ]
    assert not holding, f"git status lists files holding a secret: {holding}"


def readme_blocks() -> list[tuple[str, str]]:
    """README's bash blocks as (the marker comment just above it, or '', the block's text)."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"(?:<!-- ([^>]*?) -->\s*)?```bash\n(.*?)```", text, re.S)
    unknown = {marker for marker, _ in blocks} - MARKERS
    assert not unknown, f"README blocks with markers no test knows: {unknown}"
    return blocks


def block_commands(block: str) -> list[str]:
    """A block's commands, continuation lines joined, comments removed."""
    joined = block.replace("\\\n", " ")
    return [line.split("  #")[0].strip() for line in joined.splitlines() if line.strip()]


def readme_meltano_commands(*markers: str) -> list[str]:
    """Every `meltano ...` line of README's bash blocks with those markers, in order."""
    chosen = markers or ("", STACK)
    return [
        command
        for marker, block in readme_blocks()
        if marker in chosen
        for command in block_commands(block)
        if command.startswith("meltano ")
    ]


def readme_inline_meltano_commands() -> list[str]:
    """Every `` `meltano ...` `` of README's text (outside its code blocks), one space apart."""
    text = re.sub(r"```.*?```", "", (ROOT / "README.md").read_text(), flags=re.S)
    spans = re.findall(r"`(meltano [^`]+)`", text)
    return list(dict.fromkeys(" ".join(span.split()) for span in spans))


def substitute(command: str, values: dict[str, str]) -> str:
    """README's placeholders (`<your key>`, `<host>`, ...) replaced; none may be left."""
    for name, value in values.items():
        command = command.replace(f"'<{name}>'", shlex.quote(value)).replace(f"<{name}>", value)
    assert not PLACEHOLDER.search(command), f"README placeholder without a value: {command}"
    return command


def meltano_kind(setting: dict[str, Any]) -> str:
    """The Meltano setting kind that matches a property of the tap's config schema."""
    types = set(setting["type"]) - {"null"}
    if types == {"string"}:
        if setting.get("enum"):
            return "options"
        return "date_iso8601" if setting.get("format") == "date-time" else "string"
    kind = types.pop()
    return {"number": "decimal"}.get(kind, kind)


def test_meltano_yml_declares_every_setting_and_capability_the_tap_has() -> None:
    tap = Path(sys.executable).with_name("tap-cliniko")
    about = json.loads(
        subprocess.run([tap, "--about", "--format=json"], capture_output=True, check=True).stdout
    )
    project = read_meltano_yml()
    extractor = project["plugins"]["extractors"][0]
    declared = {s["name"]: s for s in extractor["settings"]}
    offered = about["settings"]["properties"]
    assert set(declared) == set(offered), "meltano.yml and --about list different settings"
    for name, setting in offered.items():
        assert declared[name]["kind"] == meltano_kind(setting), name
        assert bool(declared[name].get("sensitive")) == bool(setting.get("secret")), name
        if setting.get("enum"):
            values = [str(option["value"]) for option in declared[name]["options"]]
            assert values == setting["enum"], name
    assert set(extractor["capabilities"]) == set(about["capabilities"])


def rows_per_stream(read: Callable[[str], list[dict[str, Any]]]) -> dict[str, set[str]]:
    """The ids a destination holds, per stream."""
    return {stream: {str(row["id"]) for row in read(stream)} for stream in STREAMS}


def server_ids(snapshot: dict[str, Any]) -> dict[str, set[str]]:
    """The ids the local Cliniko lists, per stream."""
    found: dict[str, set[str]] = {stream: set() for stream in STREAMS}
    for patient_id, entry in snapshot.items():
        found[STATUS_STREAM[entry["status"]]].add(patient_id)
    return found


def test_after_the_demo_readme_meltano_commands_load_every_patient(
    project_copy: Any, sandbox: Any, postgres: Postgres
) -> None:
    """The demo leaves no state behind; then README's commands, as written, load everyone.

    Every `meltano` line of README's code blocks runs here, in README's order (but the opt-in
    block and the fresh project's, run by their own tests below), into DuckDB and PostgreSQL;
    then `git status` lists no file holding the API key or the database password.
    """
    root: Path = project_copy.root
    demo = project_copy(f"{sys.executable} -m tap_cliniko.sandbox.demo --patients 120")
    explore = demo.stdout.splitlines()[-1].strip()
    assert "patients" in project_copy(explore).stdout, "the demo's closing hint runs"
    assert "No state IDs found" in project_copy("meltano state list").stderr

    commands = readme_meltano_commands()
    assert any(c.startswith("meltano run") for c in commands), commands
    assert "meltano run cliniko-to-postgres" in commands, commands
    pg = postgres.settings
    password = "pg-password-in-env-only"  # the test server trusts its socket: any will do
    # A tenth of a clinic's other collections: a row in every stream, and a lean test.
    with sandbox(patients=2000, seed=73, collections=0.1) as server:
        values = {
            "your key": server.config.api_key,
            "user": pg["user"],
            "password": password,
            "host": pg["host"],
            "port": pg["port"],
            "database": pg["dbname"],
        }
        # Where a real account's shard URL would be: the plugin's own config, as README's
        # `config set` commands write it (an environment overriding it would be caught).
        project_copy(f"meltano config set tap-cliniko base_url {server.base_url}")
        shown = ""
        for command in commands:
            result = project_copy(substitute(command, values))
            if " show " in command:
                shown = result.stdout
        expected = server_ids(server.store.snapshot())
    assert "TAP_CLINIKO_API_KEY" in (root / ".env").read_text(), "the key went to .env"
    assert server.config.api_key not in (root / "meltano.yml").read_text()
    assert_no_listed_file_holds(root, server.config.api_key, password)
    assert (root / ".env") not in git_listed_files(root), ".env is ignored"

    duckdb = prerequisite("duckdb")
    with duckdb.connect(str(root / "output" / "cliniko.duckdb"), read_only=True) as db:
        loaded = {
            stream: {row[0] for row in db.sql(f"SELECT id FROM tap_cliniko.{stream}").fetchall()}
            for stream in STREAMS
        }
        tables = db.sql(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'tap_cliniko'"
        ).fetchall()
        statuses = dict(
            db.sql("SELECT status, count(*) FROM analytics.patients_current GROUP BY 1").fetchall()
        )
    assert loaded == expected, "README's meltano run did not load every patient"
    # meltano.yml's select leaves the clinical streams out; everything else is loaded.
    assert {row[0] for row in tables} == DEFAULT_STREAMS
    # README's query of the models prints each status with its count.
    for status, count in statuses.items():
        assert re.search(rf"\b{status}\b.*\b{count}\b", shown), (status, count, shown)
    in_postgres = postgres.rows("SELECT count(*) FROM analytics.patients_current")
    assert in_postgres == [str(sum(len(ids) for ids in expected.values()))]
    if any("target-csv" in command for command in commands):

        def csv_rows(stream: str) -> list[dict[str, Any]]:
            with (root / "output" / f"{stream}.csv").open(newline="", encoding="utf-8") as f:
                return list(csv.DictReader(f))

        assert rows_per_stream(csv_rows) == expected, "README's target-csv run lost patients"
        assert "pronouns__nominative" in csv_rows("patients")[0], "flattened, as README says"


def test_demo_clinics_loads_two_clinics_into_one_warehouse(project_copy: Any) -> None:
    """`python3 dev.py demo --clinics 2`: two local clinics, a schema each, models by account."""
    demo = project_copy(f"{sys.executable} -m tap_cliniko.sandbox.demo --clinics 2 --patients 40")
    assert "north    loaded into cliniko_north" in demo.stdout, demo.stdout
    assert "south    loaded into cliniko_south" in demo.stdout, demo.stdout
    shown = project_copy(demo.stdout.splitlines()[-1].strip()).stdout
    assert "north" in shown and "south" in shown, "the closing hint shows both clinics"


#: Each committed profile at a scale that keeps the demo short (large_clinic is 200,000
#: patients; its replay keeps the ids above 2^53 and what its routes do).
PROFILE_SCALES = {"small_clinic": 0.2, "large_clinic": 0.002, "no_variants": 0.2}


@pytest.mark.parametrize("profile", sorted(PROFILE_SCALES))
def test_the_demo_runs_on_each_committed_profile(project_copy: Any, profile: str) -> None:
    """`demo --profile tests/profiles/<name>.json`: the whole demo (load, a clinic's day, the
    incremental run, the models and their dbt tests) on a replay of each committed profile."""
    demo = project_copy(
        f"{sys.executable} -m tap_cliniko.sandbox.demo --profile tests/profiles/{profile}.json"
        f" --scale {PROFILE_SCALES[profile]}"
    )
    out = demo.stdout
    assert f"0. The account of tests/profiles/{profile}.json" in out, out
    assert re.search(r"^   patients: 1 new, \d+ updated", out, re.M), out
    assert re.search(r"^   appointments: 1 booked", out, re.M), out
    assert "patients_current built and tested" in out, out
    assert "7. Local Cliniko stopped" in out, out


def test_every_meltano_command_in_readme_text_parses(project_copy: Any) -> None:
    """Each `meltano ...` README names in its text is a command Meltano 4 knows, as written.

    Its code blocks run in full above; a command in the text gets Meltano's own argument
    parsing (`--help` appended, so nothing runs): `meltano config target-postgres set ...`
    (Meltano 3's order) exits 2 here.
    """
    inline = readme_inline_meltano_commands()
    assert "meltano select tap-cliniko --rm --exclude treatment_notes '*'" in inline
    for command in inline:
        assert "..." not in command, f"README elides arguments of a command: {command}"
        project_copy(f"{command} --help")


def test_first_config_set_changes_only_that_setting_in_meltano_yml(project_copy: Any) -> None:
    """meltano.yml is laid out as Meltano writes it: `config set` adds its lines, nothing else."""
    root: Path = project_copy.root
    project_copy("meltano config set tap-cliniko user_agent 'Acme reporting (data@acme.example)'")
    diff = subprocess.run(
        ["git", "diff", "--unified=0", "--no-color"], cwd=root, capture_output=True, text=True
    ).stdout
    changed = [
        line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")
    ]
    added = ["+    config:", "+      user_agent: Acme reporting (data@acme.example)"]
    assert changed == added, diff
    # The reasons for meltano.yml's choices are in the comments Meltano keeps (its top).
    text = (root / "meltano.yml").read_text()
    for reason in ("target-duckdb 0.8.0", "clinical", "dbt-core 1.12", "MELTANO_PROJECT_ROOT"):
        assert reason in text, reason


def invoked_streams(messages: str) -> dict[str, list[dict[str, Any]]]:
    """The records of each stream in `meltano invoke tap-cliniko`'s Singer output."""
    found: dict[str, list[dict[str, Any]]] = {}
    for line in messages.splitlines():
        if line.startswith("{"):
            message = json.loads(line)
            if message["type"] == "RECORD":
                found.setdefault(message["stream"], []).append(message["record"])
    return found


def test_readme_opt_in_command_loads_a_clinical_stream(project_copy: Any, sandbox: Any) -> None:
    """README's opt-in block, in the shipped project: treatment notes are read, content too."""
    root: Path = project_copy.root
    commands = readme_meltano_commands(OPT_IN)
    assert commands and commands[0].startswith("meltano select tap-cliniko --rm"), commands
    project_copy("meltano install --plugin-type extractor tap-cliniko")
    with sandbox(patients=30, seed=75, collections=0.1) as server:
        env = {
            "TAP_CLINIKO_API_KEY": server.config.api_key,
            "TAP_CLINIKO_USER_AGENT": USER_AGENT,
            "TAP_CLINIKO_BASE_URL": server.base_url,
        }
        before = invoked_streams(project_copy("meltano invoke tap-cliniko", **env).stdout)
        listed = ""
        for command in commands:
            listed = project_copy(command, **env).stdout
        after = invoked_streams(project_copy("meltano invoke tap-cliniko", **env).stdout)
        notes = server.store.snapshot("treatment_notes")
    assert set(before) <= DEFAULT_STREAMS and "patients" in before, "no clinical stream"
    assert set(after) == set(before) | {"treatment_notes"}
    live = {i for i, e in notes.items() if e["status"] != "deleted"}
    assert live, "the local Cliniko holds no treatment note to read"
    assert live <= {r["id"] for r in after["treatment_notes"]}
    assert any(r.get("content") for r in after["treatment_notes"]), "content left out"
    assert re.search(r"\[selected\s*\]\s+treatment_notes\.content", listed), listed
    diff = subprocess.run(["git", "diff", "--unified=0"], cwd=root, capture_output=True, text=True)
    removed = [line for line in diff.stdout.splitlines() if line[:1] in "+-" and line[1:2] == " "]
    assert removed == ["-    - '!treatment_notes.*'"], diff.stdout


def readme_local_cliniko_config(block: str) -> tuple[SandboxConfig, dict[str, str]]:
    """The fresh project's local-Cliniko block: its server's arguments, the settings it sets."""
    commands = block_commands(block)
    starts = [c for c in commands if shlex.split(c)[0].endswith("/cliniko-sandbox")]
    assert len(starts) == 1, commands
    server = parse_args(shlex.split(starts[0])[1:])
    settings: dict[str, str] = {}
    for command in commands:
        if command in starts:
            continue
        words = shlex.split(command)
        assert words[:4] == ["meltano", "config", "set", "tap-cliniko"], command
        assert len(words) == 6, command
        settings[words[4]] = words[5]
    return server, settings


def test_readme_hub_block_in_a_fresh_meltano_project(sandbox: Any, tmp_path: Path) -> None:
    """README's "Meltano Hub definition" blocks, as written, in a fresh `meltano init` project.

    In README's order: the first block up to its `meltano run` (the extractor from the clone, a
    copy of this working tree; the loader from the clone's plugins/target-jsonl.yml), then the
    local-Cliniko block (its `cliniko-sandbox` line checked against the config lines, which run
    with this test's server's address and key), then the `meltano run`. The loader's files hold
    every patient the server holds, the clinical streams are left out, the key stays out of
    what git would commit, and README's opt-in command then adds treatment notes.
    """
    clone = tmp_path / "tap-cliniko"
    for name in clone_files():
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, clone / name)
    blocks = dict((marker, block) for marker, block in readme_blocks() if marker)
    first = blocks[FRESH_PROJECT].replace("/path/to/tap-cliniko", str(clone))
    lines = first.rstrip("\n").splitlines()
    run_line = "meltano run tap-cliniko target-jsonl"
    assert block_commands(lines[-1]) == [run_line], "the block ends with the pipeline"
    setup = "\n".join(lines[:-1])
    local, settings = readme_local_cliniko_config(blocks[FRESH_LOCAL])
    assert settings == {
        "api_key": local.api_key,
        "base_url": f"http://{local.host}:{local.port}/v1",
        "max_requests_per_minute": "0",
    }, settings
    assert local.rate_limit_per_minute == 0, "the tap's throttle is off: so is the server's"
    work = tmp_path / "work"
    work.mkdir()

    def bash(script: str, cwd: Path, **env: str) -> str:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=cwd,
            env=meltano_env(**env),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, f"{script}\n{result.stderr[-3000:]}"
        return result.stdout

    with sandbox(patients=30, seed=76, collections=0.1) as server:
        key = server.config.api_key
        bash(substitute(setup, {"your key": key}), work)
        project = work / "my-clinic"
        ours = {"api_key": key, "base_url": server.base_url, "max_requests_per_minute": "0"}
        for setting in settings:
            bash(f"meltano config set tap-cliniko {setting} {shlex.quote(ours[setting])}", project)
        bash(run_line, project)
        snapshot = server.store.snapshot()
        plugins = read_meltano_yml(project / "meltano.yml")["plugins"]
        assert {kind: [p["name"] for p in found] for kind, found in plugins.items()} == {
            "extractors": ["tap-cliniko"],
            "loaders": ["target-jsonl"],
        }
        assert plugins["extractors"][0]["pip_url"] == str(clone)
        assert set(jsonl_ids(project / "output")) == set(snapshot), "README's run lost patients"
        loaded = {path.name.split("-")[0] for path in (project / "output").glob("*.jsonl")}
        assert loaded <= DEFAULT_STREAMS and "patients" in loaded, loaded
        subprocess.run(["git", "init", "-q"], cwd=project, check=True)
        assert_no_listed_file_holds(project, key)
        before = invoked_streams(bash("meltano invoke tap-cliniko", project))
        for command in readme_meltano_commands(OPT_IN):
            bash(command, project)
        after = invoked_streams(bash("meltano invoke tap-cliniko", project))
    # Every stream with rows on this small clinic, and none of the clinical ones.
    assert set(before) <= DEFAULT_STREAMS and len(before) > len(DEFAULT_STREAMS) - 5, before
    assert set(after) == set(before) | {"treatment_notes"}


def test_readme_local_cliniko_command_and_the_local_environment_agree() -> None:
    """README's `cliniko-sandbox` command serves what `local` asks: address, key, rate limit.

    `local` turns the tap's throttle off; a local Cliniko limiting requests would answer
    429s and make a sync wait (a minute each time).
    """
    block = next(b for _, b in readme_blocks() if b.lstrip().startswith("cliniko-sandbox"))
    server = parse_args(shlex.split(block_commands(block)[0])[1:])
    environments = {e["name"]: e for e in read_meltano_yml()["environments"]}
    local = environments["local"]["config"]["plugins"]["extractors"][0]["config"]
    assert local["base_url"] == f"http://127.0.0.1:{server.port}/v1"
    assert local["api_key"] == server.api_key
    budget = local["max_requests_per_minute"]
    limit = server.rate_limit_per_minute
    assert limit == 0 or 0 < budget <= limit, f"local sends {budget or 'any'}/min to {limit}/min"


def test_zz_project_meltano_folder_untouched_by_the_tests(
    project_meltano: dict[str, tuple[int, int]] | None,
) -> None:
    """Runs last in this file: the Meltano tests above wrote only into their copies."""
    assert fingerprint(ROOT / ".meltano") == project_meltano


def readme_alone_script() -> tuple[str, str]:
    """README's tap-alone block without its pip line: (first run, later runs)."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    block = next(b for b in blocks if "tap-cliniko --config config.json --discover" in b)
    lines = [line for line in block.splitlines() if not line.startswith("pip install")]
    script = "\n".join(lines)
    first, later = script.split("# Later runs", 1)
    return first, "# Later runs" + later


def jsonl_ids(folder: Path) -> list[str]:
    """Every patient id target-jsonl wrote into folder, in every run's files."""
    return [
        str(json.loads(line)["id"])
        for path in sorted(folder.glob("*patients*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def test_readme_tap_alone_commands_start_full_then_resume_from_the_targets_state(
    sandbox: Any, target_executable: Callable[[str], Path], tmp_path: Path
) -> None:
    first, later = readme_alone_script()
    path = [str(Path(sys.executable).parent), str(target_executable("target-jsonl").parent)]
    env = {**os.environ, "PATH": os.pathsep.join([*path, os.environ.get("PATH", "")])}
    env = {k: v for k, v in env.items() if not k.startswith("TAP_CLINIKO_")}

    def bash(script: str) -> None:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-3000:]

    with sandbox(patients=300, seed=74) as server:
        config = {"api_key": SANDBOX_KEY, "user_agent": USER_AGENT, "base_url": server.base_url}
        (tmp_path / "config.json").write_text(json.dumps(config))
        bash(first)
        assert set(jsonl_ids(tmp_path)) == set(server.store.snapshot()), "a full first run"
        before = json.loads((tmp_path / "state.json").read_text())["bookmarks"]
        changed = sorted(server.store.snapshot(), key=int)[:3]
        for patient_id in changed:
            server.store.update_patient(patient_id, {"notes": "changed"})
        loaded_before = len(jsonl_ids(tmp_path))
        time.sleep(1.1)  # the next run's files get another second in their names
        bash(later)
    after = json.loads((tmp_path / "state.json").read_text())["bookmarks"]
    assert after["patients"]["replication_key_value"] > before["patients"]["replication_key_value"]
    again = jsonl_ids(tmp_path)[loaded_before:]
    assert set(changed) <= set(again), "the changes were read"
    assert len(again) < 30, "the later run read only changes, not everything again"


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
