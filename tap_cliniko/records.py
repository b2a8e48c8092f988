"""Record rules, as pure functions: ids as strings, "" dates to null, consent redaction."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

LINK_ID = re.compile(r"/patients/(\d+)/?$")

PRIVACY_MODES = ("off", "rejected", "rejected_or_unanswered")

# Kept when a patient's personal data is blanked: identity, timestamps and status.
KEPT_WHEN_REDACTED = frozenset(
    {
        "id",
        "created_at",
        "updated_at",
        "archived_at",
        "deleted_at",
        "merged_at",
        "accepted_privacy_policy",
        "links",
    }
)


def date_fields(schema: Mapping[str, Any]) -> frozenset[str]:
    """Names of the schema's top-level date and date-time properties."""
    return frozenset(
        name
        for name, prop in schema.get("properties", {}).items()
        if prop.get("format") in ("date", "date-time")
    )


def patient_id(raw: Mapping[str, Any]) -> str | None:
    """The patient's id as a string of digits, from `id` or else from `links.self`."""
    value = raw.get("id")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip().isdigit():
        return value.strip()
    link = (raw.get("links") or {}).get("self")
    if isinstance(link, str) and (match := LINK_ID.search(link.split("?", 1)[0])):
        return match.group(1)
    return None


def normalize_patient(
    raw: Mapping[str, Any], properties: Iterable[str], dates: frozenset[str]
) -> dict[str, Any] | None:
    """Clean one API patient: schema fields only, id as str, "" dates to null.

    A deleted patient reduced to `deleted_at` and `links.self` gets its id from the link
    and `deleted_at` as its `updated_at`. Returns None when no id can be found.
    """
    record_id = patient_id(raw)
    if record_id is None:
        return None
    record = {name: raw[name] for name in properties if name in raw}
    for name in dates.intersection(record):
        if record[name] == "":
            record[name] = None
    record["id"] = record_id
    if not record.get("updated_at"):
        record["updated_at"] = record.get("deleted_at")
    return record


def needs_redaction(record: Mapping[str, Any], mode: str) -> bool:
    """Tell whether the consent setting asks to blank this patient's personal fields."""
    consent = record.get("accepted_privacy_policy")
    if mode == "rejected":
        return consent is False
    if mode == "rejected_or_unanswered":
        return consent is not True
    return False


def redact_patient(record: dict[str, Any]) -> dict[str, Any]:
    """Blank every personal field, keeping id, timestamps, status and consent."""
    return {name: (value if name in KEPT_WHEN_REDACTED else None) for name, value in record.items()}


def drop_nulls_outside(record: dict[str, Any], properties: Iterable[str]) -> dict[str, Any]:
    """Drop null values under keys the (flattened) schema lacks; keep every other value.

    The SDK's flattening turns {"pronouns": {...}} into pronouns__* columns but leaves a
    null `pronouns` as it is; file targets refuse a column their SCHEMA did not announce.
    """
    known = set(properties)
    return {k: v for k, v in record.items() if v is not None or k in known}
