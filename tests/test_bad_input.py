"""Bad input: one clear line, a non-zero exit, no traceback, nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SANDBOX_KEY, USER_AGENT

TAP = [sys.executable, "-c", "from tap_cliniko.tap import main; main()"]
GOOD = {"api_key": "MS0xLWV4YW1wbGU-au1", "user_agent": USER_AGENT}


def run_cli(
    tmp_path: Path, config: dict[str, Any], *, state: str | None = None, catalog: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed tap's entry point on files in tmp_path."""
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config))
    args = [*TAP, "--config", str(config_file)]
    if state is not None:
        (tmp_path / "state.json").write_text(state)
        args += ["--state", str(tmp_path / "state.json")]
    if catalog is not None:
        (tmp_path / "catalog.json").write_text(catalog)
        args += ["--catalog", str(tmp_path / "catalog.json")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAP_CLINIKO_")}
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, check=False)


def assert_refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """Non-zero exit, one error line naming the problem, no traceback, no output."""
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("tap-cliniko: error:")]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert word in errors[0], errors[0]
    assert "Traceback" not in result.stderr
    assert '"type":"RECORD"' not in result.stdout.replace(" ", "")
    assert '"type":"STATE"' not in result.stdout.replace(" ", "")


CONFIG_CASES = {
    "missing api_key": ({"user_agent": USER_AGENT}, "api_key is missing"),
    "empty api_key": ({**GOOD, "api_key": "  "}, "api_key is missing"),
    "malformed shard suffix": ({**GOOD, "api_key": "MS0xLWV4YW1wbGU-AU1"}, "shard suffix"),
    "user_agent without e-mail": ({**GOOD, "user_agent": "Acme reporting"}, "user_agent"),
    "start_date not a date-time": ({**GOOD, "start_date": "last tuesday"}, "start_date"),
    "plain http to a remote host": ({**GOOD, "base_url": "http://cliniko.example/v1"}, "base_url"),
    "per_page 0": ({**GOOD, "per_page": 0}, "per_page"),
    "per_page 101": ({**GOOD, "per_page": 101}, "per_page"),
    "unknown privacy mode": ({**GOOD, "privacy_redaction": "hash"}, "privacy_redaction"),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_bad_config_is_refused_in_one_line(tmp_path: Path, case: str) -> None:
    config, words = CONFIG_CASES[case]
    result = run_cli(tmp_path, config)
    assert_refused(result, words)
    if len(config.get("api_key", "").strip()) > 8:
        assert config["api_key"] not in result.stderr + result.stdout


def test_malformed_state_file_is_refused(tmp_path: Path) -> None:
    assert_refused(run_cli(tmp_path, GOOD, state="{not json"), "state file", "not valid JSON")


def test_catalog_naming_an_unknown_stream_is_refused(tmp_path: Path) -> None:
    catalog = json.dumps({"streams": [{"tap_stream_id": "appointments", "schema": {}}]})
    assert_refused(run_cli(tmp_path, GOOD, catalog=catalog), "unknown stream", "--discover")


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("wrong key", ("401", "wrong, revoked")),
        ("wrong shard", ("401", "another shard")),
        ("wrong path", ("404", "base_url")),
    ],
)
def test_server_refusals_are_explained_in_one_line(
    tmp_path: Path, sandbox: Any, case: str, words: tuple[str, ...]
) -> None:
    with sandbox(patients=5, seed=1) as server:
        config = {"api_key": SANDBOX_KEY, "user_agent": USER_AGENT, "base_url": server.base_url}
        if case == "wrong key":
            config["api_key"] = "not0the0key-au1"
        elif case == "wrong shard":
            config["api_key"] = SANDBOX_KEY.rsplit("-", 1)[0] + "-uk1"
        elif case == "wrong path":
            config["base_url"] = server.base_url.removesuffix("/v1") + "/v2"
        result = run_cli(tmp_path, config)
    assert_refused(result, *words)
    assert config["api_key"] not in result.stderr + result.stdout
