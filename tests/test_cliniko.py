"""Cliniko's rules: shards, base URLs, filters, waits, error lines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from email.utils import formatdate

import pytest

from tap_cliniko import cliniko
from tap_cliniko.cliniko import ClinikoError


@pytest.mark.parametrize(
    ("key", "shard"),
    [
        ("MS0xLWFiY2RlZg", "au1"),
        ("MS0xLWFiY2RlZg-au2", "au2"),
        ("MS0xLWFiY2RlZg-uk1", "uk1"),
        ("abc-def-ca1", "ca1"),
        ("abc-us12", "us12"),
    ],
)
def test_shard_from_key(key: str, shard: str) -> None:
    assert cliniko.shard_from_key(key) == shard
    assert cliniko.base_url_for_key(key) == f"https://api.{shard}.cliniko.com/v1"


@pytest.mark.parametrize("key", ["abc-", "abc-AU1", "abc-au", "abc-au123", "abc-1au", "a-b-xyz"])
def test_malformed_shard_suffix_is_refused_without_echoing_the_key(key: str) -> None:
    with pytest.raises(ClinikoError, match="malformed shard suffix") as info:
        cliniko.shard_from_key(key)
    assert key not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.au1.cliniko.com/v1",
        "https://proxy.example.org/cliniko/v1/",
        "http://127.0.0.1:8765/v1",
        "http://localhost:9/v1",
        "http://[::1]:8765/v1",
    ],
)
def test_base_url_accepted(url: str) -> None:
    assert cliniko.check_base_url(url) == url.rstrip("/")


@pytest.mark.parametrize(
    "url", ["http://api.au1.cliniko.com/v1", "http://10.0.0.5/v1", "ftp://x/v1", "api.cliniko.com"]
)
def test_base_url_refused(url: str) -> None:
    with pytest.raises(ClinikoError, match="https://"):
        cliniko.check_base_url(url)


def test_same_origin_compares_scheme_host_and_port() -> None:
    base = "https://api.au1.cliniko.com/v1"
    assert cliniko.same_origin("https://api.au1.cliniko.com/v1/patients?page=2", base)
    assert not cliniko.same_origin("http://api.au1.cliniko.com/v1/patients?page=2", base)
    assert not cliniko.same_origin("https://evil.example/v1/patients?page=2", base)
    assert not cliniko.same_origin("https://api.au1.cliniko.com:8443/v1/patients", base)


def test_filters_are_utc_to_the_second_rounded_down() -> None:
    moment = datetime(2024, 3, 1, 10, 0, 5, 999_000, tzinfo=timezone(timedelta(hours=10)))
    assert cliniko.since_filter("updated_at", moment) == "updated_at:>=2024-03-01T00:00:05Z"


def test_server_time_from_date_header() -> None:
    assert cliniko.server_time({"Date": "Tue, 24 Nov 2026 09:12:28 GMT"}) == datetime(
        2026, 11, 24, 9, 12, 28, tzinfo=UTC
    )
    assert cliniko.server_time({}) is None
    assert cliniko.server_time({"Date": "yesterday"}) is None


def _http_date(unix: float) -> str:
    return formatdate(unix, usegmt=True)


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"X-RateLimit-Reset": "1000042"}, 42.0),
        ({"X-RateLimit-Reset": "1000041.2"}, 42.0),
        ({"X-RateLimit-Reset": "999990"}, cliniko.MIN_RATE_LIMIT_WAIT),
        ({"Retry-After": "0"}, cliniko.MIN_RATE_LIMIT_WAIT),
        # The reset is on Cliniko's clock: measured from its Date, not from ours.
        ({"X-RateLimit-Reset": str(1_003_600 + 42), "Date": _http_date(1_003_600)}, 41.5),
        ({"X-RateLimit-Reset": str(996_400 + 42), "Date": _http_date(996_400)}, 41.5),
        # A Date within a second of our clock is read as ours, to the sub-second.
        ({"X-RateLimit-Reset": "1000042", "Date": _http_date(999_999)}, 42.0),
        ({"Retry-After": "3", "X-RateLimit-Reset": "1000042"}, 3.0),
        ({"Retry-After": "soon", "X-RateLimit-Reset": "1000010"}, 10.0),
        ({}, 60.0),
    ],
)
def test_rate_limit_wait_from_headers_on_clinikos_clock(
    headers: dict[str, str], wait: float
) -> None:
    assert cliniko.rate_limit_wait(headers, now=1_000_000.0) == pytest.approx(wait)


def test_backoff_is_exponential_and_capped() -> None:
    assert [cliniko.backoff_wait(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (401, "wrong, revoked, or belongs to another shard"),
        (403, "lacks permission"),
        (404, "base_url"),
        (400, "malformed"),
    ],
)
def test_status_errors_name_the_cause_in_one_line(status: int, words: str) -> None:
    message = str(cliniko.status_error(status, "/v1/patients"))
    assert words in message
    assert "\n" not in message


def test_refused_sort_and_missing_route_are_told_apart() -> None:
    refused = "Sort parameter must be a valid column name"
    assert isinstance(cliniko.status_error(400, "/v1/x", refused), cliniko.SortRefused)
    assert not isinstance(cliniko.status_error(400, "/v1/x", "bad"), cliniko.SortRefused)
    assert isinstance(cliniko.status_error(404, "/v1/x"), cliniko.RouteNotFound)
