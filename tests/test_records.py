"""Record rules: ids as strings, "" dates to null, minimal deleted records, consent."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from tap_cliniko.api import ClinikoAPI
from tap_cliniko.records import (
    Projection,
    date_fields,
    drop_nulls_outside,
    needs_redaction,
    normalize_patient,
    redact_patient,
    row_id,
)
from tests.conftest import SANDBOX_KEY, STATUS_STREAM, USER_AGENT, run_tap, tap_config
from tests.lookalike import serve_json

SCHEMA = {
    "properties": {
        "id": {"type": "string"},
        "first_name": {"type": ["string", "null"]},
        "notes": {"type": ["string", "null"]},
        "email": {"type": ["string", "null"]},
        "date_of_birth": {"type": ["string", "null"], "format": "date"},
        "archived_at": {"type": ["string", "null"], "format": "date-time"},
        "deleted_at": {"type": ["string", "null"], "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "accepted_privacy_policy": {"type": ["boolean", "null"]},
        "links": {"type": ["object", "null"]},
    }
}
PROPS = tuple(SCHEMA["properties"])
DATES = date_fields(SCHEMA)
FIELDS = Projection(PROPS, DATES)


def test_date_fields_come_from_the_schema_formats() -> None:
    assert {"date_of_birth", "archived_at", "deleted_at", "updated_at"} == DATES


def test_nineteen_digit_id_never_passes_through_a_float() -> None:
    raw = json.loads('{"id": 8364471292358830617, "updated_at": "2024-01-01T00:00:00Z"}')
    assert normalize_patient(raw, FIELDS)["id"] == "8364471292358830617"  # type: ignore[index]
    assert row_id({"id": "836447129235883061"}) == "836447129235883061"
    assert row_id({"id": 1}) == "1"
    assert row_id({"id": True}) is None


# Integers a float cannot hold: 2**53 + 1 reads back as 2**53, the others lose digits too.
BIG_IDS = (2**53 + 1, 1100000000000007919, 8364471292358830617, 2**63 - 1)
FEB = "2024-02-01T00:00:00Z"


@contextmanager
def cliniko_with_numeric_ids() -> Iterator[str]:
    """A Cliniko look-alike whose lists give ids as bare JSON numbers, as legacy accounts do."""
    rows = {
        "/v1/patients": [{"id": i, "updated_at": "2024-01-01T00:00:00Z"} for i in BIG_IDS],
        "/v1/patients/archived": [{"id": 2**53 + 3, "archived_at": FEB, "updated_at": FEB}],
        "/v1/patients/deleted": [{"id": 2**53 + 5, "deleted_at": "2024-03-01T00:00:00Z"}],
    }

    def page(request: BaseHTTPRequestHandler) -> dict[str, Any]:
        patients = rows.get(request.path.split("?", 1)[0], [])
        return {"patients": patients, "total_entries": len(patients), "links": {}}

    server = serve_json("127.0.0.1", page)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_nineteen_digit_numeric_ids_survive_the_tap_s_own_decoding() -> None:
    """Bare JSON numbers above 2**53 go through the client's page decoding and the records."""
    with cliniko_with_numeric_ids() as base_url:
        api = ClinikoAPI(base_url=base_url, api_key=SANDBOX_KEY, user_agent=USER_AGENT)
        page = api.get_page(f"{base_url}/patients", [])
        result = run_tap(tap_config(base_url))
    assert [row["id"] for row in page.rows] == list(BIG_IDS)
    assert result.ids("patients") == [str(i) for i in BIG_IDS]
    assert result.ids("archived_patients") == [str(2**53 + 3)]
    assert result.ids("deleted_patients") == [str(2**53 + 5)]


def test_current_ids_from_a_real_sync_equal_the_store_s_digit_for_digit(sandbox: Any) -> None:
    """The local Cliniko's 19-digit ids (strings, and deleted ones only in links.self)."""
    with sandbox(patients=60, seed=41, behaviour="current") as server:
        result = run_tap(tap_config(server.base_url, per_page=25))
        snapshot = server.store.snapshot()
    assert min(int(i) for i in snapshot) > 2**53
    for stream in STATUS_STREAM.values():
        expected = {i for i, e in snapshot.items() if STATUS_STREAM[e["status"]] == stream}
        assert expected and set(result.ids(stream)) == expected, stream


def test_empty_strings_become_null_in_date_fields_only() -> None:
    raw = {
        "id": 1,
        "first_name": "",
        "notes": "",
        "date_of_birth": "",
        "archived_at": "",
        "deleted_at": "",
        "updated_at": "2013-03-26T14:00:00Z",
    }
    record = normalize_patient(raw, FIELDS)
    assert record == {
        "id": "1",
        "first_name": "",
        "notes": "",
        "date_of_birth": None,
        "archived_at": None,
        "deleted_at": None,
        "updated_at": "2013-03-26T14:00:00Z",
    }


def test_a_projection_picks_what_the_schema_holds_in_its_order_whatever_the_rows_shape() -> None:
    """Rows of many shapes (keys missing, extra, reordered; one field; none): each projects
    to the schema's fields it holds, in the schema's order, "" dates null, like a plain
    comprehension; each shape is reported once while remembered, and at most SHAPES are."""
    rng = random.Random(21)
    names = [*PROPS, "surprise", "links_extra"]
    shapes: list[tuple[str, ...]] = [(), ("notes",), ("surprise",)]
    for _ in range(60):
        shape = rng.sample(names, rng.randint(0, len(names)))
        shapes.append(tuple(shape))
    reported: list[tuple[str, ...]] = []
    fields = Projection(PROPS, DATES, reported.append)
    for _ in range(3):
        for shape in shapes:
            raw = {name: rng.choice(["", "x", None, 0]) for name in shape}
            expected = {name: raw[name] for name in PROPS if name in raw}
            for name in DATES & expected.keys():
                expected[name] = None if expected[name] == "" else expected[name]
            got = fields(raw)
            assert got == expected and list(got) == list(expected), shape
    assert sorted(reported) == sorted(set(shapes)), "each shape reported once"
    small = Projection(PROPS, DATES)
    for n in range(Projection.SHAPES * 3):
        assert small({"id": n, f"f{n}": 1}) == {"id": n}
    assert len(small._plans) <= Projection.SHAPES


def test_fields_outside_the_schema_are_dropped() -> None:
    record = normalize_patient({"id": 2, "updated_at": "x", "surprise": 1}, FIELDS)
    assert record is not None and "surprise" not in record


def test_minimal_deleted_record_takes_id_from_link_and_deleted_at_as_updated_at() -> None:
    raw = {
        "deleted_at": "2025-06-05T14:38:48Z",
        "links": {"self": "https://api.au1.cliniko.com/v1/patients/836447129235883061"},
    }
    assert normalize_patient(raw, FIELDS) == {
        "id": "836447129235883061",
        "deleted_at": "2025-06-05T14:38:48Z",
        "updated_at": "2025-06-05T14:38:48Z",
        "links": raw["links"],
    }


def test_record_without_any_id_is_dropped() -> None:
    # A link to a list, not to one record, holds no id.
    for link in ("https://x/v1/patients", "https://x/v1/patients/1/attendees"):
        assert normalize_patient({"links": {"self": link}}, FIELDS) is None


@pytest.mark.parametrize(
    ("mode", "consent", "blank"),
    [
        ("off", False, False),
        ("rejected", False, True),
        ("rejected", None, False),
        ("rejected", True, False),
        ("rejected_or_unanswered", None, True),
        ("rejected_or_unanswered", False, True),
        ("rejected_or_unanswered", True, False),
    ],
)
def test_consent_redaction(mode: str, consent: bool | None, blank: bool) -> None:
    record = {
        "id": "5",
        "first_name": "Zoë",
        "email": "zoe@example.com",
        "notes": "private",
        "updated_at": "2024-01-01T00:00:00Z",
        "archived_at": None,
        "accepted_privacy_policy": consent,
    }
    assert needs_redaction(record, mode) is blank
    redacted = redact_patient(record)
    assert (
        redacted["first_name"] is None and redacted["email"] is None and redacted["notes"] is None
    )
    assert redacted["id"] == "5" and redacted["updated_at"] == "2024-01-01T00:00:00Z"
    assert redacted["accepted_privacy_policy"] is consent


def test_progress_logs_records_of_total_and_time_left(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tap_cliniko import client

    now = [1000.0]
    monkeypatch.setattr(client.time, "monotonic", lambda: now[0])
    progress = client._Progress("patients", every=15)
    with caplog.at_level("INFO", logger="tap-cliniko"):
        progress.page(100, 1000)
        now[0] += 20
        progress.page(100, 1000)
    assert caplog.messages == ["patients: 200 of 1000 records (20%), about 1m 20s left"]


def test_drop_nulls_outside_keeps_schema_keys_and_every_value() -> None:
    record = {"id": "1", "pronouns": None, "pronouns__nominative": None, "notes": None, "x": 0}
    fitted = drop_nulls_outside(record, ["id", "pronouns__nominative", "notes"])
    assert fitted == {"id": "1", "pronouns__nominative": None, "notes": None, "x": 0}
