"""The local Cliniko's drift switches: API behaviours a real account may show, one at a time."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from tap_cliniko.sandbox import SandboxConfig, SandboxServer

COLLECTIONS = 0  # these tests need patients only

BAD_SORT = {"message": "Sort parameter must be a valid column name"}


@pytest.mark.parametrize("route", ["/patients/archived", "/patients/deleted"])
def test_without_variant_routes_the_older_lists_answer_404(start: Any, route: str) -> None:
    _, kept = start(patients=60, seed=1)
    assert kept.get(route).status_code == 200
    _, gone = start(patients=60, seed=1, variant_routes=False)
    assert gone.get(route).status_code == 404
    assert gone.get(route).json() == {"message": "Not found"}
    archived = gone.get("/patients", **{"q[]": "archived_at:?"})
    assert archived.status_code == 200 and archived.json()["total_entries"] > 0


def test_bad_sort_column_answers_the_apis_message(start: Any) -> None:
    _, client = start(patients=20, seed=2)
    refused = client.get("/patients", sort="notes")
    assert refused.status_code == 400 and refused.json() == BAD_SORT
    assert client.get("/patients", sort="created_at:sideways").json() == BAD_SORT


def test_sort_id_honoured_by_default(start: Any) -> None:
    _, client = start(patients=200, seed=3)
    rows = client.get("/patients", per_page=100, sort="id:desc").json()["patients"]
    ids = [int(p["id"]) for p in rows]
    assert ids == sorted(ids, reverse=True)


def test_sort_id_ignored_gives_the_default_created_at_order(start: Any) -> None:
    _, client = start(patients=200, seed=3, sort_mode="ignored")
    answer = client.get("/patients", per_page=100, sort="id:desc")
    assert answer.status_code == 200
    rows = answer.json()["patients"]
    ids = [int(p["id"]) for p in rows]
    assert ids != sorted(ids, reverse=True)
    created = [p["created_at"] for p in rows]
    assert created == sorted(created)
    assert rows == client.get("/patients", per_page=100).json()["patients"]
    by_name = client.get("/patients", per_page=100, sort="last_name").json()["patients"]
    assert [p["last_name"] for p in by_name] == sorted(p["last_name"] for p in by_name)


def test_sort_id_refused_answers_400(start: Any) -> None:
    _, client = start(patients=30, seed=3, sort_mode="refused")
    for sort in ("id", "id:desc", "created_at,id"):
        refused = client.get("/patients", sort=sort)
        assert refused.status_code == 400 and refused.json() == BAD_SORT
    assert client.get("/patients", sort="created_at:desc").status_code == 200


def test_unknown_sort_mode_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="sort_mode"):
        SandboxServer(SandboxConfig(patients=1, sort_mode="sometimes"))


@pytest.mark.parametrize("touches", [True, False])
def test_unarchive_touches_updated_at_only_when_set(start: Any, touches: bool) -> None:
    server, client = start(patients=30, seed=4, unarchive_touches_updated_at=touches)
    victim = next(i for i, e in server.store.snapshot().items() if e["status"] == "active")
    assert client.send("POST", f"/patients/{victim}/archive").status_code == 204
    archived = client.get(f"/patients/{victim}").json()
    time.sleep(1.05)  # updated_at has one-second resolution
    restored = client.send("POST", f"/patients/{victim}/unarchive").json()
    assert restored["archived_at"] is None
    assert (restored["updated_at"] > archived["updated_at"]) is touches


def test_midbody_drop_sends_part_of_the_body_then_closes(start: Any) -> None:
    server, client = start(patients=120, seed=5, midbody_drop_rate=1.0)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        client.get("/patients", per_page=100)
    raw = client.session.get(
        f"{server.base_url}/patients", params={"per_page": 100}, stream=True, timeout=30
    )
    promised = int(raw.headers["Content-Length"])
    assert raw.status_code == 200 and promised > 0
    received = b""
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for chunk in raw.iter_content(4096):
            received += chunk
    assert 0 < len(received) < promised
    server.faults.midbody_drop_rate = 0.0
    assert client.get("/patients", per_page=100).ok


def test_the_command_line_sets_every_switch() -> None:
    from tap_cliniko.sandbox.cli import parse_args

    config = parse_args(
        [
            "--collections",
            "0.5",
            "--no-variant-routes",
            "--sort-mode",
            "refused",
            "--no-unarchive-touches-updated-at",
            "--midbody-drop-rate",
            "0.1",
            "--forbidden",
            "users",
            "--forbidden",
            "invoices",
        ]
    )
    assert config.collections == 0.5 and config.variant_routes is False
    assert config.sort_mode == "refused" and config.unarchive_touches_updated_at is False
    assert config.midbody_drop_rate == 0.1 and config.forbidden == ("users", "invoices")
    defaults = parse_args([])
    assert defaults.variant_routes and defaults.sort_mode == "honoured"
    assert defaults.collections == 1.0 and defaults.midbody_drop_rate == 0.0


def test_forbidden_collections_answer_403_on_every_route(start: Any) -> None:
    server, client = start(patients=20, seed=9, collections=0.2, forbidden=("users",))
    refused = client.get("/users")
    assert refused.status_code == 403 and "permission" in refused.json()["message"]
    assert client.get("/patients").status_code == 200
    server.forbidden.add("practitioners")
    business = client.get("/businesses").json()["businesses"][0]["id"]
    assert client.get(f"/businesses/{business}/practitioners").status_code == 403
    assert client.get("/practitioners/inactive").status_code == 403
    server.forbidden.clear()
    assert client.get("/users").status_code == 200
