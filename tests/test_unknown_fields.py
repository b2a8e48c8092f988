"""Fields Cliniko sends that a stream's schema lacks: named once per stream, never valued."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tap_cliniko.records import Projection, UnknownFields
from tests.conftest import run_tap, tap_config

EXTRA = ("favourite_colour", "loyalty_tier")
READ = ("patients", "archived_patients", "appointment_types", "businesses")


def schema_lacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "schema lacks" in r.getMessage()]


def test_fields_the_schema_lacks_are_named_once_per_stream_and_never_valued(
    sandbox: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with sandbox(patients=40, collections=0.5, extra_fields=EXTRA) as server:
        result = run_tap(tap_config(server.base_url, per_page=10), streams=READ)
    lines = schema_lacks(caplog)
    named = sorted(line.split(":", 1)[0] for line in lines)
    assert named == sorted(READ), lines  # one line per stream read, over many pages
    for line in lines:
        assert "favourite_colour, loyalty_tier" in line, line
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "synthetic" not in logged, "a value of a field reached the log"
    assert result.sequence, "nothing was read"
    for _, record in result.sequence:
        assert not set(EXTRA) & set(record), "a field the schema lacks was extracted"


def test_no_warning_when_every_field_is_in_the_schema(
    sandbox: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The local Cliniko sends what the schemas hold: a whole account warns of nothing."""
    with sandbox(patients=30, collections=0.5) as server:
        result = run_tap(tap_config(server.base_url), streams=None)
    assert len({stream for stream, _ in result.sequence}) > 30, "too few streams read"
    assert schema_lacks(caplog) == []


def test_key_shapes_seen_are_bounded_and_names_kept() -> None:
    unknown = UnknownFields(["id", "name"])
    fields = Projection(["id", "name"], frozenset(), unknown.note_shape)
    for n in range(Projection.SHAPES * 3):
        fields({"id": 1, "name": "x", f"f{n % 500}": 1, "links": {}})
    assert len(fields._plans) <= Projection.SHAPES
    assert unknown.names == {f"f{n}" for n in range(500)}


def test_keep_puts_the_fields_in_one_declared_object_and_redaction_blanks_it(
    sandbox: Any,
) -> None:
    with sandbox(patients=40, collections=0.5, extra_fields=EXTRA) as server:
        kept = run_tap(tap_config(server.base_url, unknown_fields="keep"), streams=READ)
        redacted = run_tap(
            tap_config(
                server.base_url, unknown_fields="keep", privacy_redaction="rejected_or_unanswered"
            ),
            streams=("patients", "individual_appointments"),
        )
    messages = [json.loads(line) for line in kept.lines]
    schemas = {m["stream"]: m["schema"] for m in messages if m["type"] == "SCHEMA"}
    for stream in READ:
        properties = schemas[stream]["properties"]
        assert "object" in properties["unknown_fields"]["type"], stream
    rows = [(stream, record) for stream, record in kept.sequence]
    assert {stream for stream, _ in rows} == set(READ)
    for _, record in rows:
        assert record["unknown_fields"] == {
            name: f"synthetic {name} {record['id']}" for name in EXTRA
        }
    blanked = [r for s, r in redacted.sequence if r["unknown_fields"] is None]
    consenting = [r for s, r in redacted.sequence if r["unknown_fields"] is not None]
    assert blanked, "redaction left every patient's unknown fields in place"
    for record in consenting:
        assert set(record["unknown_fields"]) == set(EXTRA)
