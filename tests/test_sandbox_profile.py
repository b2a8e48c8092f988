"""The local Cliniko replays a doctor's profile: the doctor run against the replay reports the
same account (each drift mode, each committed profile), and the tap syncs a replay whole."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tap_cliniko.doctor.cli import report
from tap_cliniko.doctor.probe import run
from tap_cliniko.resources import COLLECTIONS
from tap_cliniko.sandbox import SandboxServer
from tap_cliniko.sandbox.resources import BY_NAME as SANDBOX_RESOURCES
from tap_cliniko.sandbox.shaping import AccountShape
from tap_cliniko.streams import STREAM_NAMES
from tests.conftest import SANDBOX_KEY, USER_AGENT, run_tap, tap_config
from tests.test_doctor import values

PROFILES = Path(__file__).parent / "profiles"
#: Each committed profile and the scale it is replayed at (a big account made small).
COMMITTED = {"small_clinic": 1.0, "large_clinic": 0.01, "no_variants": 1.0}
#: What a profile says of the whole account, compared as it is.
ACCOUNT_KEYS = ("sort_id", "behaviour", "archive_touches_updated_at", "rate_limit_headers")
#: What it says of each collection.
COLLECTION_KEYS = ("status", "routes", "filters", "id_digits", "ids_above_2_53", "unknown_fields")
#: The Date header is whole seconds: two readings of one clock differ by up to about 1 s.
CLOCK_SLACK = 1.5
TOP_LEVEL = [c for c in COLLECTIONS if not c.parent]
Sandbox = Callable[..., Any]


def doctor(server: SandboxServer) -> dict[str, Any]:
    config = {
        "api_key": server.config.api_key,
        "base_url": server.base_url,
        "user_agent": USER_AGENT,
    }
    profile = run({**config, "max_retry_seconds": 1}, max_requests=400)  # 500s: retried briefly
    assert not profile["not_checked"], profile["not_checked"]
    return profile


def scaled(count: int | None, scale: float) -> int | None:
    """A count of the profile as the replay must hold it: never 0 where the account has rows."""
    return count if not count else max(round(count * scale), 1)


def differences(expected: dict[str, Any], got: dict[str, Any], scale: float) -> list[str]:
    """Where the replay's profile says something else than the one it replays."""
    found = [
        f"{key}: {expected[key]!r} became {got[key]!r}"
        for key in ACCOUNT_KEYS
        if expected[key] != got[key]
    ]
    if abs(expected["clock_offset_seconds"] - got["clock_offset_seconds"]) > CLOCK_SLACK:
        found.append(f"clock: {expected['clock_offset_seconds']} -> {got['clock_offset_seconds']}")
    for name, seen in expected["collections"].items():
        replay = got["collections"][name]
        found += [
            f"{name}.{key}: {seen[key]!r} became {replay[key]!r}"
            for key in COLLECTION_KEYS
            if seen[key] != replay[key]
            # bookings' ids are its members': their digits are compared member by member
            and not (key == "id_digits" and SANDBOX_RESOURCES[name].union)
        ]
        resource = SANDBOX_RESOURCES[name]
        if resource.union or resource.computed:
            continue  # their rows are other collections': sampled and counted with those
        if scale == 1.0 and seen["fields_never_seen"] != replay["fields_never_seen"]:
            found.append(f"{name}.fields_never_seen: {replay['fields_never_seen']}")
        counts = {state: scaled(n, scale) for state, n in (seen["counts"] or {}).items()}
        if counts != (replay["counts"] or {}):
            found.append(f"{name}.counts: {counts} became {replay['counts']}")
    return found


def archive_some_patients(server: SandboxServer) -> None:
    """Archived rows whose updated_at archiving left alone, for the doctor to notice."""
    for record in server.store._live("patients", "archived_at IS NULL")[:5]:
        server.store.archive("patients", record["id"])


def patients(profile: dict[str, Any]) -> dict[str, Any]:
    seen: dict[str, Any] = profile["collections"]["patients"]
    return seen


#: Each drift mode of the local Cliniko, and how its doctor's profile shows it (so that a
#: round trip is never two servers that both lack the drift).
DRIFTS: dict[str, tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]] = {
    "plain": ({}, lambda p: p["sort_id"] == "honoured" and p["rate_limit_headers"] == []),
    "sort-ignored": ({"sort_mode": "ignored"}, lambda p: p["sort_id"] == "ignored"),
    "sort-refused": ({"sort_mode": "refused"}, lambda p: p["sort_id"] == "refused"),
    "legacy": ({"behaviour": "legacy"}, lambda p: p["behaviour"] == "legacy"),
    "no-variants": (
        {"variant_routes": False},
        lambda p: patients(p)["routes"]["archived"] is False,
    ),
    "forbidden": (
        {"forbidden": ("invoices", "treatment_notes")},
        lambda p: p["collections"]["invoices"]["status"] == "forbidden",
    ),
    "missing": (
        {"missing": ("stock_adjustments",), "missing_routes": ("/practitioners/inactive",)},
        lambda p: (
            p["collections"]["stock_adjustments"]["status"] == "missing"
            and p["collections"]["practitioners"]["routes"]["inactive"] is False
        ),
    ),
    "broken": ({"broken": ("taxes",)}, lambda p: p["collections"]["taxes"]["status"] == "error"),
    "extra": (
        {"extra_fields": ("telehealth_room",)},
        lambda p: patients(p)["unknown_fields"] == {"telehealth_room": ["string"]},
    ),
    "clock": ({"clock_offset_seconds": 300.0}, lambda p: p["clock_offset_seconds"] > 290),
    "archive": (
        {"archive_touches_updated_at": False},
        lambda p: p["archive_touches_updated_at"] is False,
    ),
    "limit-headers": (
        {"rate_limit_headers": ("X-RateLimit-Limit", "X-RateLimit-Remaining")},
        lambda p: p["rate_limit_headers"] == ["X-RateLimit-Limit", "X-RateLimit-Remaining"],
    ),
    "short-ids": (
        {"account": AccountShape(id_digits={"patients": 12, "invoices": 16})},
        lambda p: patients(p)["id_digits"] == 12 and not patients(p)["ids_above_2_53"],
    ),
    "filters": (
        {
            "ignored_filters": {"/v1/patients": ("updated_at",)},
            "refused_filters": {"/v1/patients/deleted": ("deleted_at",)},
        },
        lambda p: (
            patients(p)["filters"]["updated_at:>="] == "ignored"
            and patients(p)["filters"]["deleted_at:>="] == "refused"
        ),
    ),
}


@pytest.mark.parametrize(("settings", "shows"), list(DRIFTS.values()), ids=list(DRIFTS))
def test_a_replay_of_each_drift_is_reported_as_the_drift_was(
    sandbox: Sandbox, settings: dict[str, Any], shows: Callable[[dict[str, Any]], bool]
) -> None:
    with sandbox(patients=80, collections=0.2, seed=3, **settings) as server:
        if settings.get("archive_touches_updated_at") is False:
            archive_some_patients(server)
        original = doctor(server)
    assert shows(original), "the drift does not show: the round trip would prove nothing"
    with sandbox(profile=original, seed=11) as replay:
        held = Counter(row["status"] for row in replay.store.snapshot("patients").values())
        counted = original["collections"]["patients"]["counts"]
        assert {s: held[s] for s, n in counted.items() if n is not None} == {
            s: n for s, n in counted.items() if n is not None
        }
        again = doctor(replay)
    assert differences(original, again, 1.0) == []


@pytest.mark.parametrize("name", list(COMMITTED))
def test_a_replay_of_each_committed_profile_is_reported_as_the_profile(
    sandbox: Sandbox, name: str
) -> None:
    profile = json.loads((PROFILES / f"{name}.json").read_text())
    with sandbox(profile=PROFILES / f"{name}.json", scale=COMMITTED[name]) as replay:
        again = doctor(replay)
        secrets = set(values(replay))
    assert differences(profile, again, COMMITTED[name]) == []
    outputs = json.dumps(again) + report(again)
    assert len(secrets) > 500 and [s for s in secrets if s in outputs] == []


def expected_rows(server: SandboxServer, profile: dict[str, Any]) -> dict[str, set[str]]:
    """Stream -> ids the tap must bring back from a replay: every row of a collection the key
    may read, deleted rows only where the account still lists them (its /deleted route)."""
    seen = profile["collections"]
    expected = {}
    for collection in TOP_LEVEL:
        rows = server.store.snapshot(collection.name)
        if seen[collection.name]["status"] != "ok":
            expected[collection.name] = set()
            continue
        routes = seen[collection.name]["routes"]
        expected[collection.name] = {
            key
            for key, row in rows.items()
            if (row["status"] != "deleted" or (collection.deleted_route and routes["deleted"]))
            and (row["status"] != "inactive" or routes["inactive"])
        }
    patients = server.store.snapshot("patients")
    deleted_listed = seen["patients"]["routes"]["deleted"]
    expected["patients"] = {
        key for key, row in patients.items() if row["status"] != "deleted" or deleted_listed
    }
    return expected


def key_of(stream: str, record: dict[str, Any]) -> str:
    if stream == "services":
        return f"{record['business_id']}:{record['appointment_type_id']}"
    return str(record["id"])


@pytest.mark.parametrize("name", list(COMMITTED))
def test_the_tap_syncs_each_committed_profile_whole(sandbox: Sandbox, name: str) -> None:
    path = PROFILES / f"{name}.json"
    profile = json.loads(path.read_text())
    with sandbox(profile=path, scale=COMMITTED[name]) as replay:
        expected = expected_rows(replay, profile)
        config = tap_config(replay.base_url, max_requests_per_minute=0)  # no throttle here
        result = run_tap(config, streams=list(STREAM_NAMES))
    got = {
        stream: {key_of(stream, r) for r in result.records.get(stream, [])} for stream in expected
    }
    for stream in ("archived_patients", "deleted_patients"):
        got["patients"] |= {r["id"] for r in result.records.get(stream, [])}
    wrong = {s: (len(got[s]), len(expected[s])) for s in expected if got[s] != expected[s]}
    assert wrong == {}, "stream: (got, expected)"
    assert sum(map(len, got.values())) > 1000


def test_a_shaped_collection_keeps_rows_from_across_the_clinics_time(sandbox: Sandbox) -> None:
    """A replay of a few appointments keeps old and upcoming ones (not only the oldest), and a
    profile's id digits hold for every row kept (the synthetic clinic's extra rows go)."""
    with sandbox(patients=950, seed=5) as plain:
        every = plain.store.snapshot("individual_appointments").values()
    times = sorted(e["record"]["starts_at"] for e in every if e["status"] == "active")
    shape = AccountShape(
        volumes={"individual_appointments": {"active": 12}, "patients": {"active": 50}},
        id_digits={"patients": 3},  # the clinic's 950 patients get ids 100..1049
    )
    with sandbox(patients=950, seed=5, account=shape) as replay:
        every_kept = replay.store.snapshot("individual_appointments").values()
        kept = [e for e in every_kept if e["status"] == "active"]
        patient_ids = list(replay.store.snapshot("patients"))
    starts = sorted(e["record"]["starts_at"] for e in kept)
    assert len(kept) == 12
    assert starts[0] <= times[len(times) // 10], "the clinic's early months are kept"
    assert starts[-1] >= times[-len(times) // 10], "and its last weeks"
    assert patient_ids and all(len(i) == 3 for i in patient_ids), max(patient_ids, key=len)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--profile", "nowhere.json"], "cannot read profile nowhere.json"),
        (["--profile", "{bad}"], "is not JSON"),
        (["--scale", "0.5"], "--scale scales a --profile"),
        (["--profile", "small_clinic.json", "--scale", "0"], "scale must be above 0"),
        (["--profile", "small_clinic.json", "--patients", "9"], "--patients cannot be given"),
        (["--profile", "old.json"], "profile_version"),
    ],
)
def test_a_bad_profile_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "small_clinic.json").write_text((PROFILES / "small_clinic.json").read_text())
    (tmp_path / "{bad}").write_text("{")
    (tmp_path / "old.json").write_text(json.dumps({"profile_version": 0, "collections": {}}))
    done = subprocess.run(
        [Path(sys.executable).with_name("cliniko-sandbox"), "--api-key", SANDBOX_KEY, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
