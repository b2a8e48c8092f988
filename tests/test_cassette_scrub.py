"""Recording from a real account: what the scrubber keeps and what it replaces."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from tap_cliniko.records import row_id
from tests.cassettes import KEPT, scrub_response
from tests.conftest import SANDBOX_KEY, USER_AGENT


def personal_strings(patient: dict[str, Any]) -> set[str]:
    """Every non-trivial string a patient holds outside the kept fields, nested ones too."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str) and len(value) > 3:
            found.add(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for name, value in patient.items():
        if name in KEPT or name.endswith("_at"):
            continue
        if not (isinstance(value, dict) and set(value) == {"links"}):
            walk(value)
    return found


ROUTES = [
    "patients",
    "patients/archived",
    "patients/deleted",
    "individual_appointments",
    "individual_appointments/deleted",
    "invoices",
    "treatment_notes",
    "communications",
    "contacts",
]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("behaviour", ["legacy", "current"])
def test_scrubbed_page_keeps_ids_and_drops_every_personal_value(
    sandbox: Any, route: str, behaviour: str
) -> None:
    with sandbox(patients=150, seed=23, behaviour=behaviour) as server:
        answer = requests.get(
            f"{server.base_url}/{route}",
            params={"per_page": 100},
            auth=(SANDBOX_KEY, ""),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            timeout=30,
        )
    answer.raise_for_status()
    key = route.split("/")[0]
    original = answer.json()[key]
    assert original, "the page should hold rows"
    response = {
        "headers": {**answer.headers, "Set-Cookie": ["session=secret"]},
        "body": {"string": answer.content},
    }

    scrubbed_response = scrub_response(response)

    assert "Set-Cookie" not in scrubbed_response["headers"]
    body = scrubbed_response["body"]["string"].decode()
    scrubbed = json.loads(body)[key]
    assert [row_id(p) for p in scrubbed] == [row_id(p) for p in original]
    assert all(row_id(p) for p in scrubbed), "every scrubbed patient keeps an id"
    personal = set().union(*(personal_strings(p) for p in original))
    leaked = personal & set().union(*(personal_strings(p) for p in scrubbed))
    assert not leaked, f"{len(leaked)} personal values survived the scrubber"
    fields = ("last_name", "email", "notes", "patient_name", "content_subject")
    names = {p[f] for p in original for f in fields if isinstance(p.get(f), str) and p[f]}
    assert not [name for name in names if name in body], "a name or e-mail survived"
    for before, after in zip(original, scrubbed, strict=True):
        assert set(after) == set(before), "the scrubber keeps the record's shape"
        for name in KEPT & set(before):
            assert after[name] == before[name], f"{name} should be kept as sent"
