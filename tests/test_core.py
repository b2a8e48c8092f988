"""The SDK's standard tap tests, replaying cassettes recorded from the local Cliniko."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import yaml
from singer_sdk.testing import SuiteConfig, get_tap_test_class

from tap_cliniko.resources import BY_NAME
from tap_cliniko.streams import STREAM_NAMES
from tap_cliniko.tap import TapCliniko
from tests.cassettes import CASSETTES, LOCAL_BASE_URL, RECORDED, use_cassette
from tests.conftest import SANDBOX_KEY, USER_AGENT, run_tap, selecting, tap_config

CONFIG = tap_config(LOCAL_BASE_URL, **RECORDED)


def _standard_tests(cassette: str) -> type:
    base = get_tap_test_class(
        TapCliniko,
        config=CONFIG,
        parse_env_config=False,
        suite_config=SuiteConfig(max_records_limit=None),
        # Every stream selected, the opt-in clinical ones too, as the cassettes hold them all.
        catalog=selecting(CONFIG, STREAM_NAMES),
    )

    # Older accounts lack the newer fields, and deleted records hold two: the SDK warns.
    @pytest.mark.filterwarnings("ignore:Fields in transformed catalog but not in records")
    @pytest.mark.filterwarnings("ignore:No records were available to test")
    class Replayed(base):  # type: ignore[valid-type,misc]
        @pytest.fixture(scope="class", autouse=True)
        @classmethod
        def cassette(cls) -> Iterator[None]:
            with use_cassette(cassette):
                yield

    return Replayed


TestTapClinikoLegacy = _standard_tests("legacy")
TestTapClinikoCurrent = _standard_tests("current")


def replay(cassette: str) -> dict[str, list[dict]]:
    with use_cassette(cassette):
        return run_tap(CONFIG, streams=STREAM_NAMES).records


def test_both_api_shapes_sync_to_the_same_kind_of_clean_records() -> None:
    legacy, current = replay("legacy"), replay("current")
    for records in (legacy, current):
        assert set(records) >= set(STREAM_NAMES)
        for stream, rows in records.items():
            assert rows, f"{stream} is empty in a cassette"
            keys = BY_NAME[stream].key if stream in BY_NAME else ("id",)
            ids = [tuple(r[k] for k in keys) for r in rows]
            assert len(ids) == len(set(ids)), f"{stream}: primary key repeated in one sync"
            for row in rows:
                for key in keys:
                    assert isinstance(row[key], str) and row[key].isdigit()
                assert stream == "services" or row["updated_at"]
                for name in ("archived_at", "deleted_at", "date_of_birth", "created_at"):
                    assert row.get(name) != "", f"{name} must be null, not empty"
    assert all(len(r["id"]) < 6 for r in legacy["patients"]), "older shape: small integer ids"
    assert all(len(r["id"]) >= 18 for r in current["patients"]), "newer shape: 64-bit ids"
    assert set(legacy["patients"][0]) <= set(current["patients"][0]) | {"gender", "country"}


def test_legacy_cassette_holds_the_documented_shape() -> None:
    """The older page's responses: integer ids and "" for empty dates, as recorded."""
    bodies = _bodies("legacy")
    patients = [p for body in bodies for p in body.get("patients", [])]
    assert all(isinstance(p["id"], int) for p in patients)
    assert any(p["archived_at"] == "" for p in patients)
    current = [p for body in _bodies("current") for p in body.get("patients", [])]
    assert all(isinstance(p["id"], str) for p in current if "id" in p)
    documented = next(p for p in patients if p["id"] == 1)
    assert (documented["first_name"], documented["last_name"]) == ("Peter", "Patientman")
    assert documented["archived_at"] == documented["deleted_at"] == ""


def test_documented_example_patient_syncs_to_a_clean_record() -> None:
    """The Patients page's own example, replayed: id as text, "" dates null, the rest as sent."""
    record = next(r for r in replay("legacy")["patients"] if r["id"] == "1")
    assert record["archived_at"] is None and record["deleted_at"] is None
    assert record["date_of_birth"] == "2001-05-26"
    assert record["updated_at"] == record["created_at"] == "2013-03-26T14:00:00Z"
    assert record["notes"] == "" and record["medicare"] == ""
    assert record["invoice_extra_information"] == "Insurance #123456\r\nClaim #123456"
    assert [p["number"] for p in record["patient_phone_numbers"]] == ["61444444444", "61399999999"]
    assert record["concession_type"]["links"]["self"].endswith("/concession_types/123")


def _bodies(cassette: str) -> list[dict]:
    data = yaml.safe_load((CASSETTES / f"{cassette}.yaml").read_text())
    bodies = []
    for interaction in data["interactions"]:
        text = interaction["response"]["body"]["string"]
        if interaction["response"]["status"]["code"] == 200 and text:
            bodies.append(json.loads(text))
    return bodies


def test_no_cassette_holds_a_credential() -> None:
    cassettes = sorted(CASSETTES.glob("*.yaml"))
    assert len(cassettes) >= 2
    for path in cassettes:
        text = path.read_text()
        assert SANDBOX_KEY not in text, path.name
        assert "authorization" not in text.lower(), path.name
        assert "Basic " not in text, path.name
        assert USER_AGENT in text, "the cassette was recorded by this tap"
