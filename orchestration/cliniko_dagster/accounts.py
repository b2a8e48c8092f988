"""The accounts file: one entry per Cliniko account (a clinic), read by Dagster, dbt and the CLI.

    python orchestration/cliniko_dagster/accounts.py check [FILE]    # one line per account
    python orchestration/cliniko_dagster/accounts.py run NAME [FILE] # meltano run for one account

Each account loads into its own schema (`cliniko_<name>`) with its own Meltano state id
(`--state-id-suffix <name>`); its key is read from the environment variable the entry names,
never from the file. Pure Python and PyYAML only, so it runs in Dagster's environment, the
tap's (the tests) and any Python with PyYAML (the CLI).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(os.environ.get("MELTANO_PROJECT_ROOT") or Path(__file__).resolve().parents[2])
DEFAULT_FILE = PROJECT_ROOT / "orchestration" / "accounts.yml"
FILE_VARIABLE = "CLINIKO_ACCOUNTS_FILE"
# A name is a schema suffix, a state id suffix, a Dagster partition key and a dbt value.
NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
ENTRY_KEYS = {"name", "api_key_env", "base_url", "settings"}
# Settings an entry may set (tap-cliniko's, as meltano.yml lists them), minus the two the entry
# has its own field for, the key never being one of them.
NOT_SETTINGS = {"api_key", "base_url", "stream_maps", "stream_map_config", "batch_config"}
SCHEMA_PREFIX = "cliniko_"
PIPELINE = ("tap-cliniko", "target-duckdb")


class AccountsError(Exception):
    """The accounts file is refused; the message names the file and the entry, in one line."""


@dataclass(frozen=True)
class Account:
    """One Cliniko account: its name, where its key is, and its own settings."""

    name: str
    api_key_env: str
    base_url: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def schema(self) -> str:
        """The schema its rows load into."""
        return SCHEMA_PREFIX + self.name

    def state_id(self, environment: str = "prod", pipeline: tuple[str, str] = PIPELINE) -> str:
        """Its Meltano state id (`meltano state get/clear` take it)."""
        return f"{environment}:{pipeline[0]}-to-{pipeline[1]}:{self.name}"

    def meltano_env(self, environ: Mapping[str, str]) -> dict[str, str]:
        """The variables its `meltano run` adds: key, base URL, settings, schema, state suffix."""
        key = environ.get(self.api_key_env)
        if not key:
            raise AccountsError(f"account {self.name!r}: {self.api_key_env} is not set")
        env = {
            "TAP_CLINIKO_API_KEY": key,
            "TARGET_DUCKDB_DEFAULT_TARGET_SCHEMA": self.schema,
            "TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA": self.schema,
            "MELTANO_RUN_STATE_ID_SUFFIX": self.name,
        }
        if self.base_url:
            env["TAP_CLINIKO_BASE_URL"] = self.base_url
        for setting, value in self.settings.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            env[f"TAP_CLINIKO_{setting.upper()}"] = text
        return env


def tap_settings(project_root: Path = PROJECT_ROOT) -> set[str]:
    """tap-cliniko's setting names from meltano.yml, less those an entry may not set."""
    project = yaml.safe_load((project_root / "meltano.yml").read_text())
    tap = next(e for e in project["plugins"]["extractors"] if e["name"] == "tap-cliniko")
    return {s["name"] for s in tap["settings"]} - NOT_SETTINGS


def accounts_file(environ: Mapping[str, str] = os.environ) -> Path | None:
    """The accounts file in use: $CLINIKO_ACCOUNTS_FILE, else orchestration/accounts.yml if any."""
    if configured := environ.get(FILE_VARIABLE):
        return Path(configured)
    return DEFAULT_FILE if DEFAULT_FILE.exists() else None


def parse_accounts(text: str, where: str, allowed: set[str] | None = None) -> list[Account]:
    """The accounts a file's text lists; AccountsError naming the entry for the first fault."""
    allowed = tap_settings() if allowed is None else allowed
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise AccountsError(f"{where}:{line} is not valid YAML") from None
    if not isinstance(data, dict) or not isinstance(data.get("accounts"), list):
        raise AccountsError(f"{where}: expected a mapping with an 'accounts' list")
    if not data["accounts"]:
        raise AccountsError(f"{where}: 'accounts' lists no account")
    accounts: list[Account] = []
    for number, entry in enumerate(data["accounts"], start=1):
        accounts.append(parse_entry(entry, f"{where}: entry {number}", allowed))
        names = [account.name for account in accounts]
        if names.count(names[-1]) > 1:
            raise AccountsError(f"{where}: entry {number}: duplicate name {names[-1]!r}")
    return accounts


def parse_entry(entry: Any, where: str, allowed: set[str]) -> Account:
    """One entry of the file, checked."""
    if not isinstance(entry, dict):
        raise AccountsError(f"{where}: expected a mapping (name, api_key_env, ...)")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise AccountsError(
            f"{where}: name {name!r} must be lower-case letters, digits and _ (a letter first)"
        )
    where = f"{where} ({name})"
    unknown = sorted(set(entry) - ENTRY_KEYS)
    if "api_key" in unknown:
        raise AccountsError(f"{where}: a key is never written here; name its api_key_env")
    if unknown:
        raise AccountsError(f"{where}: unknown field {unknown[0]!r}")
    api_key_env = entry.get("api_key_env")
    if not isinstance(api_key_env, str) or not ENV_NAME.match(api_key_env):
        raise AccountsError(f"{where}: api_key_env must name an environment variable")
    base_url = entry.get("base_url")
    if base_url is not None and (
        not isinstance(base_url, str) or not base_url.startswith(("http://", "https://"))
    ):
        raise AccountsError(f"{where}: base_url must be an http(s) URL")
    settings = entry.get("settings") or {}
    if not isinstance(settings, dict):
        raise AccountsError(f"{where}: settings must be a mapping")
    for setting, value in settings.items():
        if setting not in allowed:
            raise AccountsError(f"{where}: unknown setting {setting!r}")
        if not isinstance(value, str | int | float | bool):
            raise AccountsError(f"{where}: setting {setting!r} must be a number, text or boolean")
    return Account(name, api_key_env, base_url, dict(settings))


def load_accounts(
    path: Path, environ: Mapping[str, str] | None = None, allowed: set[str] | None = None
) -> list[Account]:
    """The accounts of a file; with environ, each one's key variable must be set in it."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise AccountsError(f"{path}: cannot be read ({exc.strerror})") from None
    accounts = parse_accounts(text, str(path), allowed)
    for account in accounts if environ is not None else ():
        if not environ.get(account.api_key_env):
            raise AccountsError(
                f"{path}: account {account.name!r}: {account.api_key_env} is not set"
            )
    return accounts


def dbt_vars(accounts: list[Account]) -> dict[str, Any]:
    """dbt's `cliniko_accounts` var: each account's name and the schema its rows are in."""
    return {"cliniko_accounts": {account.name: account.schema for account in accounts}}


def run_account(account: Account, meltano: str, environ: Mapping[str, str]) -> int:
    """`meltano run tap-cliniko target-duckdb` for one account; its exit code."""
    env = {**environ, **account.meltano_env(environ), "MELTANO_PROJECT_ROOT": str(PROJECT_ROOT)}
    return subprocess.run([meltano, "run", *PIPELINE], cwd=PROJECT_ROOT, env=env).returncode


def main(argv: list[str]) -> int:
    """check [FILE] | run NAME [FILE]; a refused file is one line on stderr and exit 2."""
    usage = "usage: accounts.py check [FILE] | run NAME [FILE]"
    if not argv or argv[0] not in ("check", "run") or (argv[0] == "run" and len(argv) < 2):
        print(usage, file=sys.stderr)
        return 2
    rest = argv[2:] if argv[0] == "run" else argv[1:]
    path = Path(rest[0]) if rest else accounts_file()
    if path is None:
        print(f"no accounts file: set {FILE_VARIABLE} or write {DEFAULT_FILE}", file=sys.stderr)
        return 2
    try:
        accounts = load_accounts(path, os.environ)
        if argv[0] == "check":
            for account in accounts:
                print(f"{account.name}: key in {account.api_key_env}, schema {account.schema}")
            return 0
        chosen = next((a for a in accounts if a.name == argv[1]), None)
        if chosen is None:
            raise AccountsError(f"{path}: no account named {argv[1]!r}")
        return run_account(chosen, os.environ.get("MELTANO_BIN", "meltano"), os.environ)
    except AccountsError as exc:
        print(f"accounts: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
