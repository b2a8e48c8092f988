"""The start-up rules as pure functions: state and catalog shapes, BATCH combinations."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tap_cliniko.cliniko import ClinikoError
from tap_cliniko.settings import (
    check_batch_config,
    check_catalog,
    check_config_keys,
    check_stream_maps,
    fields_read,
    state_from_document,
)

STATE = {"bookmarks": {"patients": {"replication_key_value": "2024-01-01T00:00:00Z"}}}
STREAMS = frozenset({"patients", "archived_patients", "deleted_patients"})
BATCH = {"encoding": {"format": "jsonl", "compression": "gzip"}}


@pytest.mark.parametrize(
    ("document", "wrapper"),
    [
        (STATE, None),
        ({}, None),
        ({"singer_state": STATE}, "singer_state"),
        ({"type": "STATE", "value": STATE}, "STATE"),
    ],
)
def test_state_is_returned_unwrapped(document: dict[str, Any], wrapper: str | None) -> None:
    state, found = state_from_document(document)
    assert state == (document and STATE)
    assert (found is None) if wrapper is None else (wrapper in str(found))


@pytest.mark.parametrize(
    "document",
    [
        [],
        {"bookmarks": []},
        {"bookmarks": {"patients": "2024-01-01"}},
        {"bookmarks": {"patients": {"replication_key_value": "soon"}}},
        {"bookmarks": {"patients": {"progress_markers": []}}},
        {"patients": {}},
        {"singer_state": None},
    ],
)
def test_malformed_state_is_refused(document: Any) -> None:
    with pytest.raises(ClinikoError, match="--state"):
        state_from_document(document)


def test_a_discovered_shape_passes_and_a_wrong_key_does_not() -> None:
    entry = {
        "tap_stream_id": "patients",
        "schema": {"properties": {"id": {"type": "string"}}},
        "key_properties": ["id"],
        "replication_key": "updated_at",
        "metadata": [{"breadcrumb": [], "metadata": {"replication-key": "updated_at"}}],
    }
    check_catalog({"streams": [entry]}, STREAMS)
    with pytest.raises(ClinikoError, match="updated_at only"):
        check_catalog({"streams": [{**entry, "replication_key": "created_at"}]}, STREAMS)


@pytest.mark.parametrize(
    ("config", "deselected", "refused"),
    [
        ({}, True, False),
        ({"batch_config": BATCH}, False, False),
        ({"batch_config": BATCH}, True, True),
        ({"batch_config": BATCH, "stream_maps": {"*": {"email": "__NULL__"}}}, False, True),
        ({"batch_config": BATCH, "flattening_enabled": True}, False, True),
        ({"batch_config": {"encoding": {"format": "parquet"}}}, False, True),
        ({"stream_maps": {"*": {"email": "__NULL__"}}, "flattening_enabled": True}, True, False),
    ],
)
def test_batch_is_refused_only_with_what_batch_files_skip(
    config: dict[str, Any], deselected: bool, refused: bool
) -> None:
    if refused:
        with pytest.raises(ClinikoError, match="batch_config"):
            check_batch_config(config, fields_deselected=deselected)
    else:
        check_batch_config(config, fields_deselected=deselected)


@pytest.mark.parametrize(
    ("expression", "read"),
    [
        ("md5(record['email'])", {"email"}),
        ("md5(_['email'])", {"email"}),
        ("md5(email)", {"email"}),
        ("md5(self)", {"prop"}),
        ("sha256(config['salt'] + record['email']) if record.get('email') else None", set()),
        ("md5(email) if 'email' in record else None", set()),
        ("[t for t in tags]", {"tags"}),
        ("fake.email() + str(__stream_name__)", set()),
        ("not valid (", set()),
    ],
)
def test_fields_read_without_a_check(expression: str, read: set[str]) -> None:
    assert fields_read(expression, "prop") == read


def test_stream_maps_reading_a_missing_field_are_refused_only_where_it_is_missing() -> None:
    fields = {"patients": frozenset({"id", "email"}), "businesses": frozenset({"id"})}
    check_stream_maps({"patients": {"h": "md5(record['email'])"}}, fields)
    check_stream_maps({"*": {"email": "__NULL__", "h": "md5(id)"}}, fields)
    check_stream_maps({"*": {"__filter__": "record.get('email') is not None"}}, fields)
    with pytest.raises(ClinikoError, match=r"'email'.*'businesses'"):
        check_stream_maps({"*": {"h": "md5(record['email'])"}}, fields)
    with pytest.raises(ClinikoError, match="'businesses'"):
        check_stream_maps({"b*": {"h": "md5(email)"}}, fields)
    with pytest.raises(ClinikoError, match="'businesses'"):
        check_stream_maps({"alias": {"__source__": "businesses", "h": "md5(email)"}}, fields)


def every_setting() -> frozenset[str]:
    """The settings a tap's config may hold: its own and the SDK's."""
    from tap_cliniko.tap import TapCliniko

    return TapCliniko.setting_names()


@pytest.mark.parametrize(
    ("key", "meant"),
    [
        ("perpage", "per_page"),
        ("per-page", "per_page"),
        ("Privacy_Redaction", "privacy_redaction"),
        ("privacy_redacton", "privacy_redaction"),
        ("start-date", "start_date"),
        ("startdate", "start_date"),
        ("apikey", "api_key"),
        ("flatening_enabled", "flattening_enabled"),
        ("stream_map", "stream_maps"),
        ("max_request_per_minute", "max_requests_per_minute"),
    ],
)
def test_a_misspelt_setting_is_refused_naming_the_one_meant(key: str, meant: str) -> None:
    with pytest.raises(ClinikoError, match=f"{key!r} is not a setting.*did you mean {meant!r}"):
        check_config_keys({key: 1}, every_setting())


def test_keys_like_no_setting_are_returned_sorted_and_settings_pass() -> None:
    known = every_setting()
    config = {name: None for name in known} | {"zz_other_tool": 1, "dbt_profile": "x"}
    assert check_config_keys(config, known) == ["dbt_profile", "zz_other_tool"]
    assert check_config_keys({name: None for name in known}, known) == []


@pytest.mark.parametrize(
    "key",
    [
        "process_activate_version_messages",  # every SDK target's, in a file shared with one
        "add_record_metadata",
        "start_time",
        "api_base_url",
        "start_datetime",
        "max_requests_per_hour",
    ],
)
def test_other_tools_settings_are_only_reported(key: str) -> None:
    assert check_config_keys({"api_key": "k", key: 1}, every_setting()) == [key]


def test_a_near_key_beside_the_setting_itself_is_no_misspelling() -> None:
    config = {"api_key": "k", "start_date": "2024-01-01T00:00:00Z", "startdate": "x"}
    assert check_config_keys(config, every_setting()) == ["startdate"]


def test_the_sdk_settings_schemas_are_left_as_the_sdk_has_them() -> None:
    """This tap's words go into a copy: the SDK's own constants keep theirs."""
    import copy

    from singer_sdk.helpers import capabilities

    from tap_cliniko.tap import TapCliniko

    constants = ("STREAM_MAPS_CONFIG", "FLATTENING_CONFIG", "BATCH_CONFIG")
    before = {name: copy.deepcopy(getattr(capabilities, name)) for name in constants}
    about = TapCliniko._get_about_info()
    assert about.settings["properties"]["flattening_separator"]["default"] == "__"
    assert {name: getattr(capabilities, name) for name in constants} == before


def test_a_key_without_a_shard_suffix_is_logged_as_au1(caplog: pytest.LogCaptureFixture) -> None:
    from tap_cliniko.tap import TapCliniko

    config = {"api_key": "MS0xLWV4YW1wbGUwMDAx", "user_agent": "Acme (data@acme.example)"}
    with caplog.at_level(logging.INFO):
        TapCliniko(config=config, validate_config=True)
    said = [r.getMessage() for r in caplog.records if "shard suffix" in r.getMessage()]
    assert len(said) == 1 and "shard au1" in said[0], said
    assert config["api_key"] not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        TapCliniko(config={**config, "api_key": config["api_key"] + "-uk2"}, validate_config=True)
    assert "shard suffix" not in caplog.text
