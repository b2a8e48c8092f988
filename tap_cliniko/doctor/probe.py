"""Ask a Cliniko account, within a request bound, what the tap needs to know of it."""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tap_cliniko import cliniko
from tap_cliniko.api import ClinikoAPI
from tap_cliniko.client import SCHEMAS
from tap_cliniko.cliniko import (
    ClinikoError,
    EveryRequestFails,
    Forbidden,
    RouteNotFound,
    SortRefused,
)
from tap_cliniko.paging import Page
from tap_cliniko.resources import ARCHIVED, CANCELLED, COLLECTIONS, Collection
from tap_cliniko.settings import check_config, resolve_base_url

PROFILE_VERSION = 1
DEFAULT_MAX_REQUESTS = 150
RATE_LIMIT_HEADERS = (
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "Retry-After",
)
JSON_TYPES = {
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    dict: "object",
    list: "array",
}
BIG_ID = 2**53
#: The patients collection as the tap reads it (three streams, one schema).
PATIENTS = Collection(
    "patients", "/patients", hidden=(ARCHIVED,), deleted_route="/patients/deleted"
)


class OutOfRequests(Exception):
    """The request bound is reached: what is left unasked is reported as not checked."""


def json_type(value: object) -> str:
    """The JSON type name of a decoded value."""
    return "null" if value is None else JSON_TYPES.get(type(value), "string")


@dataclass
class Answer:
    """What one request found: a status and, when Cliniko answered 200, the page."""

    status: str  # ok | forbidden | missing | refused | error
    page: Page | None = None


@dataclass
class Probe:
    """One bounded, read-only conversation with an account."""

    api: ClinikoAPI
    max_requests: int
    progress: Callable[[str], None] = lambda line: None
    requests: int = 0
    round_trips: list[float] = field(default_factory=list)
    offsets: list[float] = field(default_factory=list)
    header_names: set[str] = field(default_factory=set)
    archived_rows: list[dict[str, Any]] = field(default_factory=list)
    first_rows: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.api.on_headers = self._headers

    def _headers(self, headers: Mapping[str, str]) -> None:
        self.header_names |= {h for h in RATE_LIMIT_HEADERS if h in headers}
        moment = cliniko.server_time(headers)
        if moment is not None:
            self.offsets.append(moment.timestamp() - time.time())

    def ask(self, path: str, params: list[tuple[str, str]], records_key: str, doing: str) -> Answer:
        """One GET of one page; every failure is a status, never an exception."""
        if self.requests >= self.max_requests:
            raise OutOfRequests
        self.requests += 1
        self.progress(f"doctor: {self.requests}/{self.max_requests} requests, {doing}")
        started = time.monotonic()
        try:
            page = self.api.get_page(self.api.base_url + path, params, records_key)
        except EveryRequestFails:
            raise  # a wrong key, host or shard: no collection can answer, one line says why
        except Forbidden:
            return Answer("forbidden")
        except RouteNotFound:
            return Answer("missing")
        except SortRefused:
            return Answer("refused")
        except ClinikoError as exc:
            return Answer(
                "refused" if "HTTP 400" in str(exc) or "HTTP 422" in str(exc) else "error"
            )
        self.round_trips.append(time.monotonic() - started)
        return Answer("ok", page)


def schema_fields(name: str) -> frozenset[str]:
    key = "patient" if name == "patients" else name
    return frozenset(json.loads((SCHEMAS / f"{key}.json").read_text())["properties"])


def _fields(
    rows: list[dict[str, Any]], known: frozenset[str]
) -> tuple[dict[str, list[str]], list[str]]:
    unknown: dict[str, set[str]] = {}
    seen: set[str] = set()
    for row in rows:
        for name, value in row.items():
            seen.add(name)
            if name not in known and name != "links":
                unknown.setdefault(name, set()).add(json_type(value))
    order = ("string", "integer", "number", "boolean", "object", "array", "null")
    return (
        {n: [t for t in order if t in types] for n, types in sorted(unknown.items())},
        sorted(known - seen) if rows else [],
    )


def _ids(rows: list[dict[str, Any]]) -> list[int]:
    return [int(row["id"]) for row in rows if str(row.get("id", "")).isdigit()]


def collection_report(probe: Probe, c: Collection) -> dict[str, Any]:
    """Status, counts per state, variant routes, filters, ids and fields of one collection."""
    key = c.records_key
    first = probe.ask(c.path, [("per_page", "100")], key, f"checking {c.name}")
    report: dict[str, Any] = {
        "status": first.status if first.status != "refused" else "error",
        "counts": {s: None for s in ("active", "archived", "cancelled", "deleted", "inactive")},
        "routes": {"archived": None, "deleted": None, "cancelled": None, "inactive": None},
        "filters": {
            f: None
            for f in ("updated_at:>=", "id:>", "archived_at:*", "cancelled_at:*", "deleted_at:>=")
        },
        "id_digits": None,
        "ids_above_2_53": False,
        "unknown_fields": {},
        "fields_never_seen": [],
    }
    if first.page is None:
        return report
    rows = list(first.page.rows)
    probe.first_rows = probe.first_rows or rows
    report["counts"]["active"] = first.page.total_entries
    for state, value in (("archived", ARCHIVED), ("cancelled", CANCELLED)):
        if value in c.hidden:
            answer = probe.ask(
                c.path, [("per_page", "1"), ("q[]", value)], key, f"{c.name} {state}"
            )
            report["filters"][value] = {"ok": "accepted"}.get(answer.status, answer.status)
            if answer.page is not None:
                rows += answer.page.rows
                hidden = answer.page.total_entries
                active = first.page.total_entries
                report["counts"][state] = (
                    None if hidden is None or active is None else hidden - active
                )
                if hidden is not None and active is not None and hidden < active:
                    report["filters"][value] = "ignored"
    if c.deleted_route:
        answer = probe.ask(c.deleted_route, [("per_page", "1")], key, f"{c.name} deleted")
        report["routes"]["deleted"] = answer.status == "ok"
        if answer.page is not None:
            report["counts"]["deleted"] = answer.page.total_entries
    if (inactive := f"{c.path}/inactive") in c.also:
        answer = probe.ask(inactive, [("per_page", "1")], key, f"{c.name} inactive")
        report["routes"]["inactive"] = answer.status == "ok"
        if answer.page is not None:
            report["counts"]["inactive"] = answer.page.total_entries
    if c is PATIENTS:
        _patients_extra(probe, report, rows)
    ids = _ids(rows)
    if ids and c.keyset:
        top = max(ids)
        answer = probe.ask(
            c.path, [("per_page", "100"), ("q[]", f"id:>{top}")], key, f"{c.name} id filter"
        )
        if answer.page is not None:
            report["filters"]["id:>"] = (
                "ignored" if any(i <= top for i in _ids(answer.page.rows)) else "accepted"
            )
        else:
            report["filters"]["id:>"] = answer.status
    if ids:
        report["id_digits"] = len(str(max(ids)))
        report["ids_above_2_53"] = max(ids) > BIG_ID
    report["unknown_fields"], report["fields_never_seen"] = _fields(rows, schema_fields(c.name))
    return report


FAR_FUTURE = "2999-01-01T00:00:00Z"


def _filter_verdict(answer: Answer) -> str:
    """A filter no row can pass: any row back means Cliniko ignored it."""
    if answer.page is None:
        return "refused" if answer.status == "refused" else answer.status
    return "ignored" if answer.page.rows else "accepted"


def _patients_extra(probe: Probe, report: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """The patients' bookmark filters, archived route, and whether archiving moves updated_at."""
    for column, route in (("updated_at", "/patients"), ("deleted_at", "/patients/deleted")):
        if column == "deleted_at" and not report["routes"]["deleted"]:
            continue
        params = [("per_page", "1"), ("q[]", f"{column}:>={FAR_FUTURE}")]
        answer = probe.ask(route, params, "patients", f"patients {column} filter")
        report["filters"][f"{column}:>="] = _filter_verdict(answer)
    archived = probe.ask("/patients/archived", [("per_page", "100")], "patients", "archived route")
    report["routes"]["archived"] = archived.status == "ok"
    if archived.page is not None:
        rows += archived.page.rows
        probe.archived_rows += archived.page.rows


def archive_touches_updated_at(rows: list[dict[str, Any]]) -> bool | None:
    """Whether every archived row seen was updated when (or after) it was archived."""
    pairs = [
        (cliniko.parse_time(r.get("updated_at")), cliniko.parse_time(r.get("archived_at")))
        for r in rows
    ]
    known = [(u, a) for u, a in pairs if u is not None and a is not None]
    return all(u >= a for u, a in known) if known else None


def behaviour(rows: list[dict[str, Any]]) -> str:
    """The older Patients page sent ids as numbers; today's API sends strings."""
    return "legacy" if any(isinstance(r.get("id"), int) for r in rows) else "current"


def sort_behaviour(probe: Probe) -> str:
    """What Cliniko does with sort=id:desc on the patients list."""
    answer = probe.ask(
        "/patients", [("per_page", "100"), ("sort", "id:desc")], "patients", "checking sort=id"
    )
    if answer.page is None:
        return "refused" if answer.status == "refused" else "unknown"
    ids = _ids(answer.page.rows)
    return "honoured" if ids == sorted(ids, reverse=True) else "ignored"


def estimate(
    collections: Mapping[str, Mapping[str, Any]], round_trip: float, per_minute: int
) -> dict[str, Any]:
    """Requests of a first full sync and of a quiet incremental run, and the full sync's time."""
    per_stream = {}
    for name, seen in collections.items():
        counts = seen["counts"]
        rows = sum(v for v in counts.values() if v)
        per_stream[name] = math.ceil(rows / 100) + 1 if seen["status"] == "ok" else 0
    total = sum(per_stream.values())
    quiet = sum(1 for seen in collections.values() if seen["status"] == "ok")
    return {
        "full_sync_requests": per_stream,
        "full_sync_requests_total": total,
        "full_sync_seconds_at_limit": round(max(total / per_minute * 60, round_trip * 2), 1),
        "quiet_incremental_requests": quiet,
    }


def run(
    config: Mapping[str, Any],
    *,
    max_requests: int = DEFAULT_MAX_REQUESTS,
    progress: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """The profile of the account the config names (see the profile contract)."""
    check_config(config)
    per_minute = int(config.get("max_requests_per_minute", 190))
    api = ClinikoAPI(
        base_url=resolve_base_url(config),
        api_key=config["api_key"],
        user_agent=config["user_agent"],
        timeout=config.get("request_timeout", 60),
        requests_per_minute=per_minute,
        max_retry_seconds=min(float(config.get("max_retry_seconds", 600)), 120.0),
    )
    probe = Probe(api, max_requests, progress)
    profile: dict[str, Any] = {
        "profile_version": PROFILE_VERSION,
        "collections": {},
        "not_checked": [],
    }
    try:
        profile["collections"]["patients"] = collection_report(probe, PATIENTS)
        profile["sort_id"] = sort_behaviour(probe)
        for c in COLLECTIONS:
            if c.parent is None:
                profile["collections"][c.name] = collection_report(probe, c)
    except OutOfRequests:
        done = set(profile["collections"])
        profile["not_checked"] = [
            c.name for c in COLLECTIONS if c.name not in done and c.parent is None
        ]
    profile.setdefault("sort_id", "unknown")
    profile["behaviour"] = behaviour(probe.first_rows)
    profile["archive_touches_updated_at"] = archive_touches_updated_at(probe.archived_rows)
    rtt = statistics.median(probe.round_trips) if probe.round_trips else 0.0
    profile["shard"] = (
        cliniko.shard_from_key(config["api_key"]) if not config.get("base_url") else None
    )
    profile["clock_offset_seconds"] = (
        round(statistics.median(probe.offsets), 1) if probe.offsets else None
    )
    profile["rate_limit_headers"] = sorted(probe.header_names)
    profile["round_trip_ms"] = round(rtt * 1000, 1)
    profile["requests"] = probe.requests
    profile["estimate"] = estimate(profile["collections"], rtt, per_minute)
    return profile
