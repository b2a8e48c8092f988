"""An account shaped like a doctor's profile: rows per state, id magnitudes, fields sent.

The synthetic clinic is made as usual, then each collection a profile counts is cut or grown
(clones of its own rows) and its rows' states set until it holds exactly the profile's rows
per state, as the doctor counts them: `active` is what the plain list holds, `archived` and
`cancelled` what the marker's `*` filter adds, `deleted` the /deleted route's rows, `inactive`
the /inactive route's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from tap_cliniko.sandbox.resources import Resource
from tap_cliniko.sandbox.synth import iso

#: Ids of a profile's magnitude: base + serial, or for the collections the bookings list
#: unites, base + serial * step + the collection's offset (< step), so that theirs never meet.
UNION_ID_STEP = 64
STATES = ("active", "archived", "cancelled", "deleted", "inactive")
MARKERS = {"archived": "archived_at", "cancelled": "cancelled_at", "deleted": "deleted_at"}
#: The lists point bookings' rows at these collections by `booking_id`.
BOOKINGS = frozenset({"individual_appointments", "group_appointments", "unavailable_blocks"})


@dataclass(frozen=True)
class AccountShape:
    """What a profile says of each collection, in the store's terms."""

    #: Rows per state (a state left out keeps what the synthetic clinic made).
    volumes: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Decimal digits of the collection's ids.
    id_digits: dict[str, int] = field(default_factory=dict)
    #: Fields the schemas lack, sent on every row, with the JSON types their values take.
    unknown_fields: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    #: Schema fields the account never sends.
    omitted_fields: dict[str, tuple[str, ...]] = field(default_factory=dict)


def id_base(digits: int, step: int = 1) -> int:
    """Where a collection's ids count up from (its first row's is base + step): the first is
    the smallest multiple of step with `digits` digits, so that a profile's ids keep theirs."""
    return math.ceil(10 ** (max(digits, 1) - 1) / step) * step - step


def id_step(name: str) -> int:
    """How far apart a collection's ids of a profile's magnitude are."""
    return UNION_ID_STEP if name in BOOKINGS else 1


def states_of(resource: Resource) -> tuple[str, ...]:
    """The states the doctor counts for this collection."""
    found = ["active", *(m.removesuffix("_at") for m in resource.hidden)]
    found += [v for v in ("deleted", "inactive") if v in resource.variants]
    return tuple(found)


def state_of(resource: Resource, record: dict[str, Any]) -> str:
    """The state a row is counted in (its first hidden marker; deleted before all)."""
    if record.get("deleted_at"):
        return "deleted"
    for marker in resource.hidden:
        if record.get(marker):
            return marker.removesuffix("_at")
    if resource.plain and not record.get("active"):
        return "inactive"
    return "active"


def set_state(resource: Resource, record: dict[str, Any], state: str, touch: bool) -> None:
    """Give a row exactly one state; an archive that does not touch updated_at shows."""
    for marker in (*resource.hidden, "deleted_at"):
        if marker in resource.markers:
            record[marker] = None
    if resource.plain:
        record["active"] = state != "inactive"
    if state not in MARKERS:
        return
    record[MARKERS[state]] = record["updated_at"]
    if state == "archived" and not touch:  # archived after its last update
        updated = datetime.strptime(record["updated_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        record["updated_at"] = iso(updated - timedelta(hours=1))
        record["created_at"] = min(record["created_at"], record["updated_at"])


@dataclass
class Plan:
    """What shaping one collection writes: rows changed (clones among them) and dropped."""

    changed: list[dict[str, Any]] = field(default_factory=list)
    new: list[dict[str, Any]] = field(default_factory=list)  # clones, ids still to give
    dropped: list[int] = field(default_factory=list)
    survivor: int | None = None  # a kept row that rows naming a dropped one now name


def spread(rows: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """count of rows, evenly apart (rows come in id order, which is the clinic's time order:
    a small replay of a big account still has last month's and next week's appointments)."""
    if count >= len(rows):
        return list(rows)
    return [rows[i * len(rows) // count] for i in range(count)]


def plan(
    resource: Resource,
    rows: list[dict[str, Any]],
    targets: dict[str, int],
    touch: bool,
    id_limit: int | None = None,
) -> Plan:
    """Keep each state's rows up to its target (spread over the clinic's time); the rest
    change state, or go; clones of the collection's own rows fill what is still missing.
    Rows whose id reaches id_limit (more digits than the profile's ids) go first."""
    states = states_of(resource)
    buckets: dict[str, list[dict[str, Any]]] = {s: [] for s in states}
    result = Plan()
    for record in rows:
        state = state_of(resource, record)
        if id_limit is not None and int(record["id"]) >= id_limit:
            result.dropped.append(int(record["id"]))
        elif state in buckets:  # rows no route shows (deleted without a /deleted) stay
            buckets[state].append(record)
    want = {s: targets.get(s, len(buckets[s])) for s in states}
    kept = {s: spread(buckets[s], want[s]) for s in states}
    chosen = {id(r) for s in states for r in kept[s]}
    spare = [r for s in states for r in buckets[s] if id(r) not in chosen]
    missing = sum(want[s] - len(kept[s]) for s in states)
    sources = [r for s in states for r in kept[s]] or spare
    while len(spare) < missing and sources:
        clone = msgspec.json.decode(msgspec.json.encode(sources[len(result.new) % len(sources)]))
        result.new.append(clone)
        spare.append(clone)
    result.dropped += [int(r["id"]) for r in spare[missing:]]
    spare = spare[:missing]
    for state in states:
        for _ in range(want[state] - len(kept[state])):
            if not spare:
                break
            record = spare.pop()
            set_state(resource, record, state, touch)
            result.changed.append(record)
    for state in states:  # a kept row with two hidden markers is counted by neither filter
        for record in kept[state]:
            twice = sum(bool(record.get(m)) for m in resource.hidden) > 1
            # the synthetic clinic's archives touched updated_at; this account's do not
            touched = state == "archived" and record["updated_at"] >= record["archived_at"]
            if twice or (touched and not touch):
                set_state(resource, record, state, touch)
                result.changed.append(record)
    survivors = [r for s in states for r in kept[s]]
    result.survivor = int(survivors[0]["id"]) if survivors and result.dropped else None
    return result


def singular(name: str) -> str:
    """businesses -> business, taxes -> tax, patient_cases -> patient_case."""
    return name[:-2] if name.endswith(("sses", "xes")) else name.removesuffix("s")


def references(target: Resource, other: Resource) -> list[str]:
    """The fields of `other`'s stored rows that hold the id of one of `target`'s rows: a
    `<target>_id` field, or a link of kind `ref:<target>` (stored as `<link>_id`: an
    appointment's `practitioner`, `appointment_type`, `business`, `repeated_from`)."""
    keys = {f"{singular(target.name)}_id"}
    kinds = {f"ref:{target.name}"}
    if target.name in BOOKINGS:
        keys.add("booking_id")
        kinds |= {"ref:bookings", "ref:appointments"}
    found = {name for name, _ in other.fields if name in keys}
    found |= {f"{name}_id" for name, kind in other.fields if kind in kinds}
    return sorted(found)


def synthetic_value(name: str, kinds: tuple[str, ...], row_id: Any) -> Any:
    """A made-up value of one of the JSON types a profile saw for an unknown field."""
    kind = kinds[int(row_id) % len(kinds)] if kinds else "string"
    return {
        "string": f"synthetic {name} {row_id}",
        "integer": int(row_id) % 1000,
        "number": int(row_id) % 1000 / 8,
        "boolean": int(row_id) % 2 == 0,
        "object": {"synthetic": name},
        "array": [f"synthetic {name}"],
        "null": None,
    }.get(kind)
