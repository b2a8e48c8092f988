"""The table of collections and the record rules every collection stream applies (pure)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tap_cliniko.records import (
    Projection,
    link_id_fields,
    linked_id,
    normalize_record,
    patients_named,
    personal_fields,
    redact_fields,
    row_id,
)
from tap_cliniko.resources import BY_NAME, COLLECTIONS
from tap_cliniko.streams import COLLECTION_STREAMS, STREAM_NAMES
from tap_cliniko.tap import TapCliniko, check_input_files

SCHEMAS = Path(__file__).parents[1] / "schemas"
BASE = "https://api.au1.cliniko.com/v1"
CLINICAL = {
    "treatment_notes",
    "medical_alerts",
    "patient_forms",
    "patient_attachments",
    "communications",
}
# COLLECTIONS.md §3c: no usable filter, hard deletes, or no lifecycle marker.
FULL_TABLE = {
    "services",
    "appointment_type_billable_items",
    "appointment_type_products",
    "taxes",
    "practitioner_reference_numbers",
    "availability_blocks",
    "daily_availabilities",
    "concession_prices",
    "product_suppliers",
    "users",
    "business_practitioners",
    "appointment_type_practitioners",
}


def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{name}.json").read_text())


def link(path: str) -> dict[str, Any]:
    return {"links": {"self": f"{BASE}{path}"}}


def test_the_table_names_each_stream_once_and_marks_what_issue_9_asks() -> None:
    names = [c.name for c in COLLECTIONS]
    assert len(names) == len(set(names)) == len(BY_NAME)
    assert {c.name for c in COLLECTIONS if c.clinical} == CLINICAL
    assert {c.name for c in COLLECTIONS if not c.incremental} == FULL_TABLE
    assert {c.name: c.parent for c in COLLECTIONS if c.parent} == {
        "business_practitioners": "businesses",
        "appointment_type_practitioners": "appointment_types",
    }
    for name in ("individual_appointments", "group_appointments", "attendees", "invoices",
                 "invoice_items", "practitioners", "businesses", "appointment_types",
                 "billable_items", "products", "referral_sources", "contacts", "patient_cases",
                 "unavailable_blocks"):  # fmt: skip
        assert name in BY_NAME
    assert STREAM_NAMES[:3] == ("patients", "archived_patients", "deleted_patients")


def test_stream_classes_carry_keys_replication_and_default_selection() -> None:
    tap = TapCliniko(config={"api_key": "k-au1", "user_agent": "t (t@example.com)"})
    catalog = {entry["tap_stream_id"]: entry for entry in tap.catalog_dict["streams"]}
    assert set(catalog) == set(STREAM_NAMES)
    assert len(COLLECTION_STREAMS) == len(COLLECTIONS)
    for collection in COLLECTIONS:
        entry = catalog[collection.name]
        root = next(m["metadata"] for m in entry["metadata"] if m["breadcrumb"] == [])
        assert root["selected-by-default"] is (not collection.clinical), collection.name
        assert tuple(entry["key_properties"]) == collection.key
        assert entry.get("replication_key") == ("updated_at" if collection.incremental else None)
        full = root.get("forced-replication-method") == "FULL_TABLE"
        assert full is (not collection.incremental), collection.name
        stream = tap.streams[collection.name]
        assert stream.selected is (not collection.clinical)
        assert stream.emit_activate_version_messages is (not collection.incremental)


def test_an_unknown_stream_in_the_catalog_is_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    known = [
        {"tap_stream_id": name, "schema": {"type": "object", "properties": {}}, "metadata": []}
        for name in ("invoices", "business_practitioners")
    ]
    path.write_text(json.dumps({"streams": known}))
    check_input_files(["--catalog", str(path)])
    unknown = {**known[0], "tap_stream_id": "appointments"}
    path.write_text(json.dumps({"streams": [*known, unknown]}))
    with pytest.raises(Exception, match="unknown stream 'appointments'"):
        check_input_files(["--catalog", str(path)])


def test_ids_come_from_links_of_any_collection() -> None:
    assert linked_id(link("/practitioners/836447129235883061")) == "836447129235883061"
    assert linked_id(link("/individual_appointments/1/attendees")) is None
    assert linked_id(None) is None and linked_id({"links": {}}) is None
    deleted = {"deleted_at": "2024-01-01T00:00:00Z", **link("/invoices/77?x=1")}
    assert row_id(deleted) == "77"


def test_a_record_gets_link_id_columns_string_ids_and_null_dates() -> None:
    appointments = schema("individual_appointments")
    links = link_id_fields(appointments)
    assert links["practitioner_id"] == "practitioner" and links["patient_id"] == "patient"
    raw = {
        "id": 1234567890123456789,
        "starts_at": "2024-05-01T01:00:00Z",
        "cancelled_at": "",
        "practitioner": link("/practitioners/9"),
        "patient": link("/patients/5"),
        "unknown_field": "dropped",
    }
    bookings = schema("bookings")
    group = {
        "id": 7,
        "patient_ids": [1, "836447129235883061"],
        "updated_at": "2024-01-01T00:00:00Z",
    }
    cleaned = normalize_record(group, Projection(bookings["properties"], frozenset()), {})
    assert cleaned is not None and cleaned["patient_ids"] == ["1", "836447129235883061"]
    dates = frozenset(n for n, p in appointments["properties"].items() if "format" in p)
    record = normalize_record(raw, Projection(appointments["properties"], dates), links)
    assert record is not None
    assert record["id"] == "1234567890123456789"
    assert record["cancelled_at"] is None
    assert (record["practitioner_id"], record["patient_id"]) == ("9", "5")
    assert "unknown_field" not in record
    # Services have no id: the row is kept, its key comes from the links.
    services = schema("services")
    row = {"business": link("/businesses/3"), "appointment_type": link("/appointment_types/4")}
    kept = normalize_record(
        row,
        Projection(services["properties"], frozenset()),
        link_id_fields(services),
        has_id=False,
    )
    assert kept is not None and (kept["business_id"], kept["appointment_type_id"]) == ("3", "4")


def test_only_links_to_patients_name_a_patient() -> None:
    record = {"patient": link("/patients/5"), "referrer": link("/contacts/6")}
    assert patients_named(record, ("patient", "referrer")) == ["5"]
    related = {"patient": link("/patients/5"), "related_patient": link("/patients/8")}
    assert patients_named(related, ("patient", "related_patient")) == ["5", "8"]


def test_redaction_blanks_free_text_and_keeps_what_a_clinic_counts_by() -> None:
    blanked = personal_fields(schema("individual_appointments"))
    assert {"notes", "patient_name", "cancellation_note", "telehealth_url"} <= blanked
    for kept in ("id", "patient_id", "patient", "starts_at", "did_not_arrive", "cancelled_at"):
        assert kept not in blanked
    invoices = personal_fields(schema("invoices"))
    assert {"notes", "invoice_to", "patient_extra_information"} <= invoices
    assert "total_amount" not in invoices  # a decimal string: revenue stays
    assert {"content"} <= personal_fields(schema("treatment_notes"))
    record = {"id": "1", "notes": "private", "starts_at": "2024-01-01T00:00:00Z"}
    assert redact_fields(record, blanked) == {
        "id": "1",
        "notes": None,
        "starts_at": record["starts_at"],
    }


def test_readme_lists_every_stream_with_its_kind() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    rows = {
        line.split("|")[1].strip(" `"): line
        for line in readme.splitlines()
        if line.startswith("| `")
    }
    for name in STREAM_NAMES:
        assert name in rows, f"README's stream table lacks {name}"
    for collection in COLLECTIONS:
        row = rows[collection.name]
        assert ("full-table" in row) is (not collection.incremental), collection.name
        assert ("opt-in" in row) is collection.clinical, collection.name
        assert ("child of" in row) is bool(collection.parent), collection.name
