"""Every collection of the local Cliniko: lists, records, paging, filters, hidden rows, nesting."""

from __future__ import annotations

import itertools
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import yaml

from tap_cliniko.sandbox import SandboxConfig, SandboxServer
from tap_cliniko.sandbox.resources import BY_NAME, NESTED, RESOURCES
from tap_cliniko.sandbox.shapes import SHAPES_FILE, render_json, shapes_from_spec
from tests.sandbox.conftest import KEY, Client

SPEC_FILE = Path(__file__).parents[1] / "api-docs" / "openapi.yaml"
NAMES = [r.name for r in RESOURCES]
LEGACY_VARIANTS = [(r.name, v) for r in RESOURCES for v in r.variants if v != "inactive"]
LEGACY_VARIANTS = [(n, v) for n, v in LEGACY_VARIANTS if v != "active"]
DELETED = [r.name for r in RESOURCES if "deleted" in r.variants]
ID = re.compile(r"^\d{19}$")


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SPEC_FILE.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def account(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SandboxServer, Client]]:
    """One whole account, read by the tests that only read."""
    config = SandboxConfig(
        patients=150, seed=21, api_key=KEY, data_dir=tmp_path_factory.mktemp("account")
    )
    with SandboxServer(config) as server:
        yield server, Client(server)


def every_row(client: Client, path: str, key: str, **params: Any) -> list[dict[str, Any]]:
    """Every row of a list route, following links.next."""
    rows: list[dict[str, Any]] = []
    answer = client.get(path, per_page=100, **params).json()
    while True:
        rows += answer[key]
        if "next" not in answer["links"]:
            return rows
        answer = client.session.get(answer["links"]["next"], timeout=30).json()


def ids_of(rows: list[dict[str, Any]]) -> set[str]:
    return {row["links"]["self"].rsplit("/", 1)[1] for row in rows}


def spec_fields(spec: dict[str, Any], name: str) -> set[str]:
    schemas = spec["components"]["schemas"]
    content = spec["paths"][f"/{name}"]["get"]["responses"]["200"]["content"]
    ref = content["application/json"]["schema"]["properties"][name]["items"]["$ref"]
    node = schemas[ref.rsplit("/", 1)[1]]
    fields: set[str] = set(node.get("properties", {}))
    for variant in node.get("anyOf", []):
        fields |= set(schemas[variant["$ref"].rsplit("/", 1)[1]]["properties"])
    return fields


def test_shapes_json_is_generated_from_the_spec(spec: dict[str, Any]) -> None:
    assert SHAPES_FILE.read_text(encoding="utf-8") == render_json(shapes_from_spec(spec)), (
        "run: python -m tap_cliniko.sandbox.shapes tests/api-docs/openapi.yaml"
    )


def test_every_top_level_list_of_the_spec_is_served(spec: dict[str, Any]) -> None:
    top_level = {
        p.strip("/").split("/")[0]
        for p, ops in spec["paths"].items()
        if "{" not in p and "get" in ops and "total_entries" in str(ops["get"]["responses"])
    }
    assert set(NAMES) == top_level
    assert len(NAMES) == 38


@pytest.mark.parametrize("name", NAMES)
def test_each_collection_lists_records_shaped_like_the_spec(
    account: tuple[SandboxServer, Client], spec: dict[str, Any], name: str
) -> None:
    server, client = account
    answer = client.get(f"/{name}", per_page=100)
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {name, "total_entries", "links"}
    rows = body[name]
    assert rows and body["total_entries"] >= len(rows), f"{name}: the account should hold rows"
    fields = spec_fields(spec, name)
    for row in rows:
        if name == "bookings":  # each row is shaped as its own collection's record
            assert set(row) <= fields and {"id", "starts_at", "links"} <= set(row)
        else:
            assert set(row) == fields, f"{name}: {set(row) ^ fields}"
        if "id" in row:
            assert isinstance(row["id"], str) and ID.match(row["id"])
            assert row["links"]["self"].startswith(f"{server.base_url}/")
            assert row["links"]["self"].endswith(f"/{row['id']}")
            assert client.get(urlsplit(row["links"]["self"]).path.removeprefix("/v1")).ok
        for value in row.values():
            if isinstance(value, dict) and "links" in value:
                assert set(value) == {"links"} and value["links"]["self"].startswith("http")
        for marker in ("archived_at", "cancelled_at", "deleted_at"):
            assert row.get(marker) is None, f"{name}: a plain list hides {marker} rows"


def test_ids_are_unique_across_collections(account: tuple[SandboxServer, Client]) -> None:
    server, _ = account
    seen: dict[str, str] = {}
    for resource in RESOURCES:
        if resource.computed or resource.union:
            continue
        for row_id in server.store.snapshot(resource.name):
            assert row_id not in seen, f"{row_id} in {seen.get(row_id)} and {resource.name}"
            seen[row_id] = resource.name


def test_references_point_at_rows_that_exist(account: tuple[SandboxServer, Client]) -> None:
    _, client = account
    appointment = client.get("/individual_appointments").json()["individual_appointments"][0]
    for field in ("patient", "practitioner", "business", "appointment_type"):
        path = urlsplit(appointment[field]["links"]["self"]).path.removeprefix("/v1")
        assert client.get(path).status_code == 200, field
    invoice = client.get("/invoices").json()["invoices"][0]
    items = client.get("/invoice_items", **{"q[]": f"invoice_id:={invoice['id']}"}).json()
    assert items["total_entries"] >= 1
    assert all(
        i["invoice"]["links"]["self"].endswith(invoice["id"]) for i in items["invoice_items"]
    )
    note = client.get("/treatment_notes").json()["treatment_notes"][0]
    sections = note["content"]["sections"]
    assert sections and all(q["answer"] for s in sections for q in s["questions"])


def test_the_clinic_is_realistic(account: tuple[SandboxServer, Client]) -> None:
    server, client = account
    appointments = server.store.snapshot("individual_appointments")
    statuses = [entry["status"] for entry in appointments.values()]
    patients = len(server.store.snapshot())
    assert 1 < len(appointments) / patients < 8
    for status in ("active", "cancelled", "archived", "deleted"):
        assert status in statuses, status
    records = [e["record"] for e in appointments.values()]
    assert any(r["did_not_arrive"] for r in records)
    assert any(r["cancellation_reason_description"] for r in records)
    repeats = [r for r in records if r["repeated_from"]]
    assert repeats and all(r["repeat_rule"]["repeat_type"] == "Weekly" for r in repeats)
    head = repeats[0]["repeated_from"]["links"]["self"].rsplit("/", 1)[1]
    every = ["archived_at:*", "cancelled_at:*", f"repeated_from_id:={head}"]
    series = client.get("/individual_appointments", **{"q[]": every})
    assert series.json()["total_entries"] >= 1
    attendees = server.store.snapshot("attendees")
    assert len(attendees) > len(appointments), "individual and group attendees"
    invoices = [e["record"] for e in server.store.snapshot("invoices").values()]
    assert {i["status"] for i in invoices} >= {10, 20}
    assert len(server.store.snapshot("practitioners")) >= 5
    inactive = [e for e in server.store.snapshot("practitioners").values()]
    assert any(e["status"] == "inactive" for e in inactive)


def test_paging_walks_every_row_and_links_keep_filters(
    account: tuple[SandboxServer, Client],
) -> None:
    server, client = account
    filters = ["archived_at:*", "cancelled_at:*"]
    first = client.get("/attendees", per_page=20, sort="updated_at", **{"q[]": filters}).json()
    query = parse_qsl(urlsplit(first["links"]["next"]).query)
    assert [v for k, v in query if k == "q[]"] == filters and ("sort", "updated_at") in query
    assert ("page", "2") in query and "previous" not in first["links"]
    second = client.session.get(first["links"]["next"], timeout=30).json()
    assert "page=1" in second["links"]["previous"]
    rows = every_row(client, "/attendees", "attendees", **{"q[]": filters})
    live = {i for i, e in server.store.snapshot("attendees").items() if e["status"] != "deleted"}
    assert len(rows) == first["total_entries"] == len(live)
    assert {r["id"] for r in rows} == live


@pytest.mark.parametrize(
    ("name", "marker"),
    [
        ("individual_appointments", "cancelled_at"),
        ("individual_appointments", "archived_at"),
        ("attendees", "cancelled_at"),
        ("invoices", "archived_at"),
        ("appointment_types", "archived_at"),
        ("treatment_notes", "archived_at"),
    ],
)
def test_hidden_rows_come_back_with_their_marker_filter(
    account: tuple[SandboxServer, Client], name: str, marker: str
) -> None:
    server, client = account
    snapshot = server.store.snapshot(name)
    other = {"archived_at", "cancelled_at"} - {marker} & BY_NAME[name].markers
    status = marker.removesuffix("_at")
    marked = {i for i, e in snapshot.items() if e["status"] == status}
    visible = {i for i, e in snapshot.items() if e["status"] == "active"}
    assert marked, f"{name}: the account should hold {status} rows"

    def listed(*filters: str) -> set[str]:
        return {r["id"] for r in every_row(client, f"/{name}", name, **{"q[]": list(filters)})}

    assert listed() == visible
    assert listed(f"{marker}:*") == visible | marked
    assert listed(f"{marker}:?") == marked
    assert listed(f"{marker}:!?") == visible
    assert listed(f"{marker}:>=2000-01-01T00:00:00Z") == marked
    if other:
        everything = {i for i, e in snapshot.items() if e["status"] != "deleted"}
        assert listed("archived_at:*", "cancelled_at:*") == everything


@pytest.mark.parametrize(
    ("name", "query", "check"),
    [
        ("individual_appointments", "did_not_arrive:=true", lambda r: r["did_not_arrive"]),
        ("invoices", "status:=20", lambda r: r["status"] == 20),
        ("invoices", "issue_date:>=2024-01-01", lambda r: r["issue_date"] >= "2024-01-01"),
        ("contacts", "last_name:~a", lambda r: "a" in r["last_name"].lower()),
        (
            "unavailable_blocks",
            "unavailable_block_type_id:?",
            lambda r: r["unavailable_block_type"],
        ),
        (
            "group_appointments",
            "starts_at:<2025-01-01T00:00:00Z",
            lambda r: r["starts_at"] < "2025",
        ),
        ("products", "name:=Foam roller", lambda r: r["name"] == "Foam roller"),
    ],
)
def test_filters_select_what_they_say(
    account: tuple[SandboxServer, Client], name: str, query: str, check: Any
) -> None:
    _, client = account
    answer = client.get(f"/{name}", per_page=100, **{"q[]": query})
    assert answer.status_code == 200, answer.text
    rows = answer.json()[name]
    assert rows, f"{query} selected nothing: the account should cover it"
    assert all(check(r) for r in rows)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "services"])
def test_unknown_columns_and_bad_sorts_answer_400(
    account: tuple[SandboxServer, Client], name: str
) -> None:
    _, client = account
    refused = client.get(f"/{name}", **{"q[]": "no_such_column:=1"})
    assert refused.status_code == 400
    assert refused.json() == {"message": "This column is not searchable."}
    assert client.get(f"/{name}", **{"q[]": "updated_at:>=yesterday"}).status_code == 400
    bad = client.get(f"/{name}", sort="no_such_column")
    assert bad.status_code == 400
    assert bad.json() == {"message": "Sort parameter must be a valid column name"}
    by_id = client.get(f"/{name}", per_page=100, sort="id").json()[name]
    ids = [int(r["id"]) for r in by_id]
    assert ids == sorted(ids)
    newest = client.get(f"/{name}", per_page=100, sort="updated_at:desc,id").json()[name]
    keys = [(r["updated_at"], -int(r["id"])) for r in newest]
    assert keys == sorted(keys, reverse=True)
    keyset = client.get(f"/{name}", per_page=5, sort="id", **{"q[]": f"id:>{ids[0]}"}).json()
    assert [int(r["id"]) for r in keyset[name]] == ids[1:6]


def test_services_have_no_ids_no_filters_and_no_id_sort(
    account: tuple[SandboxServer, Client],
) -> None:
    _, client = account
    rows = every_row(client, "/services", "services")
    assert rows and all(set(r) == {"appointment_type", "business", "practitioners"} for r in rows)
    keys = [(r["business"]["links"]["self"], r["appointment_type"]["links"]["self"]) for r in rows]
    assert len(set(keys)) == len(keys)
    assert (
        client.get("/services", **{"q[]": "updated_at:>=2020-01-01T00:00:00Z"}).status_code == 400
    )
    assert client.get("/services", sort="id").status_code == 400


@pytest.mark.parametrize("name", DELETED)
def test_deleted_variants_hold_deleted_rows_thin_on_current(
    account: tuple[SandboxServer, Client], name: str
) -> None:
    server, client = account
    deleted = {i for i, e in server.store.snapshot(name).items() if e["status"] == "deleted"}
    assert deleted, f"{name}: the account should hold deleted rows"
    rows = every_row(client, f"/{name}/deleted", name)
    assert all(set(r) == {"deleted_at", "links"} for r in rows)
    assert ids_of(rows) == deleted
    assert all(client.get(f"/{name}/{i}").status_code == 404 for i in list(deleted)[:3])
    refused = client.get(f"/{name}/deleted", **{"q[]": "updated_at:>=2000-01-01T00:00:00Z"})
    assert refused.status_code == 400
    since = client.get(f"/{name}/deleted", **{"q[]": "deleted_at:>=2000-01-01T00:00:00Z"})
    assert since.json()["total_entries"] == len(deleted)
    plain = every_row(client, f"/{name}", name, **{"q[]": "archived_at:*"})
    assert not ids_of(plain) & deleted


def test_cancelled_and_archived_variants(account: tuple[SandboxServer, Client]) -> None:
    server, client = account
    for name, variant in (
        ("individual_appointments", "cancelled"),
        ("attendees", "cancelled"),
        ("appointment_types", "archived"),
    ):
        expected = {i for i, e in server.store.snapshot(name).items() if e["status"] == variant}
        rows = every_row(client, f"/{name}/{variant}", name)
        assert expected and {r["id"] for r in rows} == expected


def test_without_variant_routes_every_legacy_variant_answers_404(start: Any) -> None:
    _, client = start(patients=20, seed=3, variant_routes=False)
    for name, variant in LEGACY_VARIANTS:
        assert client.get(f"/{name}/{variant}").status_code == 404, f"/{name}/{variant}"
    assert client.get("/practitioners/inactive").status_code == 200
    assert client.get("/patient_cases/active").status_code == 200


def test_practitioners_active_and_inactive_partition_them(
    account: tuple[SandboxServer, Client],
) -> None:
    server, client = account
    snapshot = server.store.snapshot("practitioners")
    active = {r["id"] for r in every_row(client, "/practitioners", "practitioners")}
    inactive = {r["id"] for r in every_row(client, "/practitioners/inactive", "practitioners")}
    assert active and inactive and not active & inactive
    assert active | inactive == set(snapshot)
    assert all(
        r["active"] is False for r in client.get("/practitioners/inactive").json()["practitioners"]
    )


def test_nested_routes_carry_the_memberships(account: tuple[SandboxServer, Client]) -> None:
    server, client = account
    practitioners = {
        int(i): server.store.get(i, "practitioners") for i in server.store.snapshot("practitioners")
    }
    for business in every_row(client, "/businesses", "businesses"):
        works_here = {
            str(i)
            for i, p in practitioners.items()
            if p and int(business["id"]) in p["business_ids"]
        }
        nested = set()
        for suffix in ("", "/inactive"):
            path = f"/businesses/{business['id']}/practitioners{suffix}"
            nested |= {r["id"] for r in every_row(client, path, "practitioners")}
        assert nested == works_here and nested
    kind = every_row(client, "/appointment_types", "appointment_types")[0]
    offering = every_row(client, f"/appointment_types/{kind['id']}/practitioners", "practitioners")
    assert offering
    for practitioner in offering:
        offered = every_row(
            client, f"/practitioners/{practitioner['id']}/appointment_types", "appointment_types"
        )
        assert kind["id"] in {t["id"] for t in offered}
    assert client.get("/businesses/1/practitioners").status_code == 404
    paged = client.get(f"/businesses/{business['id']}/practitioners", per_page=1).json()
    assert "per_page=1" in paged["links"]["self"]


@pytest.mark.parametrize("nested", NESTED, ids=lambda n: n.path)
def test_every_nested_route_answers(account: tuple[SandboxServer, Client], nested: Any) -> None:
    _, client = account
    parent = client.get(f"/{nested.parent}", per_page=5).json()[nested.parent]
    for row in parent:
        path = nested.path.replace("<int:parent_id>", row["id"])
        answer = client.get(path)
        assert answer.status_code == 200, path
        assert set(answer.json()) == {nested.child, "total_entries", "links"}


def test_legacy_behaviour_shapes_every_collection_the_older_way(start: Any) -> None:
    _, client = start(patients=40, seed=5, behaviour="legacy")
    rows = client.get("/individual_appointments", per_page=100).json()["individual_appointments"]
    assert rows and all(isinstance(r["id"], int) for r in rows)
    assert all(r["archived_at"] == "" and r["cancelled_at"] == "" for r in rows)
    deleted = client.get("/invoices/deleted", **{"q[]": "updated_at:>=2000-01-01T00:00:00Z"})
    assert deleted.status_code == 200
    assert all("total_amount" in r for r in deleted.json()["invoices"])
    everyone = [
        r["id"]
        for name in ("individual_appointments", "group_appointments", "unavailable_blocks")
        for r in every_row(client, f"/{name}", name)
    ]
    assert len(everyone) == len(set(everyone)), "bookings' ids must not collide"


def test_same_seed_same_account_other_seed_other_account(start: Any) -> None:
    def account(seed: int) -> dict[str, Any]:
        server, _ = start(patients=60, seed=seed)
        whole = {}
        for resource in RESOURCES:
            snapshot = server.store.snapshot(resource.name)
            whole[resource.name] = [
                (i, e["status"], _timeless(e["record"], server.base_url))
                for i, e in snapshot.items()
            ]
        return whole

    first, again, other = account(31), account(31), account(32)
    assert first == again
    assert first["individual_appointments"] != other["individual_appointments"]
    assert first["invoices"] != other["invoices"]


def _timeless(record: dict[str, Any], base: str) -> Any:
    """A record without its moments (anchored at the server's start) or its base URL."""
    if isinstance(record, dict):
        return {k: _timeless(v, base) for k, v in record.items() if not k.endswith("_at")}
    if isinstance(record, list):
        return [_timeless(v, base) for v in record]
    return record.replace(base, "") if isinstance(record, str) else record


def test_collections_zero_is_patients_only(start: Any) -> None:
    server, client = start(patients=30, seed=6, collections=0)
    assert client.get("/patients").json()["total_entries"] > 0
    for name in ("individual_appointments", "invoices", "businesses", "services"):
        answer = client.get(f"/{name}")
        assert answer.status_code == 200 and answer.json()["total_entries"] == 0
    assert server.store.count("individual_appointments") == 0


def test_pages_stay_consistent_with_id_keyset(account: tuple[SandboxServer, Client]) -> None:
    _, client = account
    seen: list[int] = []
    cursor = 0
    while True:
        rows = client.get(
            "/invoices", per_page=37, sort="id", **{"q[]": [f"id:>{cursor}", "archived_at:*"]}
        ).json()["invoices"]
        if not rows:
            break
        seen += [int(r["id"]) for r in rows]
        cursor = seen[-1]
    assert seen == sorted(seen) and len(seen) == len(set(seen))
    assert all(a < b for a, b in itertools.pairwise(seen))
    total = client.get("/invoices", **{"q[]": "archived_at:*"}).json()["total_entries"]
    assert len(seen) == total


def test_limits_and_faults_apply_to_every_collection(start: Any) -> None:
    server, client = start(patients=20, seed=7, rate_limit_per_minute=4)
    answers = [client.get(path) for path in ("/invoices", "/attendees", "/services", "/users")]
    assert all(a.ok for a in answers)
    limited = client.get("/businesses/1/practitioners")
    assert limited.status_code == 429 and int(limited.headers["X-RateLimit-Reset"]) > 0
    server, client = start(patients=20, seed=7)
    server.faults.fail_next(1, status=503)
    assert client.get("/invoice_items").status_code == 503
    server.faults.midbody_drop_rate = 1.0
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        client.get("/individual_appointments", per_page=100)
    server.faults.midbody_drop_rate = 0.0
    server.faults.truncate_rate = 1.0
    with pytest.raises(ValueError):
        client.get("/invoices").json()


def json_schema(spec: dict[str, Any], node: Any) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema (draft 4): $refs inlined, `nullable` as a null type.

    A link object may also be null: a reference that is not set (an appointment with no case,
    an invoice item with no product) is null on the wire, whatever the spec says.
    """
    if isinstance(node, list):
        return [json_schema(spec, n) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return json_schema(spec, spec["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]])
    converted = {
        k: json_schema(spec, v)
        for k, v in node.items()
        if k not in ("nullable", "example", "format", "pattern") and not k.startswith("x-")
    }
    is_link = node.get("type") == "object" and set(node.get("properties", {})) == {"links"}
    if node.get("nullable") or is_link:
        if "type" in converted:
            converted["type"] = [converted["type"], "null"]
        if "enum" in converted:
            converted["enum"] = [*converted["enum"], None]
    return converted


@pytest.mark.parametrize("name", NAMES)
def test_records_validate_against_the_spec_schema(
    account: tuple[SandboxServer, Client], spec: dict[str, Any], name: str
) -> None:
    import jsonschema

    _, client = account
    content = spec["paths"][f"/{name}"]["get"]["responses"]["200"]["content"]
    schema = json_schema(spec, content["application/json"]["schema"]["properties"][name]["items"])
    validator = jsonschema.Draft4Validator(schema)
    hidden = [f"{marker}:*" for marker in BY_NAME[name].hidden]
    rows = client.get(f"/{name}", per_page=100, **{"q[]": hidden}).json()[name]
    errors = [f"{list(e.path)}: {e.message[:120]}" for r in rows for e in validator.iter_errors(r)]
    assert not errors, f"{name}: {errors[:5]}"


def test_a_data_dir_of_an_older_layout_is_rebuilt(tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    with sqlite3.connect(old / "cliniko.sqlite3") as db:
        db.execute("CREATE TABLE patients (id INTEGER PRIMARY KEY, first_name TEXT)")
        db.execute("INSERT INTO patients VALUES (1, 'Stale')")
    config = SandboxConfig(patients=30, seed=8, api_key=KEY, data_dir=old, collections=0.2)
    with SandboxServer(config) as server:
        patients = Client(server).get("/patients").json()
        assert patients["total_entries"] > 0
        assert all(p["first_name"] != "Stale" for p in patients["patients"])
        assert server.store.count("individual_appointments") > 0
