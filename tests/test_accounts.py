"""The accounts file's loader (orchestration/cliniko_dagster/accounts.py): what it refuses."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOADER = ROOT / "orchestration" / "cliniko_dagster" / "accounts.py"


def load_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cliniko_accounts", LOADER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


accounts = load_module()
GOOD = """
accounts:
  - name: north
    api_key_env: CLINIKO_NORTH_API_KEY
  - name: south_2
    api_key_env: CLINIKO_SOUTH_API_KEY
    base_url: http://127.0.0.1:8765/v1
    settings: {max_requests_per_minute: 100, max_retry_seconds: 5}
"""


def test_the_example_file_loads() -> None:
    found = accounts.load_accounts(ROOT / "orchestration" / "accounts.example.yml")
    assert [a.name for a in found] == ["north", "south"]


def test_an_account_is_its_schema_state_id_and_environment() -> None:
    north, south = accounts.parse_accounts(GOOD, "accounts.yml")
    assert south.schema == "cliniko_south_2"
    assert south.state_id("local") == "local:tap-cliniko-to-target-duckdb:south_2"
    env = south.meltano_env({"CLINIKO_SOUTH_API_KEY": "k-au1"})
    assert env == {
        "TAP_CLINIKO_API_KEY": "k-au1",
        "TAP_CLINIKO_BASE_URL": "http://127.0.0.1:8765/v1",
        "TAP_CLINIKO_MAX_REQUESTS_PER_MINUTE": "100",
        "TAP_CLINIKO_MAX_RETRY_SECONDS": "5",
        "TARGET_DUCKDB_DEFAULT_TARGET_SCHEMA": "cliniko_south_2",
        "TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA": "cliniko_south_2",
        "MELTANO_RUN_STATE_ID_SUFFIX": "south_2",
    }
    assert "TAP_CLINIKO_BASE_URL" not in north.meltano_env({"CLINIKO_NORTH_API_KEY": "k"})
    with pytest.raises(accounts.AccountsError, match=r"^account 'north': CLINIKO_NORTH_API_KEY is"):
        north.meltano_env({"CLINIKO_NORTH_API_KEY": ""})
    assert accounts.dbt_vars([north, south]) == {
        "cliniko_accounts": {"north": "cliniko_north", "south_2": "cliniko_south_2"}
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("accounts: [", "accounts.yml: line 1 is not valid YAML"),
        ("- name: a", "accounts.yml: expected a mapping with an 'accounts' list"),
        ("accounts: []", "accounts.yml: 'accounts' lists no account"),
        ("accounts: [north]", "accounts.yml: entry 1: expected a mapping"),
        (
            "accounts: [{name: North, api_key_env: K}]",
            "accounts.yml: entry 1: name 'North' must be lower-case",
        ),
        (
            "accounts: [{name: a-b, api_key_env: K}]",
            "accounts.yml: entry 1: name 'a-b' must be lower-case",
        ),
        (
            "accounts: [{name: a, api_key_env: K}, {name: a, api_key_env: L}]",
            "accounts.yml: entry 2: duplicate name 'a'",
        ),
        ("accounts: [{name: a}]", "accounts.yml: entry 1 (a): api_key_env must name"),
        ("accounts: [{name: a, api_key_env: my-key}]", "api_key_env must name"),
        (
            "accounts: [{name: a, api_key_env: K, api_key: secret-au1}]",
            "accounts.yml: entry 1 (a): a key is never written here",
        ),
        ("accounts: [{name: a, api_key_env: K, shard: au1}]", "unknown field 'shard'"),
        ("accounts: [{name: a, api_key_env: K, base_url: ftp://x}]", "base_url must be"),
        (
            "accounts: [{name: a, api_key_env: K, settings: {api_key: s}}]",
            "entry 1 (a): unknown setting 'api_key'",
        ),
        (
            "accounts: [{name: a, api_key_env: K, settings: {per_page: [1]}}]",
            "setting 'per_page' must be",
        ),
    ],
)
def test_a_bad_file_is_refused_naming_the_entry(text: str, message: str) -> None:
    with pytest.raises(accounts.AccountsError) as refused:
        accounts.parse_accounts(text, "accounts.yml")
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)
    assert "secret" not in str(refused.value)


def test_a_missing_key_variable_is_refused_naming_the_account(tmp_path: Path) -> None:
    path = tmp_path / "accounts.yml"
    path.write_text(GOOD)
    with pytest.raises(accounts.AccountsError, match="'south_2': CLINIKO_SOUTH_API_KEY is not"):
        accounts.load_accounts(path, {"CLINIKO_NORTH_API_KEY": "k"})
    assert (
        len(
            accounts.load_accounts(
                path, {"CLINIKO_NORTH_API_KEY": "k", "CLINIKO_SOUTH_API_KEY": "k"}
            )
        )
        == 2
    )


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, LOADER, *args], capture_output=True, text=True, env=env, check=False
    )


def test_the_cli_refuses_in_one_line_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "accounts.yml"
    path.write_text("accounts: [{name: a, api_key_env: K}, {name: a, api_key_env: K}]")
    result = run_cli("check", str(path))
    assert result.returncode == 2
    assert result.stderr == f"accounts: {path}: entry 2: duplicate name 'a'\n"
    path.write_text(GOOD)
    result = run_cli("check", str(path), env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "CLINIKO_NORTH_API_KEY is not set" in result.stderr
    missing = run_cli("check", str(tmp_path / "none.yml"))
    assert missing.returncode == 2 and "cannot be read" in missing.stderr
    keys = {"PATH": "/usr/bin:/bin", "CLINIKO_NORTH_API_KEY": "k1", "CLINIKO_SOUTH_API_KEY": "k2"}
    listed = run_cli("check", str(path), env=keys)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [
        "north: key in CLINIKO_NORTH_API_KEY, schema cliniko_north",
        "south_2: key in CLINIKO_SOUTH_API_KEY, schema cliniko_south_2",
    ]


def test_the_cli_runs_only_a_listed_account_with_its_key(tmp_path: Path) -> None:
    path = tmp_path / "accounts.yml"
    path.write_text(GOOD)
    keys = {"PATH": "/usr/bin:/bin", "CLINIKO_NORTH_API_KEY": "k1", "CLINIKO_SOUTH_API_KEY": "k2"}
    unknown = run_cli("run", "west", str(path), env=keys)
    assert unknown.returncode == 2
    assert unknown.stderr == f"accounts: {path}: no account named 'west'\n"
    usage = run_cli("run")
    assert usage.returncode == 2 and usage.stderr.startswith("usage: ")
