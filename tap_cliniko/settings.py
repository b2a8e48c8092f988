"""The tap's settings: their JSON schema and the start-up checks the schema cannot express."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from singer_sdk import typing as th

from tap_cliniko.cliniko import (
    USER_AGENT_PATTERN,
    ClinikoError,
    base_url_for_key,
    check_base_url,
)
from tap_cliniko.records import PRIVACY_MODES

CLINIKO_REQUESTS_PER_MINUTE = 200

CONFIG_SCHEMA = th.PropertiesList(
    th.Property(
        "api_key",
        th.StringType(nullable=False),
        required=True,
        secret=True,
        title="API key",
        description="Cliniko API key (My Info > Manage API keys). Its suffix (-au1, -uk2, ...)"
        " picks the shard.",
    ),
    th.Property(
        "user_agent",
        th.StringType(nullable=False),
        required=True,
        title="User-Agent",
        description="Sent as User-Agent, in Cliniko's required form 'App name (contact e-mail)',"
        " e.g. 'Acme reporting (data@acme.example)'.",
    ),
    th.Property(
        "start_date",
        th.DateTimeType(nullable=True),
        description="Sync only rows updated at or after this UTC date-time"
        " (e.g. 2024-01-01T00:00:00Z). A stored bookmark wins when it is later."
        " Full-table streams always read every row.",
    ),
    th.Property(
        "base_url",
        th.StringType(nullable=True),
        description="Override the API base URL (a proxy, or the local Cliniko). HTTPS only,"
        " except loopback addresses. Default: https://api.{shard}.cliniko.com/v1.",
    ),
    th.Property(
        "per_page",
        th.IntegerType(nullable=False, minimum=1, maximum=100),
        default=100,
        description="Records per request, 1 to 100.",
    ),
    th.Property(
        "request_timeout",
        th.IntegerType(nullable=False, minimum=1, maximum=600),
        default=60,
        description="Seconds to wait for one response before retrying it.",
    ),
    th.Property(
        "max_requests_per_minute",
        th.IntegerType(nullable=False, minimum=0, maximum=CLINIKO_REQUESTS_PER_MINUTE),
        default=190,
        description="Client-side request budget per rolling minute, shared by all streams"
        " (Cliniko allows 200 per user). 0 turns the throttle off: only for the local Cliniko"
        " or a proxy that limits for you.",
    ),
    th.Property(
        "max_retry_seconds",
        th.IntegerType(nullable=False, minimum=0, maximum=3600),
        default=600,
        description="How long one request may keep retrying (rate limits, 5xx, timeouts)"
        " before the sync fails.",
    ),
    th.Property(
        "emit_activate_version_messages",
        th.BooleanType(nullable=False),
        default=True,
        description="Send ACTIVATE_VERSION for full-table streams, so that targets which"
        " support it drop rows that are gone from Cliniko. Incremental streams never send it.",
    ),
    th.Property(
        "privacy_redaction",
        th.StringType(nullable=False, allowed_values=list(PRIVACY_MODES)),
        default="off",
        description="Blank personal fields of patients who rejected the privacy policy"
        " ('rejected'), or also of those who never answered ('rejected_or_unanswered'),"
        " in the patient streams and in every row of other streams that names such a"
        " patient. 'off' emits everything.",
    ),
).to_dict()


def resolve_base_url(config: Mapping[str, Any]) -> str:
    """Return the API base URL: base_url when set, else the key's shard URL."""
    if config.get("base_url"):
        return check_base_url(str(config["base_url"]))
    return base_url_for_key(str(config["api_key"]))


def check_config(config: Mapping[str, Any]) -> None:
    """Refuse at start-up, in one line, what the JSON schema cannot check."""
    api_key = config.get("api_key")
    if not isinstance(api_key, str) or not api_key.strip():
        raise ClinikoError(
            "api_key is missing or empty: set it (TAP_CLINIKO_API_KEY, or api_key in the config)"
        )
    user_agent = config.get("user_agent")
    if not isinstance(user_agent, str) or not USER_AGENT_PATTERN.match(user_agent):
        raise ClinikoError(
            "user_agent must name your app and a contact e-mail, as Cliniko requires:"
            " e.g. 'Acme reporting (data@acme.example)'"
        )
    start_date = config.get("start_date")
    if start_date is not None and not _is_datetime(start_date):
        raise ClinikoError(
            "start_date is not a date-time: use ISO 8601 in UTC, e.g. 2024-01-01T00:00:00Z"
        )
    resolve_base_url(config)


def _is_datetime(value: object) -> bool:
    if not isinstance(value, str) or len(value) < 10:
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True
