"""Record rules, as pure functions: ids as strings, "" dates to null, consent redaction."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from operator import itemgetter
from typing import Any

# A link to one record, e.g. .../v1/individual_appointments/123: the id is its last segment.
LINK_ID = re.compile(r"/[a-z_]+/(\d+)/?$")
PATIENT_LINK = re.compile(r"/patients/(\d+)/?$")

PRIVACY_MODES = ("off", "rejected", "rejected_or_unanswered")
UNKNOWN_FIELD_MODES = ("drop", "keep")
#: With unknown_fields 'keep': the property holding the fields the schema lacks, by name.
UNKNOWN = "unknown_fields"
UNKNOWN_PROPERTY: dict[str, Any] = {"type": ["object", "null"], "additionalProperties": True}

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


def row_id(raw: Mapping[str, Any]) -> str | None:
    """The record's id as a string of digits, from `id` or else from `links.self`."""
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


class UnknownFields:
    """Top-level field names Cliniko sent that the stream's schema lacks: names, never values.

    Each new shape of keys is looked at once: the stream's Projection reports it.
    """

    def __init__(self, known: Iterable[str]) -> None:
        self.known = frozenset(known) | {"links"}  # links become the schema's *_id fields
        self.names: set[str] = set()

    def kept(self, raw: Mapping[str, Any]) -> dict[str, Any] | None:
        """The fields of raw the schema lacks, by name (None when there are none)."""
        extra = {name: value for name, value in raw.items() if name not in self.known}
        return extra or None

    def note_shape(self, shape: tuple[str, ...]) -> None:
        """Name the fields of a shape of keys the schema lacks (a Projection's new shapes)."""
        self.names.update(name for name in shape if name not in self.known)


#: Which of the schema's fields a shape of keys holds, how to pick them, which are dates.
_Plan = tuple[tuple[str, ...], Callable[[Mapping[str, Any]], tuple[Any, ...]], tuple[str, ...]]


class Projection:
    """A schema's top-level fields of a row, in the schema's order, "" dates made null.

    The rows of one list nearly always have the same keys in the same order, so which of
    the schema's fields a shape of keys holds is worked out once per shape (at most SHAPES
    remembered), and picked from each row by one itemgetter. new_shape hears of each shape
    when it is first worked out (UnknownFields.note_shape: the unknown fields it holds).
    """

    SHAPES = 256

    def __init__(
        self,
        properties: Iterable[str],
        dates: frozenset[str],
        new_shape: Callable[[tuple[str, ...]], None] | None = None,
    ) -> None:
        self.properties = tuple(properties)
        self.dates = dates
        self._new_shape = new_shape
        self._plans: dict[tuple[str, ...], _Plan] = {}

    def __call__(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        shape = tuple(raw)
        plan = self._plans.get(shape)
        if plan is None:
            plan = self._plan(shape)
        names, pick, dates = plan
        record = dict(zip(names, pick(raw), strict=True))
        for name in dates:
            if record[name] == "":
                record[name] = None
        return record

    def _plan(self, shape: tuple[str, ...]) -> _Plan:
        if len(self._plans) >= self.SHAPES:
            self._plans.clear()
        present = set(shape)
        names = tuple(name for name in self.properties if name in present)
        pick: Callable[[Mapping[str, Any]], tuple[Any, ...]]
        if len(names) > 1:
            pick = itemgetter(*names)
        else:  # itemgetter of one name gives the value itself, of none it cannot be made
            pick = lambda raw: tuple(raw[name] for name in names)  # noqa: E731
        plan = (names, pick, tuple(name for name in names if name in self.dates))
        self._plans[shape] = plan
        if self._new_shape is not None:
            self._new_shape(shape)
        return plan


def normalize_patient(raw: Mapping[str, Any], fields: Projection) -> dict[str, Any] | None:
    """Clean one API patient: schema fields only, id as str, "" dates to null.

    A deleted patient reduced to `deleted_at` and `links.self` gets its id from the link
    and `deleted_at` as its `updated_at`. Returns None when no id can be found.
    """
    record_id = row_id(raw)
    if record_id is None:
        return None
    record = fields(raw)
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


def linked_id(value: Any, pattern: re.Pattern[str] = LINK_ID) -> str | None:
    """The id in a link object (`{"links": {"self": ".../practitioners/12"}}`), or None."""
    link = ((value or {}).get("links") or {}).get("self") if isinstance(value, dict) else None
    if isinstance(link, str) and (match := pattern.search(link.split("?", 1)[0])):
        return match.group(1)
    return None


def is_link_object(prop: Mapping[str, Any]) -> bool:
    """Tell whether a schema property is a link object (`{"links": {"self": ...}}`)."""
    return set(prop.get("properties", {})) == {"links"}


def link_id_fields(schema: Mapping[str, Any]) -> dict[str, str]:
    """Columns filled from a link: `practitioner_id` -> `practitioner`, as the schema has them."""
    properties = schema.get("properties", {})
    return {
        f"{name}_id": name
        for name, prop in properties.items()
        if is_link_object(prop) and f"{name}_id" in properties
    }


def normalize_record(
    raw: Mapping[str, Any],
    fields: Projection,
    links: Mapping[str, str],
    *,
    has_id: bool = True,
) -> dict[str, Any] | None:
    """Clean one API record of any collection, as normalize_patient does for patients.

    Also fills each `<link>_id` column from its link object when the API sent no value.
    Returns None when a collection with ids gives a row without one.
    """
    if has_id:
        record = normalize_patient(raw, fields)
        if record is None:
            return None
    else:
        record = fields(raw)
    for name, value in record.items():
        if name.endswith("_ids") and isinstance(value, list):  # older accounts: integer ids
            record[name] = [
                str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value
            ]
    for column, link in links.items():
        if record.get(column) in (None, "") and (found := linked_id(raw.get(link))):
            record[column] = found
        elif isinstance(record.get(column), int) and not isinstance(record[column], bool):
            record[column] = str(record[column])
    return record


def patients_named(record: Mapping[str, Any], fields: Iterable[str]) -> list[str]:
    """Ids of the patients the record's link fields point at (links to other records ignored)."""
    return [found for name in fields if (found := linked_id(record.get(name), PATIENT_LINK))]


def personal_fields(schema: Mapping[str, Any]) -> frozenset[str]:
    """Fields of a non-patient stream blanked for a patient whose consent asks for it.

    Free text and structured content (notes, names, bodies, answers, addresses) go; what a
    clinic counts by stays: ids, link objects, dates and times, numbers and yes/no flags.
    """
    blanked = set()
    for name, prop in schema.get("properties", {}).items():
        types = prop.get("type", [])
        types = [types] if isinstance(types, str) else types
        if name in KEPT_WHEN_REDACTED or name.endswith("_id") or is_link_object(prop):
            continue
        if "array" in types and is_link_object(prop.get("items", {})):
            continue
        if "format" in prop or not ({"string", "object", "array"} & set(types)):
            continue
        blanked.add(name)
    return frozenset(blanked)


def redact_fields(record: dict[str, Any], fields: frozenset[str]) -> dict[str, Any]:
    """The record with the given fields blanked (set to null)."""
    return {name: (None if name in fields else value) for name, value in record.items()}
