"""The schema generator: its rules, the committed schemas it made, and the table it reads."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema

from scripts.generate_schemas import (
    SCHEMAS,
    convert,
    generate,
    load_spec,
    merge,
    one_record_links,
    profile_report,
    record_schema,
)
from tap_cliniko.resources import ARCHIVED, BY_NAME, CANCELLED, COLLECTIONS

SPEC = load_spec()
COMPONENTS = SPEC["components"]["schemas"]
NULL_STRING = {"type": ["string", "null"]}


def link_to(url: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "links": {
                "type": "object",
                "properties": {"self": {"type": "string", "format": "uri", "example": url}},
            }
        },
    }


def test_every_value_may_be_null_and_constraints_are_dropped() -> None:
    node = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 5, "enum": ["a"], "nullable": False},
            "count": {"type": "integer", "minimum": 1},
            "tags": {"type": "array", "items": {"type": "string", "format": "uuid"}},
        },
    }
    assert convert(node, {}) == {
        "type": ["object", "null"],
        "properties": {
            "count": {"type": ["integer", "null"]},
            "name": NULL_STRING,
            "tags": {"type": ["array", "null"], "items": NULL_STRING},
        },
    }


def test_only_date_formats_are_kept_and_refs_are_followed() -> None:
    components = {"When": {"type": "string", "format": "date-time"}}
    assert convert({"$ref": "#/components/schemas/When"}, components) == {
        "type": ["string", "null"],
        "format": "date-time",
    }
    assert convert({"type": "string", "format": "date"}, {})["format"] == "date"
    assert convert({"type": "string", "format": "decimal"}, {})["format"] == "decimal"
    for other in ("uri", "int64", "uuid", "ipv4"):
        assert convert({"type": "string", "format": other}, {}) == NULL_STRING


def test_a_union_becomes_one_object_with_every_field() -> None:
    components = {
        "Memo": {
            "type": "object",
            "properties": {"id": {"type": "string"}, "memo": {"type": "string"}},
        },
        "Sms": {
            "type": "object",
            "properties": {"id": {"type": "string"}, "to": {"type": "integer"}},
        },
    }
    union = {"anyOf": [{"$ref": "#/components/schemas/Memo"}, {"$ref": "#/components/schemas/Sms"}]}
    assert convert(union, components) == {
        "type": ["object", "null"],
        "properties": {
            "id": NULL_STRING,
            "memo": NULL_STRING,
            "to": {"type": ["integer", "null"]},
        },
    }
    # A field typed differently in two variants accepts both types.
    assert merge({"type": ["integer", "null"]}, NULL_STRING)["type"] == [
        "string",
        "integer",
        "null",
    ]


def test_ids_are_strings_and_links_to_one_record_get_an_id_column() -> None:
    items = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "format": "int64"},
            "patient": link_to("https://api.au1.cliniko.com/v1/patients/1"),
            "attendees": link_to("https://api.au1.cliniko.com/v1/bookings/1/attendees"),
        },
    }
    assert one_record_links(items, {}) == ["patient"]
    schema = record_schema(items, {}, parent_key="business_id")
    assert schema["properties"]["id"] == {"type": "string"}
    assert schema["properties"]["business_id"] == {"type": "string"}
    assert schema["properties"]["patient_id"] == NULL_STRING
    assert "attendees_id" not in schema["properties"]
    assert (
        schema["properties"]["patient"]["properties"]["links"]["properties"]["self"] == NULL_STRING
    )


def test_the_committed_schemas_are_what_the_generator_writes() -> None:
    files = generate(SPEC)
    assert len(files) == len(COLLECTIONS)
    for name, text in files.items():
        path = SCHEMAS / name
        assert path.is_file(), f"schemas/{name} is missing: run python scripts/generate_schemas.py"
        assert path.read_text() == text, f"schemas/{name} is stale or edited by hand"
        schema = json.loads(text)
        jsonschema.Draft202012Validator.check_schema(schema)
        for key in BY_NAME[name.removesuffix(".json")].key:
            assert key in schema["properties"], (name, key)


def spec_lists() -> dict[str, tuple[str, set[str]]]:
    """Top-level list routes of the spec: route -> (records key, filterable columns)."""
    lists = {}
    for path, operations in SPEC["paths"].items():
        get = operations.get("get")
        if "{" in path or not get:
            continue
        body = get["responses"]["200"]["content"]["application/json"]["schema"]
        keys = [k for k in body.get("properties", {}) if k not in ("total_entries", "links")]
        if not keys:
            continue  # a single object: settings, the current user
        filters: set[str] = set()
        for parameter in get.get("parameters", []):
            if parameter.get("name") == "q[]":
                filters = set(re.findall(r"^\| (\w+) \|", parameter["description"], re.M))
        lists[path] = (keys[0], filters)
    return lists


def test_every_collection_of_the_spec_has_a_stream() -> None:
    routes = {route for c in COLLECTIONS if not c.parent for route in c.routes}
    # /patients has its three streams; /patient_cases/active is a subset of /patient_cases.
    missing = set(spec_lists()) - routes - {"/patients", "/patient_cases/active"}
    assert missing == set()
    assert len([c for c in COLLECTIONS if not c.parent]) + 1 == 38  # 38 collections (+ patients)


def test_hidden_row_filters_match_the_spec() -> None:
    lists = spec_lists()
    for collection in COLLECTIONS:
        if collection.parent:
            continue
        key, filters = lists[collection.path]
        assert key == collection.records_key
        assert (ARCHIVED in collection.hidden) == ("archived_at" in filters), collection.name
        assert (CANCELLED in collection.hidden) == ("cancelled_at" in filters), collection.name
        if collection.incremental:
            assert {"updated_at", "id"} <= filters, collection.name
        if collection.keyset:
            assert "id" in filters, collection.name


def test_every_link_to_a_patient_is_watched_by_privacy_redaction() -> None:
    for collection in COLLECTIONS:
        schema = json.loads((SCHEMAS / f"{collection.name}.json").read_text())
        text = (SPEC["paths"].get(collection.path) or {}).get("get", {})
        if not text:
            continue
        items = text["responses"]["200"]["content"]["application/json"]["schema"]["properties"][
            collection.records_key
        ]["items"]
        links = one_record_links(items, COMPONENTS)
        to_patients = {
            name
            for name in links
            if "/patients/" in json.dumps(_resolve_props(items).get(name, {}))
        }
        assert to_patients <= set(collection.patient_fields), collection.name
        assert set(collection.patient_fields) <= set(schema["properties"]), collection.name


def _resolve_props(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = COMPONENTS[node["$ref"].rsplit("/", 1)[1]]
    props: dict[str, Any] = {}
    for variant in node.get("anyOf", []) + node.get("oneOf", []):
        props.update(_resolve_props(variant))
    props.update(node.get("properties", {}))
    return props


def write_profile(path: Path, collections: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"profile_version": 1, "collections": collections}))
    return path


def test_a_profile_report_names_the_fields_the_schemas_lack_with_their_types(
    tmp_path: Path,
) -> None:
    one = write_profile(
        tmp_path / "one.json",
        {
            "patients": {
                "unknown_fields": {"pronouns_v2": ["string", "null"], "email": ["string"]}
            },
            "appointments": {"unknown_fields": {"telehealth_room": ["object"]}},
            "taxes": {"unknown_fields": {}},
        },
    )
    two = write_profile(
        tmp_path / "two.json",
        {
            "archived_patients": {"unknown_fields": {"pronouns_v2": ["null"]}},
            "patients": {"unknown_fields": {"pronouns_v2": ["integer"]}},
        },
    )
    report = profile_report([one, two])
    assert report.splitlines() == [
        "Fields seen in 2 profile(s) that the schemas lack:",
        "  appointments.telehealth_room: object",
        "  archived_patients.pronouns_v2: null",
        "  patients.pronouns_v2: string | integer | null",  # email is in schemas/patient.json
    ]
    assert profile_report([write_profile(tmp_path / "none.json", {})]).splitlines()[1] == (
        "  none: every field seen is in the schemas"
    )


def test_a_bad_profile_is_refused_in_one_line(tmp_path: Path) -> None:
    cases = {
        "missing.json": None,
        "bad.json": "{",
        "old.json": json.dumps({"profile_version": 0}),
        "types.json": json.dumps(
            {"profile_version": 1, "collections": {"patients": {"unknown_fields": {"a": ["text"]}}}}
        ),
    }
    for name, text in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        done = subprocess.run(
            [sys.executable, "scripts/generate_schemas.py", "--profile", str(tmp_path / name)],
            capture_output=True,
            text=True,
            cwd=SCHEMAS.parent,
        )
        assert done.returncode == 2, (name, done.stderr)
        assert done.stdout == ""
        assert len(done.stderr.splitlines()) == 1, done.stderr
        assert done.stderr.startswith("generate_schemas: error: "), done.stderr
        assert "Traceback" not in done.stderr
