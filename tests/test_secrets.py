"""The API key, the Authorization header and patient data never leak into any output."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import USER_AGENT
from tests.lookalike import serve_json

CANARY = "LEAKCANARY0c4f7e9a2b1d-au1"
TAP = [sys.executable, "-c", "from tap_cliniko.tap import main; main()"]


def forbidden_strings(key: str) -> list[str]:
    """The key, and the Authorization value it would make, in every encoding a log might use."""
    basic = base64.b64encode(f"{key}:".encode()).decode()
    return [key, key.rsplit("-", 1)[0], basic, f"Basic {basic}", "Authorization"]


def run_logged(tmp_path: Path, config: dict[str, Any]) -> tuple[str, str, int]:
    """Run the tap at DEBUG level; return stdout, stderr and the exit code."""
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAP_CLINIKO_")}
    env["LOGLEVEL"] = "DEBUG"
    result = subprocess.run(
        [*TAP, "--config", str(config_file)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )
    return result.stdout, result.stderr, result.returncode


def personal_values(server: Any) -> set[str]:
    """Distinctive personal strings of the server's patients (names, e-mails, notes)."""
    values = set()
    for entry in server.store.snapshot().values():
        record = entry["record"]
        for name in ("email", "last_name", "notes", "address_1"):
            value = record.get(name)
            if isinstance(value, str) and len(value) >= 8:
                values.add(value)
    return values


def assert_clean(text: str, key: str, where: str) -> None:
    for secret in forbidden_strings(key):
        assert secret not in text, f"{where} holds {secret[:12]}..."


FAILURES = {
    "success": {},
    "401 wrong shard": {"key_suffix": "-uk1"},
    "403 on every stream": {"fail_next": (1000, 403)},
    "404": {"path": "/v2"},
    "500s exhaust the retry budget": {"fail_next": (100_000, 500), "max_retry_seconds": 3},
    "429 storm beyond the retry budget": {"throttle": 30, "max_retry_seconds": 2},
    "truncated json": {"truncate_rate": 1.0, "max_retry_seconds": 3},
    "html error page with 200": {"html_200_rate": 1.0, "max_retry_seconds": 3},
    "timeouts": {"latency_ms": 2500, "request_timeout": 1, "max_retry_seconds": 3},
    "bodies cut mid-way": {"midbody_drop_rate": 1.0, "max_retry_seconds": 3},
}


@pytest.mark.parametrize("case", FAILURES)
def test_no_secret_or_patient_data_in_any_output(tmp_path: Path, sandbox: Any, case: str) -> None:
    how = FAILURES[case]
    faults = {
        k: how[k]
        for k in ("truncate_rate", "html_200_rate", "latency_ms", "midbody_drop_rate")
        if k in how
    }
    with sandbox(patients=40, seed=21, api_key=CANARY, **faults) as server:
        config: dict[str, Any] = {
            "api_key": CANARY.rsplit("-", 1)[0] + how.get("key_suffix", "-au1"),
            "user_agent": USER_AGENT,
            "base_url": server.base_url.removesuffix("/v1") + how.get("path", "/v1"),
            "max_retry_seconds": how.get("max_retry_seconds", 600),
            "request_timeout": how.get("request_timeout", 60),
        }
        if "fail_next" in how:
            count, status = how["fail_next"]
            server.faults.fail_next(count, status=status)
        if "throttle" in how:
            server.faults.throttle_for(how["throttle"], header="Retry-After")
        stdout, stderr, code = run_logged(tmp_path, config)
        personal = personal_values(server)
    assert (code == 0) == (case == "success"), stderr[-2000:]
    assert_clean(stdout, config["api_key"], "stdout")
    assert_clean(stderr, config["api_key"], "stderr")
    if case != "success":
        assert "Traceback" not in stderr
        assert stderr.strip().splitlines()[-1].startswith("tap-cliniko: error:")
    debug = [line for line in stderr.splitlines() if "| DEBUG" in line]
    assert debug, "the run logged at DEBUG level, so the check above covers DEBUG output"
    if case not in ("timeouts", "bodies cut mid-way"):  # the others got whole answers
        assert any(re.search(r"GET /v\d/\S+ -> \d{3}", line) for line in debug), debug[:5]
    leaked = [value for value in personal if value in stderr]
    assert not leaked, f"patient data in the log: {len(leaked)} values"
    state_lines = [line for line in stdout.splitlines() if '"STATE"' in line]
    for line in state_lines:
        assert_clean(line, config["api_key"], "state")


def _serve(host: str, next_link: str | None, seen: list[dict[str, str]]) -> ThreadingHTTPServer:
    """A Cliniko look-alike answering one row of any list and next_link; records headers."""

    def page(request: BaseHTTPRequestHandler) -> dict[str, Any]:
        seen.append(dict(request.headers))
        links = {"next": next_link} if next_link else {}
        collection = request.path.split("?")[0].split("/")[2]  # /v1/<collection>/...
        return {
            collection: [{"id": 1, "updated_at": "2024-01-01T00:00:00Z"}],
            "total_entries": 2,
            "links": links,
        }

    return serve_json(host, page)


@contextmanager
def off_host_cliniko() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A Cliniko whose next link points at another host, which records any request it gets."""
    elsewhere_seen: list[dict[str, str]] = []
    elsewhere = _serve("127.0.0.2", None, elsewhere_seen)
    link = f"http://127.0.0.2:{elsewhere.server_address[1]}/v1/patients?page=2"
    cliniko = _serve("127.0.0.1", link, [])
    try:
        yield f"http://127.0.0.1:{cliniko.server_address[1]}/v1", elsewhere_seen
    finally:
        for server in (cliniko, elsewhere):
            server.shutdown()
            server.server_close()


def test_off_host_next_link_is_refused_before_credentials_are_sent(tmp_path: Path) -> None:
    with off_host_cliniko() as (base_url, elsewhere_seen):
        # One row per page: page one of the look-alike's two rows agrees with its count.
        config = {"api_key": CANARY, "user_agent": USER_AGENT, "base_url": base_url, "per_page": 1}
        _, stderr, code = run_logged(tmp_path, config)
    assert code != 0
    assert "refusing to send the API key to http://127.0.0.2" in stderr
    assert elsewhere_seen == [], "the other host received a request"
    assert_clean(stderr, CANARY, "stderr")


def test_redirect_is_not_followed_and_its_target_gets_no_credential(
    tmp_path: Path, sandbox: Any
) -> None:
    """A 3xx from Cliniko ends the run in one line; the place it points at is never asked."""
    target_seen: list[dict[str, str]] = []
    target = _serve("127.0.0.1", None, target_seen)
    try:
        with sandbox(patients=10, seed=22, api_key=CANARY) as server:
            server.faults.redirect_next(f"http://127.0.0.1:{target.server_address[1]}/v1/patients")
            config = {"api_key": CANARY, "user_agent": USER_AGENT, "base_url": server.base_url}
            stdout, stderr, code = run_logged(tmp_path, config)
            redirected = [r for r in server.requests if r.status == 302]
    finally:
        target.shutdown()
        target.server_close()
    assert redirected, "the local Cliniko answered 302"
    assert code == 1 and "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("tap-cliniko: error:")]
    assert len(errors) == 1 and "302" in errors[0], stderr[-2000:]
    assert not any("Authorization" in headers for headers in target_seen), "credential sent"
    assert target_seen == [], "the redirect was followed"
    assert_clean(stdout + stderr, CANARY, "output")


def readme_stream_map() -> dict[str, Any]:
    """The tap-cliniko config of README's stream map recipe (the YAML block under Privacy)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("## Privacy", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    return dict(yaml.safe_load(block)["plugins"]["extractors"][0]["config"])


@pytest.mark.parametrize("key", ["*", "*patients"])
def test_readme_stream_map_hashes_and_drops_in_every_stream(
    tmp_path: Path, sandbox: Any, key: str
) -> None:
    """README's recipe, as written and keyed "*patients", with every default stream selected.

    Streams the catalog leaves out (the clinical ones) and streams without an e-mail are
    matched by "*" too; the run must neither fail nor leave a name or e-mail in clear.
    """
    recipe = readme_stream_map()
    assert list(recipe["stream_maps"]) == ["*"], "README's recipe is keyed '*'"
    salt = "a-long-random-secret"
    with sandbox(patients=60, seed=23) as server:
        config = {
            "api_key": server.config.api_key,
            "user_agent": USER_AGENT,
            "base_url": server.base_url,
            "stream_maps": {key: recipe["stream_maps"]["*"]},
            "stream_map_config": {"hash_salt": salt},
        }
        stdout, stderr, code = run_logged(tmp_path, config)
        emails = {
            entry["record"]["email"]
            for entry in server.store.snapshot().values()
            if entry["record"].get("email")
        }
    assert code == 0, stderr[-2000:]
    assert "Traceback" not in stderr
    records = [m for m in map(json.loads, stdout.splitlines()) if m["type"] == "RECORD"]
    mapped = {"patients", "archived_patients", "deleted_patients"}
    kept_names = set()
    hashed = 0
    for message in records:
        stream, record = message["stream"], message["record"]
        if key == "*" or stream in mapped:
            assert "first_name" not in record and "last_name" not in record, stream
            email = record.get("email")
            assert email is None or re.fullmatch(r"[0-9a-f]{64}", email), stream
            hashed += email is not None
        elif "first_name" in record:
            kept_names.add(stream)
    assert {m["stream"] for m in records} > mapped, "every default stream was synced"
    assert hashed, "some patients have an e-mail to hash"
    assert not [e for e in emails if e in stdout], "an e-mail in clear"
    if key == "*patients":
        assert kept_names, "streams other than the patient ones are left alone"
