"""What each list route answers, cut from Cliniko's OpenAPI spec into shapes.json.

`python -m tap_cliniko.sandbox.shapes tests/api-docs/openapi.yaml` rewrites shapes.json; a test
regenerates it and compares. Nobody edits shapes.json by hand.

shapes.json holds, per list path, the records key, the item schema and the q[] filters (column
and format); per schema, its fields in the spec's order with a kind:
- "id", "self" (the record's own `links`), a format or type name ("date-time", "date",
  "decimal", "string", "integer", "boolean", "object", "array", "ids": an array of id strings),
- "ref:NAME": a link object to /NAME/{the `FIELD_id` the record holds},
- "refs:NAME": an array of such link objects (from the record's `FIELD_ids`),
- "url:TEMPLATE": a link object whose URL is TEMPLATE with {base} and {id} (the record's own).
"""

from __future__ import annotations

import json
import re
import sys
from functools import cache
from pathlib import Path
from typing import Any

SHAPES_FILE = Path(__file__).with_name("shapes.json")
EXAMPLE_BASE = "https://api.au1.cliniko.com/v1"
FILTER_ROW = re.compile(r"^\| (\w+) \| \[([\w\- ]+)\]", re.MULTILINE)
REFERENCE = re.compile(r"/(\w+)/\d+")
OWN_ID = re.compile(r"(?<=/)\d+(?=/|$)|(?<=%3D)\d+$|(?<==)\d+$")  # a path segment or a q[] value


def _resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = spec["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _properties(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Fields of a schema; a union (anyOf) has every field of each of its variants."""
    node = _resolve(spec, node)
    fields: dict[str, Any] = {}
    for part in node.get("allOf", []) + node.get("anyOf", []) + node.get("oneOf", []):
        for name, value in _properties(spec, part).items():
            fields.setdefault(name, value)
    fields.update(node.get("properties", {}))
    return fields


def _link_kind(example: str, own_path: str) -> str:
    path = example.removeprefix(EXAMPLE_BASE)
    if (match := REFERENCE.fullmatch(path)) and not path.startswith(f"{own_path}/1/"):
        return f"ref:{match.group(1)}"
    return "url:{base}" + OWN_ID.sub("{id}", path, count=1)


def field_kind(name: str, node: dict[str, Any], own_path: str) -> str:
    """The kind of one field (see the module docstring)."""
    if name == "id":
        return "id"
    kind = node.get("type")
    if kind == "object" and set(node.get("properties", {})) == {"links"}:
        links = node["properties"]["links"]
        example = links.get("properties", {}).get("self", {}).get("example", "")
        if name == "links":
            return "self"
        return _link_kind(example, own_path) if example else "url:{base}"
    if kind == "object" and name == "links":
        return "self"
    if kind == "array":
        items = node.get("items", {})
        if items.get("type") == "object" and "links" in items.get("properties", {}):
            example = items["properties"]["links"]["properties"]["self"].get("example", "")
            return "refs:" + _link_kind(example, "").removeprefix("ref:")
        if items.get("format") == "int64":
            return "ids"
        return "array"
    return str(node.get("format") or kind or "object")


def shapes_from_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Every paginated list path of the spec (top-level and nested) and its item schema."""
    paths: dict[str, Any] = {}
    schemas: dict[str, list[list[str]]] = {}
    for path, operations in spec["paths"].items():
        operation = operations.get("get")
        if not operation or operation.get("deprecated"):
            continue
        try:
            content = operation["responses"]["200"]["content"]["application/json"]["schema"]
        except KeyError:
            continue
        arrays = [k for k, v in content.get("properties", {}).items() if v.get("type") == "array"]
        if not arrays or "total_entries" not in content.get("properties", {}):
            continue
        item = content["properties"][arrays[0]]["items"]
        schema = item["$ref"].rsplit("/", 1)[1]
        filters: dict[str, str] = {}
        for parameter in operation.get("parameters", []):
            if parameter.get("name") == "q[]":
                filters = dict(FILTER_ROW.findall(parameter.get("description", "")))
        paths[path] = {"key": arrays[0], "schema": schema, "filters": filters}
        if schema not in schemas:
            own = "/" + arrays[0]
            schemas[schema] = [
                [name, field_kind(name, _resolve(spec, node), own)]
                for name, node in _properties(spec, item).items()
            ]
    return {"paths": paths, "schemas": schemas}


@cache
def shapes() -> dict[str, Any]:
    """The committed shapes.json."""
    loaded: dict[str, Any] = json.loads(SHAPES_FILE.read_text(encoding="utf-8"))
    return loaded


def render_json(data: dict[str, Any]) -> str:
    """shapes.json's text: stable, diffable."""
    return json.dumps(data, indent=1, sort_keys=False, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    import yaml  # only the generator reads YAML

    if len(argv) != 1:
        print("usage: python -m tap_cliniko.sandbox.shapes OPENAPI.yaml", file=sys.stderr)
        return 1
    spec = yaml.safe_load(Path(argv[0]).read_text(encoding="utf-8"))
    SHAPES_FILE.write_text(render_json(shapes_from_spec(spec)), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
