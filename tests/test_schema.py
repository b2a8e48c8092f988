"""The one Patient schema covers both API documents the tap was specified from."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema

from tap_cliniko.records import Projection, date_fields, normalize_patient

SCHEMA = json.loads((Path(__file__).parents[1] / "schemas" / "patient.json").read_text())
# Copies of the two API documents the project was specified from (../shared/cliniko-api).
API_DOCS = Path(__file__).parent / "api-docs"


def documented_patients() -> list[dict[str, Any]]:
    """Every patient object in the older page's JSON examples."""
    text = (API_DOCS / "patients.md").read_text()
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", text, re.S)]
    return [p for block in blocks for p in block.get("patients", [block])]


def keys_missing(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Paths of keys in value that the schema does not describe."""
    missing = []
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for key, item in value.items():
            if key not in properties:
                missing.append(f"{path}.{key}")
            else:
                missing += keys_missing(item, properties[key], f"{path}.{key}")
    elif isinstance(value, list):
        for item in value:
            missing += keys_missing(item, schema.get("items", {}), f"{path}[]")
    return missing


def test_every_field_of_the_older_page_is_in_the_schema() -> None:
    patients = documented_patients()
    assert len(patients) >= 5
    for patient in patients:
        assert keys_missing(patient, SCHEMA) == []


def test_every_property_of_the_newer_spec_is_in_the_schema() -> None:
    spec = json.loads((API_DOCS / "openapi-patients.json").read_text())
    assert set(spec["schemas"]["Patient"]["properties"]) <= set(SCHEMA["properties"])
    assert SCHEMA["properties"]["pronouns"]["type"] == ["object", "null"]
    assert SCHEMA["properties"]["custom_fields"]["type"] == ["object", "null"]
    assert SCHEMA["properties"]["patient_phone_numbers"]["items"]["type"] == ["object", "null"]


def test_timestamps_are_date_times_and_the_documented_records_validate_once_cleaned() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    for name in SCHEMA["properties"]:
        if name.endswith("_at"):
            assert SCHEMA["properties"][name]["format"] == "date-time", name
    validator = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
    fields = Projection(SCHEMA["properties"], date_fields(SCHEMA))
    for patient in documented_patients():
        record = normalize_patient(patient, fields)
        validator.validate(record)
