"""The local Cliniko against the API documents: routes, paging, filters, auth, limits, faults."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from tap_cliniko.sandbox import SandboxServer
from tests.sandbox.conftest import HEADERS, KEY, Client

COLLECTIONS = 0  # these tests need patients only


def statuses(server: SandboxServer) -> dict[str, int]:
    counts = {"active": 0, "archived": 0, "deleted": 0}
    for entry in server.store.snapshot().values():
        counts[entry["status"]] += 1
    return counts


def test_paging_defaults_limits_totals_and_links(start: Any) -> None:
    server, client = start(patients=260, seed=1)
    active = statuses(server)["active"]
    first = client.get("/patients").json()
    assert len(first["patients"]) == 50 and first["total_entries"] == active
    assert "previous" not in first["links"]
    assert first["links"]["self"].startswith(server.base_url)
    assert client.get("/patients", per_page=101).status_code == 400
    assert client.get("/patients", per_page=0).status_code == 400
    page = client.get("/patients", per_page=100, page=2, **{"q[]": ["created_at:?", "id:>0"]})
    links = page.json()["links"]
    assert urlsplit(links["next"]).netloc == urlsplit(server.base_url).netloc
    query = parse_qsl(urlsplit(links["next"]).query)
    assert query.count(("q[]", "created_at:?")) == 1 and query.count(("q[]", "id:>0")) == 1
    assert ("page", "3") in query and ("page", "1") in parse_qsl(urlsplit(links["previous"]).query)
    last = client.get("/patients", per_page=100, page=-(-active // 100)).json()
    assert "next" not in last["links"] and len(last["patients"]) == active - 100 * (active // 100)
    ids = [p["id"] for p in client.get("/patients", per_page=100).json()["patients"]]
    created = [p["created_at"] for p in client.get("/patients", per_page=100).json()["patients"]]
    assert created == sorted(created), "default order is created_at ascending"
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(
    ("query", "check"),
    [
        ("updated_at:>=2024-01-01T00:00:00Z", lambda p: p["updated_at"] >= "2024-01-01T00:00:00Z"),
        ("updated_at:>2024-01-01T00:00:00Z", lambda p: p["updated_at"] > "2024-01-01T00:00:00Z"),
        ("created_at:<2023-01-01T00:00:00Z", lambda p: p["created_at"] < "2023-01-01T00:00:00Z"),
        ("created_at:<=2023-01-01T00:00:00Z", lambda p: p["created_at"] <= "2023-01-01T00:00:00Z"),
        ("email:?", lambda p: p["email"] is not None),
        ("email:!?", lambda p: p["email"] is None),
        ("last_name:=Nowak", lambda p: p["last_name"] == "Nowak"),
        ("last_name:!=Nowak", lambda p: p["last_name"] != "Nowak"),
        ("last_name:~owa", lambda p: "owa" in p["last_name"].lower()),
        ("date_of_birth:>=1990-01-01", lambda p: (p["date_of_birth"] or "") >= "1990-01-01"),
        ("accepted_privacy_policy:=false", lambda p: p["accepted_privacy_policy"] is False),
        ("accepted_privacy_policy:!?", lambda p: p["accepted_privacy_policy"] is None),
    ],
)
def test_each_operator_selects_what_it_says(start: Any, query: str, check: Any) -> None:
    _, client = start(patients=300, seed=2)
    response = client.get("/patients", per_page=100, **{"q[]": query})
    assert response.status_code == 200
    found = response.json()["patients"]
    assert found, f"{query} selected nothing: the test data should cover it"
    assert all(check(p) for p in found)
    everyone = client.get("/patients", per_page=100, **{"q[]": "created_at:*"}).json()
    assert response.json()["total_entries"] < everyone["total_entries"]


def test_id_operators_compare_numbers(start: Any) -> None:
    _, client = start(patients=90, seed=3)
    ids = sorted(int(p["id"]) for p in client.get("/patients", per_page=100).json()["patients"])
    middle = ids[len(ids) // 2]
    above = client.get("/patients", per_page=100, **{"q[]": f"id:>{middle}"}).json()["patients"]
    assert {int(p["id"]) for p in above} == {i for i in ids if i > middle}
    exact = client.get("/patients", **{"q[]": f"id:={middle}"}).json()["patients"]
    assert [int(p["id"]) for p in exact] == [middle]


def test_unsearchable_columns_and_bad_values_answer_400(start: Any) -> None:
    _, client = start(patients=20, seed=4)
    refused = client.get("/patients", **{"q[]": "notes:~pain"})
    assert refused.status_code == 400
    assert refused.json() == {"message": "This column is not searchable."}
    assert client.get("/patients", **{"q[]": "updated_at:>=yesterday"}).status_code == 400


def test_sort_descending_with_id_tie_break(start: Any) -> None:
    _, client = start(patients=200, seed=5)
    rows = client.get("/patients", per_page=100, sort="created_at:desc").json()["patients"]
    keys = [p["created_at"] for p in rows]
    assert keys == sorted(keys, reverse=True)
    by_id = client.get("/patients", per_page=100, sort="id:desc").json()["patients"]
    assert [int(p["id"]) for p in by_id] == sorted((int(p["id"]) for p in by_id), reverse=True)
    ties = client.get("/patients", per_page=100, sort="first_name").json()["patients"]
    for a, b in itertools.pairwise(ties):
        assert (a["first_name"], int(a["id"])) <= (b["first_name"], int(b["id"]))


@pytest.mark.parametrize("touches", [True, False])
def test_write_routes_and_their_status_codes(start: Any, touches: bool) -> None:
    server, client = start(patients=10, seed=6, archive_touches_updated_at=touches)
    invalid = client.send("POST", "/patients", {"first_name": "", "last_name": "X"})
    assert invalid.status_code == 422
    assert (
        invalid.json()["message"] == "Validation Failed"
        and "first_name" in invalid.json()["errors"]
    )
    created = client.send("POST", "/patients", {"first_name": "Zoë", "last_name": "O'Brien"})
    assert created.status_code == 201
    patient = created.json()
    assert created.headers["Location"].endswith(f"/patients/{patient['id']}")
    pid = patient["id"]
    assert client.get(f"/patients/{pid}").json()["first_name"] == "Zoë"
    time.sleep(1.05)
    put = client.send("PUT", f"/patients/{pid}", {"first_name": "Zoe", "last_name": "O'Brien"})
    assert put.status_code == 200 and put.json()["updated_at"] > patient["updated_at"]
    patch = client.send("PATCH", f"/patients/{pid}", {"email": "not-an-email"})
    assert patch.status_code == 422
    before = client.get(f"/patients/{pid}").json()["updated_at"]
    time.sleep(1.05)
    assert client.send("POST", f"/patients/{pid}/archive").status_code == 204
    archived = server.store.snapshot()[str(pid)]["record"]
    assert archived["archived_at"] and (archived["updated_at"] > before) is touches
    unarchived = client.send("POST", f"/patients/{pid}/unarchive")
    assert unarchived.status_code == 200 and unarchived.json()["archived_at"] is None
    assert client.send("DELETE", f"/patients/{pid}").status_code == 204
    assert client.get(f"/patients/{pid}").status_code == 404
    assert client.get("/patients/1").status_code == 404


def test_list_routes_partition_patients_by_status(start: Any) -> None:
    server, client = start(patients=400, seed=7)
    counts = statuses(server)
    for route, status in (("", "active"), ("/archived", "archived"), ("/deleted", "deleted")):
        body = client.get(f"/patients{route}", per_page=100).json()
        assert body["total_entries"] == counts[status] > 0


def test_legacy_behaviour_matches_the_older_page(start: Any) -> None:
    _, client = start(patients=150, seed=8, behaviour="legacy")
    patients = client.get("/patients", per_page=100).json()["patients"]
    assert all(isinstance(p["id"], int) for p in patients)
    assert all(p["archived_at"] == "" and p["deleted_at"] == "" for p in patients)
    assert any(p["date_of_birth"] == "" for p in patients)
    assert "pronouns" not in patients[0]
    deleted = client.get("/patients/deleted", **{"q[]": "updated_at:>=2000-01-01T00:00:00Z"})
    assert deleted.status_code == 200
    assert all(p["first_name"] for p in deleted.json()["patients"])


def test_legacy_patient_one_is_the_documented_example(start: Any) -> None:
    """The older shape answers with the Patients page's own example, to the field."""
    text = (Path(__file__).parents[1] / "api-docs" / "patients.md").read_text()
    example = json.loads(text.split("```json\n", 1)[1].split("```", 1)[0])["patients"][0]
    server, client = start(patients=30, seed=8, behaviour="legacy")
    expected = json.loads(
        json.dumps(example).replace("https://api.cliniko.com/v1", server.base_url)
    )
    assert client.get("/patients/1").json() == expected
    assert client.get("/patients", per_page=5).json()["patients"][0] == expected


def test_current_behaviour_matches_the_newer_spec(start: Any) -> None:
    spec_file = Path(__file__).parents[1] / "api-docs" / "openapi-patients.json"
    spec = json.loads(spec_file.read_text())
    _, client = start(patients=150, seed=9)
    patients = client.get("/patients", per_page=100).json()["patients"]
    assert all(isinstance(p["id"], str) and len(p["id"]) == 19 for p in patients)
    assert set(spec["schemas"]["Patient"]["properties"]) <= set(patients[0])
    assert any(isinstance(p["pronouns"], dict) for p in patients)
    assert all(p["archived_at"] is None for p in patients)
    deleted = client.get("/patients/deleted").json()["patients"]
    assert deleted and all(set(p) == {"deleted_at", "links"} for p in deleted)
    refused = client.get("/patients/deleted", **{"q[]": "updated_at:>=2000-01-01T00:00:00Z"})
    assert refused.status_code == 400
    assert client.get("/patients/deleted", **{"q[]": "deleted_at:>=2000-01-01T00:00:00Z"}).ok


def test_auth_shard_and_user_agent(start: Any) -> None:
    server, client = start(patients=5, seed=10)
    assert client.get("/patients").status_code == 200
    assert Client(server, "wrong0key-au1").get("/patients").status_code == 401
    assert Client(server, KEY.replace("-au1", "-uk1")).get("/patients").status_code == 401
    anonymous = requests.get(f"{server.base_url}/patients", headers=HEADERS, timeout=10)
    assert anonymous.status_code == 401
    client.session.headers["User-Agent"] = "python-requests"
    assert client.get("/patients").status_code == 400


@pytest.mark.parametrize("header", ["X-RateLimit-Reset", "Retry-After"])
def test_rate_limit_answers_429_with_the_reset(start: Any, header: str) -> None:
    _, client = start(patients=5, seed=11, rate_limit_per_minute=3, rate_limit_header=header)
    answers = [client.get("/patients") for _ in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    value = float(answers[3].headers[header])
    if header == "X-RateLimit-Reset":
        assert time.time() < value <= time.time() + 61
    else:
        assert 0 < value <= 60


def test_faults_are_off_by_default_and_each_can_be_injected(start: Any) -> None:
    server, client = start(patients=30, seed=12)
    assert all(client.get("/patients").ok for _ in range(10))
    server.faults.fail_next(2, status=502)
    assert [client.get("/patients").status_code for _ in range(3)] == [502, 502, 200]
    server.faults.error_rate = 1.0
    assert client.get("/patients").status_code in (500, 502, 503)
    server.faults.error_rate = 0.0
    server.faults.truncate_rate = 1.0
    truncated = client.get("/patients")
    assert truncated.status_code == 200
    with pytest.raises(ValueError):
        truncated.json()
    server.faults.truncate_rate = 0.0
    server.faults.html_200_rate = 1.0
    html = client.get("/patients")
    assert html.status_code == 200 and html.headers["Content-Type"].startswith("text/html")
    server.faults.html_200_rate = 0.0
    server.faults.drop_rate = 1.0
    with pytest.raises(requests.ConnectionError):
        client.get("/patients")
    server.faults.drop_rate = 0.0
    server.faults.latency_ms = 200
    started = time.monotonic()
    client.get("/patients")
    assert time.monotonic() - started >= 0.2
    server.faults.latency_ms = 0
    server.faults.throttle_for(1.5, header="Retry-After")
    assert client.get("/patients").status_code == 429
    time.sleep(1.6)
    assert client.get("/patients").ok


def test_before_list_page_hook_runs_before_each_page(start: Any) -> None:
    server, client = start(patients=40, seed=13)
    seen: list[str] = []
    server.before_list_page = lambda route, args: seen.append(route)
    client.get("/patients")
    client.get("/patients/archived")
    client.get("/patients/1")
    assert seen == ["/v1/patients", "/v1/patients/archived"]


def test_data_survives_a_restart_and_seeds_are_deterministic(start: Any, tmp_path: Path) -> None:
    first, _ = start(patients=50, seed=14, data_dir=tmp_path / "kept")
    pid = next(iter(first.store.snapshot()))
    first.store.update_patient(pid, {"notes": "kept across restarts"})
    first.stop()
    again, _ = start(patients=50, seed=14, data_dir=tmp_path / "kept")
    assert again.store.snapshot()[pid]["record"]["notes"] == "kept across restarts"
    twin, _ = start(patients=50, seed=14, data_dir=tmp_path / "twin")
    triplet, _ = start(patients=50, seed=14, data_dir=tmp_path / "triplet")
    other, _ = start(patients=50, seed=15, data_dir=tmp_path / "other")

    def names(server: SandboxServer) -> list[str]:
        return [e["record"]["last_name"] for e in server.store.snapshot().values()]

    assert names(twin) == names(triplet)
    assert names(twin) != names(other)


def test_synthetic_patients_are_varied(start: Any) -> None:
    server, _ = start(patients=1500, seed=16)
    records = [e["record"] for e in server.store.snapshot().values()]
    assert {r["accepted_privacy_policy"] for r in records} == {True, False, None}
    assert any(not r["first_name"].isascii() or not r["last_name"].isascii() for r in records)
    assert any(len(r["notes"] or "") > 2000 for r in records)
    assert any(r["notes"] is None for r in records)
    assert {len(r["patient_phone_numbers"]) for r in records} >= {0, 1, 2, 3}
    assert any(r["custom_fields"] for r in records)
    created = [r["created_at"] for r in records]
    assert len(set(created)) < len(created), "many patients share a second"
    assert min(created) < "2022"
