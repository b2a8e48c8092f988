"""Write schemas/<stream>.json for every collection in tap_cliniko.resources, from the spec.

    python scripts/generate_schemas.py            # (re)write the schemas
    python scripts/generate_schemas.py --check    # exit 1 if a committed schema differs
    python scripts/generate_schemas.py --profile profile.json [--profile ...]
        # report the fields a doctor profile saw that the schemas lack (names, JSON types)

The input is Cliniko's published OpenAPI document, copied to tests/api-docs/openapi.yaml.
The rules (see `convert`): every value may be null, because the spec's `nullable` is not
reliable and a too-strict schema makes targets drop or refuse rows; `id` is a string of
digits; only the `date`, `date-time` and `decimal` formats are kept (targets type by them); link
objects are kept, and each link to one record also gets a `<name>_id` column; `anyOf` and
`oneOf` unions (communications, bookings) are merged into one object with every field.
schemas/patient.json is not generated: it also covers the older Patients page.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tap_cliniko.resources import COLLECTIONS, Collection  # noqa: E402

SPEC = ROOT / "tests" / "api-docs" / "openapi.yaml"
SCHEMAS = ROOT / "schemas"
KEPT_FORMATS = ("date", "date-time", "decimal")
# The example link of a field that points at one record: .../v1/<collection>/<id>
ONE_RECORD_LINK = re.compile(r"/v1/[a-z_]+/\d+$")
Schema = dict[str, Any]


def resolve(node: Mapping[str, Any], components: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow `$ref`s to the node they name."""
    while "$ref" in node:
        node = components[node["$ref"].rsplit("/", 1)[1]]
    return node


def _types(schema: Mapping[str, Any]) -> list[str]:
    value = schema.get("type", [])
    return [value] if isinstance(value, str) else list(value)


def merge(a: Schema, b: Schema) -> Schema:
    """One schema accepting what either accepts (object properties merged field by field)."""
    types = [t for t in ("object", "array", "string", "number", "integer", "boolean")]
    merged_types = [t for t in types if t in _types(a) or t in _types(b)]
    if "number" in merged_types and "integer" in merged_types:
        merged_types.remove("integer")
    result: Schema = {"type": [*merged_types, "null"]} if merged_types else {}
    if "properties" in a or "properties" in b:
        props = dict(a.get("properties", {}))
        for name, prop in b.get("properties", {}).items():
            props[name] = merge(props[name], prop) if name in props else prop
        result["properties"] = dict(sorted(props.items()))
    if "items" in a or "items" in b:
        items_a, items_b = a.get("items"), b.get("items")
        result["items"] = merge(items_a, items_b) if items_a and items_b else items_a or items_b
    formats = {s.get("format") for s in (a, b) if "string" in _types(s)}
    if len(formats) == 1 and (fmt := formats.pop()) is not None and merged_types == ["string"]:
        result["format"] = fmt
    return result


def convert(node: Mapping[str, Any], components: Mapping[str, Any]) -> Schema:
    """The JSON schema of one spec node: nullable, no constraints, date formats kept."""
    node = resolve(node, components)
    variants = [*node.get("anyOf", []), *node.get("oneOf", []), *node.get("allOf", [])]
    if variants:
        result: Schema = {}
        for variant in variants:
            converted = convert(variant, components)
            result = merge(result, converted) if result else converted
        if "properties" in node:
            result = merge(
                result, convert({**node, "anyOf": [], "oneOf": [], "allOf": []}, components)
            )
        return result
    kind = node.get("type") or ("object" if "properties" in node else None)
    if kind is None:
        return {}  # the spec says nothing: accept anything
    if kind == "object":
        result = {"type": ["object", "null"]}
        if "properties" in node:
            result["properties"] = {
                name: convert(prop, components) for name, prop in sorted(node["properties"].items())
            }
        return result
    if kind == "array":
        result = {"type": ["array", "null"]}
        if "items" in node:
            result["items"] = convert(node["items"], components)
        return result
    result = {"type": [kind, "null"]}
    if kind == "string" and node.get("format") in KEPT_FORMATS:
        result["format"] = node["format"]
    return result


def one_record_links(node: Mapping[str, Any], components: Mapping[str, Any]) -> list[str]:
    """Top-level fields holding a link to one record (`{"links": {"self": .../x/1}}`)."""
    node = resolve(node, components)
    fields: set[str] = set()
    for variant in [*node.get("anyOf", []), *node.get("oneOf", []), *node.get("allOf", [])]:
        fields.update(one_record_links(variant, components))
    for name, prop in node.get("properties", {}).items():
        prop = resolve(prop, components)
        link = prop.get("properties", {}).get("links", {}).get("properties", {}).get("self", {})
        if ONE_RECORD_LINK.search(str(link.get("example", ""))):
            fields.add(name)
    return sorted(fields)


def record_schema(
    items: Mapping[str, Any], components: Mapping[str, Any], parent_key: str = ""
) -> Schema:
    """A stream's schema from the spec's item schema of its list."""
    schema = convert(items, components)
    props: Schema = dict(schema.get("properties", {}))
    for link in one_record_links(items, components):
        props.setdefault(f"{link}_id", {"type": ["string", "null"]})
    if "id" in props:
        props["id"] = {"type": "string"}
    if parent_key:
        props[parent_key] = {"type": "string"}
    return {"type": "object", "properties": dict(sorted(props.items()))}


def spec_path(spec: Mapping[str, Any], route: str) -> Mapping[str, Any]:
    """The spec's GET operation for a route (a child's `{parent_id}` matches any parameter)."""
    pattern = re.compile("^" + re.escape(route).replace(r"\{parent_id\}", r"\{[a-z_]+\}") + "$")
    for path, operations in spec["paths"].items():
        if pattern.match(path) and "get" in operations:
            return operations["get"]  # type: ignore[no-any-return]
    raise KeyError(f"{route} is not a GET route of the spec")


def list_items(spec: Mapping[str, Any], route: str, records_key: str) -> Mapping[str, Any]:
    """The item schema of a list route's records."""
    operation = spec_path(spec, route)
    body = operation["responses"]["200"]["content"]["application/json"]["schema"]
    return body["properties"][records_key]["items"]  # type: ignore[no-any-return]


def collection_schema(spec: Mapping[str, Any], collection: Collection) -> Schema:
    """The committed schema of one collection's stream."""
    components = spec["components"]["schemas"]
    items = list_items(spec, collection.path, collection.records_key)
    return record_schema(items, components, collection.parent_key)


def render(schema: Schema) -> str:
    """The file text of a schema: stable order, two-space indent, final newline."""
    return json.dumps(schema, indent=2) + "\n"


def generate(spec: Mapping[str, Any]) -> dict[str, str]:
    """File name -> text of every generated schema."""
    return {f"{c.name}.json": render(collection_schema(spec, c)) for c in COLLECTIONS}


def load_spec(path: Path = SPEC) -> dict[str, Any]:
    """Read the OpenAPI document."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


PATIENT_STREAMS = ("patients", "archived_patients", "deleted_patients")  # schemas/patient.json
JSON_TYPES = ("string", "integer", "number", "boolean", "object", "array", "null")


class ProfileError(Exception):
    """A profile that cannot be read: the message is the one line to print."""


def read_profile(path: Path) -> dict[str, dict[str, list[str]]]:
    """Stream -> unknown field -> observed JSON types, from a doctor profile (names only)."""
    try:
        profile = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"cannot read profile {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ProfileError(f"profile {path} is not JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(profile, dict) or profile.get("profile_version") != 1:
        raise ProfileError(
            f"{path} is not a doctor profile of version 1: write one with"
            " tap-cliniko-doctor --config config.json --output profile.json"
        )
    fields: dict[str, dict[str, list[str]]] = {}
    for stream, seen in (profile.get("collections") or {}).items():
        unknown = seen.get("unknown_fields") if isinstance(seen, dict) else None
        if not isinstance(unknown, dict) or not all(
            isinstance(types, list) and set(types) <= set(JSON_TYPES) for types in unknown.values()
        ):
            raise ProfileError(
                f"{path}: collections.{stream}.unknown_fields must map field names to lists"
                f" of JSON types ({', '.join(JSON_TYPES)})"
            )
        fields[stream] = unknown
    return fields


def schema_key(stream: str) -> str:
    """The schema file a stream reads (the patient streams share schemas/patient.json)."""
    return "patient" if stream in PATIENT_STREAMS else stream


def profile_report(profiles: list[Path], schemas: Path = SCHEMAS) -> str:
    """What the profiles saw that the committed schemas lack: stream, field, JSON types."""
    seen: dict[str, dict[str, set[str]]] = {}
    for path in profiles:
        for stream, unknown in read_profile(path).items():
            for name, types in unknown.items():
                seen.setdefault(stream, {}).setdefault(name, set()).update(types)
    lines = [f"Fields seen in {len(profiles)} profile(s) that the schemas lack:"]
    for stream in sorted(seen):
        schema_file = schemas / f"{schema_key(stream)}.json"
        known = json.loads(schema_file.read_text())["properties"] if schema_file.is_file() else {}
        for name in sorted(set(seen[stream]) - set(known)):
            types = [t for t in JSON_TYPES if t in seen[stream][name]]
            lines.append(f"  {stream}.{name}: {' | '.join(types) or 'no value seen'}")
    if len(lines) == 1:
        lines.append("  none: every field seen is in the schemas")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    parser.add_argument("--spec", type=Path, default=SPEC)
    parser.add_argument(
        "--profile",
        type=Path,
        action="append",
        default=[],
        help="a doctor profile: report the fields it saw that the schemas lack (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.profile:
        try:
            sys.stdout.write(profile_report(args.profile))
        except ProfileError as exc:
            print(f"generate_schemas: error: {exc}", file=sys.stderr)
            return 2
        return 0
    files = generate(load_spec(args.spec))
    stale = [
        n
        for n, text in files.items()
        if not (SCHEMAS / n).is_file() or (SCHEMAS / n).read_text() != text
    ]
    if args.check:
        for name in stale:
            print(f"schemas/{name} differs from the spec: run python scripts/generate_schemas.py")
        return 1 if stale else 0
    for name in stale:
        (SCHEMAS / name).write_text(files[name], encoding="utf-8")
    print(f"{len(files)} schemas, {len(stale)} written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
