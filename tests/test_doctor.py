"""tap-cliniko-doctor against the local Cliniko: it reports what the server does, within its
request bound, and never a value of a record."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tap_cliniko.doctor.cli import report
from tap_cliniko.doctor.probe import run
from tap_cliniko.sandbox import SandboxServer

#: A lower-case word is an enum (a type, a state), also a collection or field name.
ENUM = re.compile(r"[a-z_]+")
USER_AGENT = "Doctor test (doctor@example.com)"
Sandbox = Callable[..., Any]


def doctor(server: SandboxServer, **options: Any) -> dict[str, Any]:
    config = {
        "api_key": server.config.api_key,
        "base_url": server.base_url,
        "user_agent": USER_AGENT,
    }
    return run(config, **options)


def values(server: SandboxServer) -> Iterator[str]:
    """Every string of every row the local Cliniko holds, long enough not to be a word."""
    db = server.store._db
    for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
        for row in db.execute(f"SELECT * FROM {table}").fetchall():
            for cell in row:
                if isinstance(cell, str) and cell.startswith("{"):
                    yield from _strings(msgspec.json.decode(cell))
                elif isinstance(cell, str):
                    yield cell


def _strings(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str) and len(node) >= 6 and not ENUM.fullmatch(node):
        yield node  # a name, an e-mail, an address, a note, a phone number, a time


def test_a_plain_account_is_reported_as_it_is(sandbox: Sandbox) -> None:
    with sandbox(patients=120, collections=0.5) as server:
        profile = doctor(server)
        asked = len(server.requests)
        patients = server.store.count("patients")
    assert profile["requests"] == asked <= 150
    seen = profile["collections"]["patients"]
    assert seen["status"] == "ok"
    counts = seen["counts"]
    assert counts["active"] + counts["archived"] + counts["deleted"] == patients
    assert seen["routes"]["archived"] is True and seen["routes"]["deleted"] is True
    assert seen["filters"] == {
        "updated_at:>=": "accepted",
        "id:>": "accepted",
        "archived_at:*": "accepted",
        "cancelled_at:*": None,
        "deleted_at:>=": "accepted",
    }
    assert profile["sort_id"] == "honoured"
    assert profile["behaviour"] == "current"
    assert profile["archive_touches_updated_at"] is True
    assert seen["unknown_fields"] == {}
    assert abs(profile["clock_offset_seconds"]) <= 1.5
    assert all(c["status"] == "ok" for c in profile["collections"].values())


@pytest.mark.parametrize(
    ("settings", "check"),
    [
        ({"sort_mode": "ignored"}, lambda p: p["sort_id"] == "ignored"),
        ({"sort_mode": "refused"}, lambda p: p["sort_id"] == "refused"),
        ({"behaviour": "legacy"}, lambda p: p["behaviour"] == "legacy"),
        (
            {"variant_routes": False},
            lambda p: (
                p["collections"]["patients"]["routes"]["archived"] is False
                and p["collections"]["patients"]["routes"]["deleted"] is False
            ),
        ),
        (
            {"forbidden": ("invoices",)},
            lambda p: (
                p["collections"]["invoices"]["status"] == "forbidden"
                and p["collections"]["patients"]["status"] == "ok"
            ),
        ),
        (
            {"extra_fields": ("telehealth_room",)},
            lambda p: (
                p["collections"]["patients"]["unknown_fields"] == {"telehealth_room": ["string"]}
            ),
        ),
        ({"clock_offset_seconds": 300.0}, lambda p: 298.5 <= p["clock_offset_seconds"] <= 301.5),
        ({"archive_touches_updated_at": False}, lambda p: p["archive_touches_updated_at"] is False),
    ],
    ids=[
        "sort-ignored",
        "sort-refused",
        "legacy",
        "no-variants",
        "forbidden",
        "extra",
        "clock",
        "archive",
    ],
)
def test_each_drift_of_the_local_cliniko_is_reported(
    sandbox: Sandbox, settings: dict[str, Any], check: Callable[[dict[str, Any]], bool]
) -> None:
    with sandbox(patients=80, collections=0.2, **settings) as server:
        if not settings.get("archive_touches_updated_at", True):
            for record in server.store._live("patients", "archived_at IS NULL")[:5]:
                server.store.archive("patients", record["id"])  # updated_at stays
        profile = doctor(server)
    assert check(profile), json.dumps({k: v for k, v in profile.items() if k != "collections"})


def test_the_request_bound_holds_and_what_was_left_is_named(sandbox: Sandbox) -> None:
    with sandbox(patients=60, collections=0.2) as server:
        profile = doctor(server, max_requests=12)
        assert len(server.requests) == profile["requests"] == 12
    assert profile["not_checked"], "a bound of 12 cannot reach every collection"
    assert "patients" in profile["collections"]


def test_no_value_of_a_record_leaves_the_doctor(sandbox: Sandbox, tmp_path: Path) -> None:
    with sandbox(patients=80, collections=0.3, extra_fields=("telehealth_room",)) as server:
        config = tmp_path / "config.json"
        config.write_text(
            json.dumps(
                {
                    "api_key": server.config.api_key,
                    "base_url": server.base_url,
                    "user_agent": USER_AGENT,
                }
            )
        )
        out = tmp_path / "profile.json"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "tap_cliniko.doctor.cli",
                "--config",
                str(config),
                "--output",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        secrets = set(values(server))
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(secrets) > 500  # names, e-mails, addresses, notes, the extra field's values
    outputs = {"stdout": done.stdout, "stderr": done.stderr, "profile": out.read_text()}
    leaked = {name: [s for s in secrets if s in text][:3] for name, text in outputs.items()}
    assert leaked == {"stdout": [], "stderr": [], "profile": []}
    assert server.config.api_key not in "".join(outputs.values())
    assert json.loads(outputs["profile"])["profile_version"] == 1


def test_the_report_says_what_the_tap_will_do_differently(sandbox: Sandbox) -> None:
    with sandbox(
        patients=60, collections=0.2, sort_mode="ignored", forbidden=("invoices",)
    ) as server:
        text = report(doctor(server))
    assert "sort=id is ignored" in text
    assert "invoices: 403" in text
    assert "First full sync: about" in text


@pytest.mark.parametrize(
    ("config_text", "message"),
    [
        (None, "cannot read --config"),
        ("{", "is not JSON"),
        ("[]", "must hold a JSON object"),
        (json.dumps({"user_agent": USER_AGENT}), "api_key is missing"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, config_text: str | None, message: str) -> None:
    config = tmp_path / "config.json"
    if config_text is not None:
        config.write_text(config_text)
    doctor_command = Path(sys.executable).with_name("tap-cliniko-doctor")  # pyproject's script
    done = subprocess.run(
        [doctor_command, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and message in done.stderr, done.stderr


def test_a_wrong_key_is_one_line_not_a_report_of_errors(sandbox: Sandbox, tmp_path: Path) -> None:
    with sandbox(patients=20, collections=0) as server:
        config = tmp_path / "config.json"
        settings = {
            "api_key": "wrong-key-au1",
            "base_url": server.base_url,
            "user_agent": USER_AGENT,
        }
        config.write_text(json.dumps(settings))
        done = subprocess.run(
            [Path(sys.executable).with_name("tap-cliniko-doctor"), "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        asked = len(server.requests)
    assert done.returncode == 2, done.stdout
    assert done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "HTTP 401" in errors[0], done.stderr
    assert "Traceback" not in done.stderr and "wrong-key" not in done.stderr
    assert asked == 1
