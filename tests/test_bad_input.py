"""Bad input: one clear line, a non-zero exit, no traceback, nothing written."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tap_cliniko.cliniko import CONNECT_RETRY_SECONDS, backoff_wait
from tests.conftest import SANDBOX_KEY, USER_AGENT

TAP = [sys.executable, "-c", "from tap_cliniko.tap import main; main()"]
GOOD = {"api_key": "MS0xLWV4YW1wbGU-au1", "user_agent": USER_AGENT}


def run_cli(
    tmp_path: Path,
    config: dict[str, Any],
    *,
    state: str | None = None,
    catalog: str | None = None,
    extra: tuple[str, ...] | list[str] = (),
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
    args += extra
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAP_CLINIKO_")}
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, check=False)


def assert_refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 1, one error line naming the problem, no traceback, no RECORD, STATE or SCHEMA."""
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("tap-cliniko: error:")]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert word in errors[0], errors[0]
    assert "Traceback" not in result.stderr
    others = [
        line
        for line in result.stderr.splitlines()
        if "ERROR" in line.upper() or "validation failed" in line
    ]
    assert others == errors, f"more than the one error line: {others}"
    written = [json.loads(line)["type"] for line in result.stdout.splitlines() if line.strip()]
    assert not written, f"wrote {written} to stdout"


CONFIG_CASES = {
    "missing api_key": ({"user_agent": USER_AGENT}, "api_key is missing"),
    "empty api_key": ({**GOOD, "api_key": "  "}, "api_key is missing"),
    "malformed shard suffix": ({**GOOD, "api_key": "MS0xLWV4YW1wbGU-AU1"}, "shard suffix"),
    "api_key ending in a line break": ({**GOOD, "api_key": GOOD["api_key"] + "\n"}, "line break"),
    "api_key with a leading space": ({**GOOD, "api_key": " " + GOOD["api_key"]}, "space"),
    "misspelt per_page": ({**GOOD, "perpage": 50}, "'perpage'", "did you mean 'per_page'"),
    "misspelt privacy_redaction": (
        {**GOOD, "Privacy-Redaction": "rejected"},
        "'Privacy-Redaction'",
        "did you mean 'privacy_redaction'",
    ),
    "misspelt start_date": ({**GOOD, "start-date": "2024-01-01"}, "did you mean 'start_date'"),
    "user_agent without e-mail": ({**GOOD, "user_agent": "Acme reporting"}, "user_agent"),
    "start_date not a date-time": ({**GOOD, "start_date": "last tuesday"}, "start_date"),
    "plain http to a remote host": ({**GOOD, "base_url": "http://cliniko.example/v1"}, "base_url"),
    "per_page 0": ({**GOOD, "per_page": 0}, "per_page"),
    "per_page 101": ({**GOOD, "per_page": 101}, "per_page"),
    "unknown privacy mode": ({**GOOD, "privacy_redaction": "hash"}, "privacy_redaction"),
    "flattening without a depth": ({**GOOD, "flattening_enabled": True}, "flattening_max_depth"),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_bad_config_is_refused_in_one_line(tmp_path: Path, case: str) -> None:
    config, *words = CONFIG_CASES[case]
    result = run_cli(tmp_path, config)
    assert_refused(result, *words)
    if len(config.get("api_key", "").strip()) > 8:
        assert config["api_key"].strip() not in result.stderr + result.stdout


def test_malformed_state_file_is_refused(tmp_path: Path) -> None:
    assert_refused(run_cli(tmp_path, GOOD, state="{not json"), "state file", "not valid JSON")


def test_catalog_naming_an_unknown_stream_is_refused(tmp_path: Path) -> None:
    catalog = json.dumps({"streams": [{"tap_stream_id": "appointments", "schema": {}}]})
    assert_refused(run_cli(tmp_path, GOOD, catalog=catalog), "unknown stream", "--discover")


BOOKMARK = {"replication_key": "updated_at", "replication_key_value": "2024-01-01T00:00:00Z"}
STATE_CASES = {
    "bookmarks a list": ({"bookmarks": []}, "'bookmarks'"),
    "bookmark a bare date": ({"bookmarks": {"patients": "2024-01-01"}}, "bookmarks.patients"),
    "bookmark value not a date-time": (
        {"bookmarks": {"patients": {**BOOKMARK, "replication_key_value": "last week"}}},
        "replication_key_value",
    ),
    "no bookmarks at all": ({"patients": BOOKMARK}, "no 'bookmarks'"),
    "wrapped state not an object": ({"singer_state": [BOOKMARK]}, "JSON object"),
    "a list": ([BOOKMARK], "JSON object"),
}


@pytest.mark.parametrize("case", STATE_CASES)
def test_malformed_state_is_refused_before_any_output(
    tmp_path: Path, sandbox: Any, case: str
) -> None:
    state, words = STATE_CASES[case]
    with sandbox(patients=5, seed=2) as server:
        config = {**GOOD, "api_key": SANDBOX_KEY, "base_url": server.base_url}
        result = run_cli(tmp_path, config, state=json.dumps(state))
    assert_refused(result, "state file", words, "--state")


PATIENTS_ENTRY = {"tap_stream_id": "patients", "stream": "patients", "schema": {"type": "object"}}
CATALOG_CASES = {
    "streams null": ({"streams": None}, "'streams'"),
    "no streams": ({}, "'streams'"),
    "a stream that is a number": ({"streams": [1]}, "streams[0]"),
    "schema a list": ({"streams": [{**PATIENTS_ENTRY, "schema": []}]}, "schema"),
    "schema missing": ({"streams": [{"tap_stream_id": "patients"}]}, "schema"),
    "metadata an object": ({"streams": [{**PATIENTS_ENTRY, "metadata": {}}]}, "metadata"),
    "metadata items malformed": ({"streams": [{**PATIENTS_ENTRY, "metadata": [1]}]}, "metadata"),
    "properties a list": (
        {"streams": [{**PATIENTS_ENTRY, "schema": {"type": "object", "properties": []}}]},
        "schema properties",
    ),
    "a property's schema a number": (
        {"streams": [{**PATIENTS_ENTRY, "schema": {"properties": {"email": 1}}}]},
        "schema properties",
    ),
    "replication key not in the schema": (
        {"streams": [{**PATIENTS_ENTRY, "replication_key": "nope"}]},
        "replication key",
    ),
    "replication key in metadata": (
        {
            "streams": [
                {
                    **PATIENTS_ENTRY,
                    "metadata": [{"breadcrumb": [], "metadata": {"replication-key": "id"}}],
                }
            ]
        },
        "replication key",
    ),
    "key properties a string": ({"streams": [{**PATIENTS_ENTRY, "key_properties": "id"}]}, "key"),
}


@pytest.mark.parametrize("case", CATALOG_CASES)
def test_malformed_catalog_is_refused_before_any_output(
    tmp_path: Path, sandbox: Any, case: str
) -> None:
    catalog, words = CATALOG_CASES[case]
    with sandbox(patients=5, seed=2) as server:
        config = {**GOOD, "api_key": SANDBOX_KEY, "base_url": server.base_url}
        result = run_cli(tmp_path, config, catalog=json.dumps(catalog))
    assert_refused(result, "catalog file", words, "--discover")


@pytest.mark.parametrize("wrapping", ["meltano", "state message"])
def test_wrapped_state_is_unwrapped_and_the_run_stays_incremental(
    tmp_path: Path, sandbox: Any, wrapping: str
) -> None:
    with sandbox(patients=60, seed=3, collections=0) as server:
        # No lookback: an incremental run then re-reads only its bookmarks' own second.
        config = {**GOOD, "api_key": SANDBOX_KEY, "base_url": server.base_url}
        config["lookback_seconds"] = 0
        full = run_cli(tmp_path, config)
        assert full.returncode == 0, full.stderr[-2000:]
        states = [
            m["value"] for m in map(json.loads, full.stdout.splitlines()) if m["type"] == "STATE"
        ]
        wrapped = (
            {"singer_state": states[-1]}
            if wrapping == "meltano"
            else {"type": "STATE", "value": states[-1]}
        )
        again = run_cli(tmp_path, config, state=json.dumps(wrapped))
    assert again.returncode == 0, again.stderr[-2000:]
    records = [
        m
        for m in map(json.loads, again.stdout.splitlines())
        if m["type"] == "RECORD" and m["stream"].endswith("patients")
    ]
    assert 0 < len(records) < 60 // 4, "the bookmarks were used: only their own second is re-read"
    assert "using the state inside it" in again.stderr


BATCH = {"encoding": {"format": "jsonl", "compression": "gzip"}, "storage": {"root": "file://"}}
HASHING = {"patients": {"email": "md5(record['email']) if record.get('email') else None"}}
BATCH_CASES = {
    "stream maps": ({"batch_config": BATCH, "stream_maps": HASHING}, "stream_maps"),
    "flattening": (
        {"batch_config": BATCH, "flattening_enabled": True, "flattening_max_depth": 1},
        "flattening",
    ),
    "parquet": (
        {"batch_config": {**BATCH, "encoding": {"format": "parquet", "compression": "gzip"}}},
        "parquet",
    ),
}


@pytest.mark.parametrize("case", BATCH_CASES)
def test_batch_with_what_batch_files_would_not_honour_is_refused(
    tmp_path: Path, sandbox: Any, case: str
) -> None:
    settings, words = BATCH_CASES[case]
    with sandbox(patients=5, seed=4) as server:
        config = {**GOOD, "api_key": SANDBOX_KEY, "base_url": server.base_url, **settings}
        config["batch_config"] = {
            **config["batch_config"],
            "storage": {"root": f"file://{tmp_path}"},
        }
        result = run_cli(tmp_path, config)
    assert_refused(result, "batch_config", words)
    assert not list(tmp_path.glob("*.json.gz")), "no batch file written"


def test_batch_with_a_catalog_deselecting_fields_is_refused(tmp_path: Path, sandbox: Any) -> None:
    with sandbox(patients=5, seed=4) as server:
        config = {**GOOD, "api_key": SANDBOX_KEY, "base_url": server.base_url}
        discovered = run_cli(tmp_path, config, extra=["--discover"])
        catalog = json.loads(discovered.stdout)
        for entry in catalog["streams"]:
            for item in entry["metadata"]:
                if item["breadcrumb"] == []:
                    item["metadata"]["selected"] = True
                elif item["breadcrumb"][-1] in ("email", "last_name"):
                    item["metadata"]["selected"] = False
        plain = run_cli(tmp_path, config, catalog=json.dumps(catalog))
        assert plain.returncode == 0 and '"email"' not in plain.stdout, "selection works alone"
        config["batch_config"] = {**BATCH, "storage": {"root": f"file://{tmp_path}"}}
        result = run_cli(tmp_path, config, catalog=json.dumps(catalog))
    assert_refused(result, "batch_config", "deselects fields")
    assert not list(tmp_path.glob("*.json.gz")), "no batch file written"


def test_dry_run_logs_no_error(tmp_path: Path, sandbox: Any) -> None:
    with sandbox(patients=5, seed=5) as server:
        config = {**GOOD, "api_key": SANDBOX_KEY, "base_url": server.base_url}
        result = run_cli(tmp_path, config, extra=["--test"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ERROR" not in result.stderr.upper(), result.stderr[-2000:]
    assert "unsorted" not in result.stderr, "the SDK's misleading warning is explained in README"


def test_a_key_no_setting_resembles_is_ignored_with_one_warning(
    tmp_path: Path, sandbox: Any
) -> None:
    """Another tool's key in a shared config file: named once (never its value), then a sync."""
    with sandbox(patients=5, seed=5) as server:
        config = {**GOOD, "api_key": SANDBOX_KEY, "base_url": server.base_url}
        config["dbt_profile"] = "secret-looking-value-0001"
        config[f"api_key={SANDBOX_KEY}"] = ""  # a mangled line: the key in a key's name
        config["process_activate_version_messages"] = True  # a target's, in a shared file
        result = run_cli(tmp_path, config, extra=["--test"])
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [line for line in result.stderr.splitlines() if "does not know" in line]
    assert len(warnings) == 1, result.stderr[-2000:]
    assert (
        "ignored: (one holding api_key), dbt_profile, process_activate_version_messages ("
        in warnings[0]
    ), warnings[0]
    assert "secret-looking-value-0001" not in result.stderr + result.stdout
    assert SANDBOX_KEY not in result.stderr


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


def test_wrong_key_with_every_stream_is_one_request_and_one_line(
    tmp_path: Path, sandbox: Any
) -> None:
    """Every default stream reads ahead at once; a refused key is learned once, not per stream."""
    with sandbox(patients=5, seed=6) as server:
        config = {**GOOD, "api_key": "not0the0key-au1", "base_url": server.base_url}
        result = run_cli(tmp_path, config)  # no catalog: every default stream selected
        asked = len(server.requests)
    assert_refused(result, "401")
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("tap-cliniko: error: HTTP 401"), lines[-1]
    assert not [line for line in lines if "METRIC" in line], "metrics of a run that read nothing"
    assert len(lines) <= 5, "the error line is buried:\n" + "\n".join(lines)
    assert asked == 1, f"{asked} requests: every stream asked, not the first alone"


def test_discover_without_api_key_warns_of_nothing(tmp_path: Path) -> None:
    """README: --discover needs no key; the SDK's "Config validation failed" misleads."""
    result = run_cli(tmp_path, {"user_agent": USER_AGENT}, extra=["--discover"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["streams"], "the catalog was written"
    assert "validation failed" not in result.stderr, result.stderr
    assert "WARNING" not in result.stderr, result.stderr


@contextmanager
def hanging_up_port() -> Iterator[tuple[int, list[int]]]:
    """A local port that accepts each connection and closes it at once (not Cliniko)."""
    accepted: list[int] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return  # closed: the test is over
            accepted.append(1)
            connection.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield int(listener.getsockname()[1]), accepted
    finally:
        listener.close()


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


#: Attempts one request makes within the connect budget: 1 s, 2 s, 4 s ... apart.
CONNECT_ATTEMPTS = next(
    n for n in range(1, 20) if sum(backoff_wait(a) for a in range(1, n + 1)) > CONNECT_RETRY_SECONDS
)


@pytest.mark.parametrize("port_is", ["closed", "hanging up"])
def test_wrong_port_with_every_stream_fails_once_naming_the_host(
    tmp_path: Path, port_is: str
) -> None:
    """Dozens of streams start reading at once: the first one alone learns the host is wrong."""
    with hanging_up_port() as (listening, accepted):
        port = closed_port() if port_is == "closed" else listening
        config = {**GOOD, "base_url": f"http://127.0.0.1:{port}/v1"}
        result = run_cli(tmp_path, config)  # no catalog: every default stream selected
    assert_refused(result, f"cannot reach 127.0.0.1:{port}", "base_url", "shard suffix")
    error = result.stderr.strip().splitlines()[-1]
    attempts = int(re.search(r"(\d+) attempts", error).group(1))  # type: ignore[union-attr]
    assert attempts <= CONNECT_ATTEMPTS, error
    if port_is == "hanging up":
        assert len(accepted) == attempts, f"{len(accepted)} connections: not the first alone"
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, "one warning of the failure, not one per attempt or stream"
    assert len(result.stderr.strip().splitlines()) <= 6, result.stderr


@pytest.mark.parametrize(
    ("expression", "field"),
    [
        ("md5(record['email'])", "email"),
        ("md5(email)", "email"),
        ("md5(self)", "first_name"),
    ],
)
def test_a_star_map_reading_a_field_some_stream_lacks_is_refused_naming_both(
    tmp_path: Path, sandbox: Any, expression: str, field: str
) -> None:
    """Under "*", record['email'] fails mid-sync on a stream without email: refused first."""
    with sandbox(patients=5, seed=7) as server:
        prop = "first_name" if field == "first_name" else "email_hash"
        config = {
            **GOOD,
            "api_key": SANDBOX_KEY,
            "base_url": server.base_url,
            "stream_maps": {"*": {prop: expression}},
        }
        result = run_cli(tmp_path, config)
        asked = len(server.requests)
    # appointment_type_billable_items: the first stream by name, and it has neither field.
    assert_refused(result, "stream_maps '*'", f"'{field}'", "'appointment_type_billable_items'")
    assert "record.get" in result.stderr
    assert asked == 0, "refused before anything was asked"
