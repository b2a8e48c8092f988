"""Every collection of one account in one SQLite file: filters, sorts, counts and pages are queries.

One table per collection, all of one layout: id, the lifecycle times (created, updated,
archived, cancelled, deleted) as columns with indexes, and the rest of the record as JSON that
filters reach with json_extract. resources.py says how each collection behaves.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from tap_cliniko.sandbox import shaping
from tap_cliniko.sandbox.query import (
    COLUMNS,
    NOT_SEARCHABLE,
    SORT_MODES,
    TIME_COLUMNS,
    QueryError,
    column_sql,
    condition_sql,
    order_sql,
    parse_condition,
    route_members,
    searchable_fields,
)
from tap_cliniko.sandbox.render import render_row
from tap_cliniko.sandbox.resources import (
    BY_NAME,
    RESOURCES,
    STORED,
    VARIANT_MEMBERS,
    Nested,
    Resource,
)
from tap_cliniko.sandbox.shaping import AccountShape, id_base, id_step
from tap_cliniko.sandbox.synth import iso, synthetic_patients
from tap_cliniko.sandbox.writes import ValidationFailed, cancellation, validate, writable

# What app.py and the server import from here.
__all__ = ["SORT_MODES", "QueryError", "Store", "ValidationFailed"]

CURRENT_ID_BASE = 1_100_000_000_000_000_000  # 19-digit ids, as on today's accounts
CURRENT_ID_STEP = 7919  # ids of different collections never meet (each has its own offset)
LEGACY_ID_STEP = 64
ROW = f"({', '.join(COLUMNS)}, data) VALUES ({', '.join('?' * (len(COLUMNS) + 1))})"
OFFSETS = {resource.name: index for index, resource in enumerate(STORED)}  # patients: 0
LAYOUT_VERSION = 2  # bump when the tables change: an older file is rebuilt from the seed


def status_of(record: dict[str, Any]) -> str:
    """deleted, archived, cancelled or active: the row's lifecycle state."""
    for marker in ("deleted", "archived", "cancelled"):
        if record.get(f"{marker}_at"):
            return marker
    return "active"


class Store:
    """The collections of one local Cliniko account, in a SQLite file that survives restarts."""

    def __init__(
        self,
        path: Path,
        *,
        behaviour: str,
        clock: Callable[[], datetime],
        archive_touches_updated_at: bool = True,
        unarchive_touches_updated_at: bool = True,
        cancel_touches_updated_at: bool = True,
        sort_mode: str = "honoured",
        extra_fields: tuple[str, ...] = (),
        account: AccountShape | None = None,
    ) -> None:
        self.behaviour = behaviour
        self.extra_fields = extra_fields
        self.account = account or AccountShape()
        self.id_bases = {
            name: id_base(digits, id_step(name)) for name, digits in self.account.id_digits.items()
        }
        self.clock = clock
        self.archive_touches_updated_at = archive_touches_updated_at
        self.unarchive_touches_updated_at = unarchive_touches_updated_at
        self.cancel_touches_updated_at = cancel_touches_updated_at
        self.sort_mode = sort_mode
        self.link_base = "http://127.0.0.1/v1"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.RLock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # A local test server: every write reaches the OS (it survives a restart of the
            # server), none waits for the disk (an fsync per statement cost 1-2 s a start).
            self._db.execute("PRAGMA synchronous=OFF")
            if self._db.execute("PRAGMA user_version").fetchone()[0] != LAYOUT_VERSION:
                self._drop_everything()
            for resource in STORED:
                self._create_table(resource.name)
            self._create_union_views()
            self._db.execute(f"PRAGMA user_version = {LAYOUT_VERSION}")

    def _drop_everything(self) -> None:
        for kind, name in self._db.execute(
            "SELECT type, name FROM sqlite_master WHERE type IN ('table', 'view')"
        ).fetchall():
            self._db.execute(f"DROP {kind.upper()} IF EXISTS {name}")

    def _create_table(self, name: str) -> None:
        resource = BY_NAME[name]
        self._db.execute(
            f"CREATE TABLE IF NOT EXISTS {name} (id INTEGER PRIMARY KEY, created_at TEXT NOT NULL,"
            " updated_at TEXT NOT NULL, archived_at TEXT, cancelled_at TEXT, deleted_at TEXT,"
            " data TEXT NOT NULL)"
        )
        # Partial indexes per list route, so that keyset pages (by id), page numbers (by
        # created_at) and each page's count(*) read only that route's rows.
        self._db.execute(f"CREATE INDEX IF NOT EXISTS {name}_by_created ON {name} (created_at, id)")
        self._db.execute(f"CREATE INDEX IF NOT EXISTS {name}_by_updated ON {name} (updated_at)")
        routes = {"plain": route_members(resource, "", [])}
        routes |= {variant: VARIANT_MEMBERS[variant] for variant in resource.variants}
        if resource.hidden:
            routes["all"] = route_members(resource, "", resource.hidden)
        for route, members in routes.items():
            for index, columns in (("id", "id"), ("created", "created_at, id")):
                self._db.execute(
                    f"CREATE INDEX IF NOT EXISTS {name}_{route}_by_{index} ON {name} ({columns})"
                    f" WHERE {members}"
                )

    def _create_union_views(self) -> None:
        for resource in RESOURCES:
            if not resource.union:
                continue
            parts = []
            for source in resource.union:
                # An individual appointment's one patient, as the union's patient_ids.
                data = (
                    "json_set(data, '$.patient_ids', json_array(data ->> '$.patient_id'))"
                    if "patient_ids" not in {n for n, _ in BY_NAME[source].fields}
                    else "data"
                )
                columns = ", ".join(COLUMNS)
                parts.append(
                    f"SELECT {columns}, {data} AS data, '{source}' AS source FROM {source}"
                )
            self._db.execute(
                f"CREATE VIEW IF NOT EXISTS {resource.name} AS {' UNION ALL '.join(parts)}"
            )

    # Identity

    def new_id(self, name: str, serial: int) -> int:
        """The id of a collection's serial-th row: unique across collections."""
        offset = OFFSETS[name]
        if name in self.id_bases:  # a profile's magnitude
            step = id_step(name)
            return self.id_bases[name] + serial * step + (offset if step > 1 else 0)
        if self.behaviour == "legacy":
            return serial if name == "patients" else serial * LEGACY_ID_STEP + offset
        return CURRENT_ID_BASE + serial * CURRENT_ID_STEP + offset

    def _next_serial(self, name: str) -> int:
        top = self._db.execute(f"SELECT max(id) FROM {name}").fetchone()[0]
        if top is None:
            return 1
        if name in self.id_bases:
            return (top - self.id_bases[name]) // id_step(name) + 1
        if self.behaviour == "legacy":
            return top + 1 if name == "patients" else top // LEGACY_ID_STEP + 1
        return (top - CURRENT_ID_BASE) // CURRENT_ID_STEP + 1

    @staticmethod
    def _row(record: dict[str, Any]) -> tuple[Any, ...]:
        data = {k: v for k, v in record.items() if k not in COLUMNS}
        return (*(record.get(c) for c in COLUMNS), msgspec.json.encode(data).decode())

    @staticmethod
    def _record(row: Sequence[Any]) -> dict[str, Any]:
        record = dict(zip(COLUMNS, row[: len(COLUMNS)], strict=True))
        record.update(msgspec.json.decode(row[len(COLUMNS)]))
        if len(row) > len(COLUMNS) + 1:
            record["_source"] = row[-1]
        return record

    # Seeding

    def count(self, name: str = "patients") -> int:
        """How many rows a collection holds, deleted ones included."""
        with self._lock:
            return int(self._db.execute(f"SELECT count(*) FROM {name}").fetchone()[0])

    def seed(self, count: int, seed: int, *, collections: float = 1.0) -> None:
        """Fill an empty store: count synthetic patients and, scaled by collections, a clinic."""
        from tap_cliniko.sandbox.clinic import synthetic_clinic

        with self._lock:
            if self.count():
                return
            patients = synthetic_patients(count, seed, self.clock())
            for serial, patient in enumerate(patients, 1):
                patient["id"] = self.new_id("patients", serial)
            rows = {"patients": patients}
            if collections > 0:
                rows |= synthetic_clinic(patients, seed, self.clock(), collections, self.new_id)
            self._db.execute("BEGIN")
            for name, records in rows.items():
                self._db.executemany(f"INSERT INTO {name} {ROW}", [self._row(r) for r in records])
            for name, targets in self.account.volumes.items():
                self._shape(BY_NAME[name], targets)
            self._db.execute("COMMIT")

    def _shape(self, resource: Resource, targets: dict[str, int]) -> None:
        """Make a collection hold exactly `targets` rows per state (a profile's volumes)."""
        name = resource.name
        rows = [
            self._record(row)
            for row in self._db.execute(
                f"SELECT {', '.join(COLUMNS)}, data FROM {name} ORDER BY id"
            ).fetchall()
        ]
        digits = self.account.id_digits.get(name)
        limit = None if digits is None else 10**digits
        plan = shaping.plan(resource, rows, targets, self.archive_touches_updated_at, limit)
        if plan.dropped:  # before the clones' ids: a dropped top id must not set their serial
            self._db.executemany(f"DELETE FROM {name} WHERE id = ?", [[i] for i in plan.dropped])
        serial = self._next_serial(name)
        for record in plan.new:
            record["id"] = self.new_id(name, serial)
            serial += 1
        self._db.executemany(f"REPLACE INTO {name} {ROW}", [self._row(r) for r in plan.changed])
        if plan.dropped and plan.survivor is not None:
            self._repoint(resource, plan.dropped, plan.survivor)

    def _repoint(self, resource: Resource, dropped: list[int], survivor: int) -> None:
        """Rows that named a dropped row name a surviving one instead (no dangling ids)."""
        self._db.execute("CREATE TEMP TABLE IF NOT EXISTS dropped (id INTEGER PRIMARY KEY)")
        self._db.execute("DELETE FROM dropped")
        self._db.executemany("INSERT INTO dropped VALUES (?)", [[i] for i in dropped])
        for other in STORED:
            for key in shaping.references(resource, other):
                self._db.execute(
                    f"UPDATE {other.name} SET data = json_set(data, '$.{key}', ?)"
                    f" WHERE json_extract(data, '$.{key}') IN (SELECT id FROM dropped)",
                    [survivor],
                )

    # Reading

    def page(
        self,
        route: str,
        filters: list[str],
        sort: str | None,
        page: int,
        per_page: int,
        *,
        resource: str = "patients",
        nested: tuple[Nested, int] | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of a list route and the total its filters select.

        route is "" or "active" for the plain list, else a variant ("archived", "deleted", ...).
        """
        served = BY_NAME[resource]
        variant = "" if route == "active" and served.name == "patients" else route
        if served.computed:
            return self._computed_page(served, filters, sort, page, per_page, nested)
        where = [route_members(served, variant, filters)]
        args: list[Any] = []
        if nested is not None:
            sql, values = self._nested_sql(*nested)
            where.append(sql)
            args.extend(values)
        searchable = searchable_fields(served, variant, self.behaviour)
        for text in filters:
            sql, values = condition_sql(parse_condition(text, searchable))
            where.append(sql)
            args.extend(values)
        order = order_sql(served, sort, self.sort_mode)
        clause = " AND ".join(where)
        select = f"SELECT {', '.join(COLUMNS)}, data" + (", source" if served.union else "")
        with self._lock:
            total = self._db.execute(f"SELECT count(*) FROM {served.name} WHERE {clause}", args)
            count = int(total.fetchone()[0])
            rows = self._db.execute(
                f"{select} FROM {served.name} WHERE {clause} ORDER BY {order} LIMIT ? OFFSET ?",
                [*args, per_page, (page - 1) * per_page],
            ).fetchall()
        return [self._record(row) for row in rows], count

    def _nested_sql(self, nested: Nested, parent_id: int) -> tuple[str, list[Any]]:
        link = nested.link
        if link.startswith("="):
            return f"{column_sql(link[1:])} = ?", [parent_id]
        if link.startswith("^"):  # the parent row lists its children
            parent = self.get(parent_id, nested.parent)
            ids = (parent or {}).get(link[1:]) or []
            return f"id IN ({','.join('?' * len(ids)) or 'NULL'})", list(ids)
        return f"EXISTS (SELECT 1 FROM json_each(data, '$.{link}') WHERE value = ?)", [parent_id]

    def _computed_page(
        self,
        resource: Resource,
        filters: list[str],
        sort: str | None,
        page: int,
        per_page: int,
        nested: tuple[Nested, int] | None,
    ) -> tuple[list[dict[str, Any]], int]:
        if filters:
            raise QueryError(NOT_SEARCHABLE)
        order_sql(resource, sort, self.sort_mode)  # refuses what the route cannot sort by
        rows = self.services()
        if nested is not None:
            rows = [r for r in rows if r["business_id"] == nested[1]]
        return rows[(page - 1) * per_page : page * per_page], len(rows)

    def services(self) -> list[dict[str, Any]]:
        """Which practitioners offer each appointment type at each business (no ids, no times)."""
        with self._lock:
            businesses = self._live("businesses", "archived_at IS NULL")
            types = {t["id"]: t for t in self._live("appointment_types", "archived_at IS NULL")}
            practitioners = self._live("practitioners", "json_extract(data, '$.active') = 1")
        rows = []
        for business in businesses:
            for type_id in business.get("appointment_type_ids") or []:
                if type_id not in types:
                    continue
                offering = [
                    p["id"]
                    for p in practitioners
                    if business["id"] in (p.get("business_ids") or [])
                    and type_id in (p.get("appointment_type_ids") or [])
                ]
                rows.append(
                    {
                        "business_id": business["id"],
                        "appointment_type_id": type_id,
                        "practitioners_ids": offering,
                    }
                )
        return rows

    def _live(self, name: str, condition: str) -> list[dict[str, Any]]:
        rows = self._db.execute(
            f"SELECT {', '.join(COLUMNS)}, data FROM {name}"
            f" WHERE deleted_at IS NULL AND {condition} ORDER BY created_at, id"
        ).fetchall()
        return [self._record(row) for row in rows]

    def get(self, record_id: int | str, name: str = "patients") -> dict[str, Any] | None:
        """One row, deleted or not, or None."""
        resource = BY_NAME[name]
        if resource.computed or not str(record_id).isdigit():
            return None
        select = f"SELECT {', '.join(COLUMNS)}, data" + (", source" if resource.union else "")
        with self._lock:
            row = self._db.execute(
                f"{select} FROM {name} WHERE id = ?", [int(record_id)]
            ).fetchone()
        return None if row is None else self._record(row)

    def get_live(self, record_id: int | str, name: str = "patients") -> dict[str, Any] | None:
        """One row that is not deleted, or None."""
        record = self.get(record_id, name)
        return None if record is None or record["deleted_at"] else record

    def snapshot(self, name: str = "patients") -> dict[str, dict[str, Any]]:
        """Every row's status and full record as GET /NAME/:id renders it, by id."""
        resource = BY_NAME[name]
        if resource.computed:
            records = self.services()
            return {
                f"{r['business_id']}:{r['appointment_type_id']}": {
                    "status": "active",
                    "record": self.render(r, self.link_base, name=name),
                }
                for r in records
            }
        select = f"SELECT {', '.join(COLUMNS)}, data" + (", source" if resource.union else "")
        with self._lock:
            rows = self._db.execute(f"{select} FROM {name} ORDER BY id").fetchall()
        result = {}
        for row in rows:
            record = self._record(row)
            status = status_of(record)
            if name == "practitioners" and status == "active" and not record.get("active"):
                status = "inactive"
            result[str(record["id"])] = {
                "status": status,
                "record": self.render(record, self.link_base, name=name),
            }
        return result

    # Writing: every collection

    def create(self, name: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Create a row (422 rules of the API); return it rendered."""
        resource = BY_NAME[name]
        validate(resource, fields, creating=True)
        with self._lock:
            now = iso(self.clock())
            record = writable(resource, fields)
            record.update({c: None for c in TIME_COLUMNS}, created_at=now, updated_at=now)
            if name == "patients":
                record.setdefault("patient_phone_numbers", [])
            record["id"] = self.new_id(name, self._next_serial(name))
            self._fill_defaults(resource, record)
            self._db.execute(f"INSERT INTO {name} {ROW}", self._row(record))
            self._after_create(resource, record)
            return self.render(self._require(record["id"], name), self.link_base, name=name)

    def update(self, name: str, record_id: int | str, fields: dict[str, Any]) -> dict[str, Any]:
        """Change some fields and touch updated_at; return the row rendered."""
        resource = BY_NAME[name]
        validate(resource, fields, creating=False)
        with self._lock:
            record = self._require(record_id, name)
            record.update(writable(resource, fields))
            record["updated_at"] = iso(self.clock())
            self._replace(name, record)
            return self.render(record, self.link_base, name=name)

    def archive(self, name: str, record_id: int | str) -> None:
        """Archive; moves updated_at only when the account is set to."""
        self._mark(name, record_id, "archived_at", self.archive_touches_updated_at)

    def unarchive(self, name: str, record_id: int | str) -> dict[str, Any]:
        """Unarchive; moves updated_at only when the account is set to."""
        with self._lock:
            record = self._require(record_id, name)
            record["archived_at"] = None
            if self.unarchive_touches_updated_at:
                record["updated_at"] = iso(self.clock())
            self._replace(name, record)
            return self.render(record, self.link_base, name=name)

    def cancel(
        self, name: str, record_id: int | str, fields: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Cancel an appointment or attendee (with its attendees); it cannot be undone."""
        if "cancelled_at" not in BY_NAME[name].markers:
            raise KeyError(str(record_id))
        extra = cancellation(fields or {})
        self._mark(name, record_id, "cancelled_at", self.cancel_touches_updated_at, extra)
        return self.render(self._require(record_id, name), self.link_base, name=name)

    def delete(self, name: str, record_id: int | str) -> None:
        """Delete as the collection does: soft (deleted_at), hard (gone), or archive."""
        resource = BY_NAME[name]
        if resource.deletion == "archive":
            self.archive(name, record_id)
        elif resource.deletion == "hard":
            with self._lock:
                self._require(record_id, name)
                self._db.execute(f"DELETE FROM {name} WHERE id = ?", [int(record_id)])
        else:
            self._mark(name, record_id, "deleted_at", True)

    def _mark(
        self,
        name: str,
        record_id: int | str,
        marker: str,
        touch: bool,
        extra: dict[str, Any] | None = None,
    ) -> None:
        with self._lock:
            record = self._require(record_id, name)
            now = iso(self.clock())
            record[marker] = now
            record.update(extra or {})
            if touch:
                record["updated_at"] = now
            self._replace(name, record)
            for child, key in BY_NAME[name].cascade:
                if marker not in BY_NAME[child].markers:
                    continue
                for row in self._db.execute(
                    f"SELECT id FROM {child} WHERE {column_sql(key)} = ?"
                    f" AND deleted_at IS NULL AND {marker} IS NULL",
                    [record["id"]],
                ).fetchall():
                    self._mark(child, row[0], marker, touch, extra)

    def _require(self, record_id: int | str, name: str = "patients") -> dict[str, Any]:
        record = self.get_live(record_id, name)
        if record is None:
            raise KeyError(str(record_id))
        return record

    def _replace(self, name: str, record: dict[str, Any]) -> None:
        self._db.execute(f"REPLACE INTO {name} {ROW}", self._row(record))

    def _fill_defaults(self, resource: Resource, record: dict[str, Any]) -> None:
        """What Cliniko fills in itself: an appointment's end, an invoice's number."""
        if resource.name in ("individual_appointments", "group_appointments"):
            if not record.get("ends_at"):
                kind = self.get(record["appointment_type_id"], "appointment_types") or {}
                record["ends_at"] = _plus_minutes(
                    record["starts_at"], kind.get("duration_in_minutes") or 30
                )
            record.setdefault("did_not_arrive", False)
            record.setdefault("patient_arrived", False)
        if resource.name == "individual_appointments":
            patient = self.get(record["patient_id"]) or {}
            record.setdefault("patient_name", patient.get("label"))
        if resource.name == "group_appointments":
            record.setdefault("patient_ids", [])
            record.setdefault("max_attendees", 8)
        if resource.name == "invoices":
            top = self._db.execute("SELECT max(json_extract(data, '$.number')) FROM invoices")
            record.setdefault("number", (top.fetchone()[0] or 0) + 1)
            record.setdefault("status", 10)
            record.setdefault("status_description", "Open")
            record.setdefault("issue_date", record["created_at"][:10])

    def _after_create(self, resource: Resource, record: dict[str, Any]) -> None:
        """An individual appointment comes with its attendee; an attendee joins its group."""
        if resource.name == "individual_appointments":
            self.create(
                "attendees", {"booking_id": record["id"], "patient_id": record["patient_id"]}
            )
        if resource.name == "attendees":
            group = self.get(record["booking_id"], "group_appointments")
            if group is not None and record["patient_id"] not in group["patient_ids"]:
                group["patient_ids"].append(record["patient_id"])
                group["updated_at"] = record["updated_at"]
                self._replace("group_appointments", group)

    def booking_fields(self, pick: int = 0) -> dict[str, Any]:
        """Fields of a valid new individual appointment (for tests and the demo); pick varies it.

        An active practitioner who offers the type at the business, and a live patient.
        """
        with self._lock:
            practitioners = self._live("practitioners", "json_extract(data, '$.active') = 1")
            patients = self._live("patients", "archived_at IS NULL")
        if not practitioners or not patients:
            raise KeyError("the account has no active practitioner or patient")
        practitioner = practitioners[pick % len(practitioners)]
        kinds = practitioner["appointment_type_ids"]
        return {
            "patient_id": patients[pick * 7919 % len(patients)]["id"],
            "practitioner_id": practitioner["id"],
            "business_id": practitioner["business_ids"][pick % len(practitioner["business_ids"])],
            "appointment_type_id": kinds[pick % len(kinds)],
            "starts_at": iso(
                (self.clock() + timedelta(days=1 + pick % 30)).replace(
                    hour=8 + pick % 9, minute=0, second=0
                )
            ),
        }

    # Writing: the patient names the tests and the tap's property test call

    def create_patient(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Create a patient (422 rules of the API); return it rendered."""
        return self.create("patients", fields)

    def update_patient(self, patient_id: int | str, fields: dict[str, Any]) -> dict[str, Any]:
        """Change some fields and touch updated_at; return the patient rendered."""
        return self.update("patients", patient_id, fields)

    def archive_patient(self, patient_id: int | str) -> None:
        """Archive a patient."""
        self.archive("patients", patient_id)

    def unarchive_patient(self, patient_id: int | str) -> dict[str, Any]:
        """Unarchive a patient."""
        return self.unarchive("patients", patient_id)

    def delete_patient(self, patient_id: int | str) -> None:
        """Delete a patient; sets deleted_at and updated_at."""
        self.delete("patients", patient_id)

    # Rendering

    def render(
        self, record: dict[str, Any], base: str, *, listing: str = "", name: str = "patients"
    ) -> dict[str, Any]:
        """The row as the API shows it, in this account's behaviour."""
        row = render_row(record, base, listing=listing, name=name, behaviour=self.behaviour)
        if "id" in row:  # not a deleted row reduced to deleted_at and its link
            for extra in self.extra_fields:
                row.setdefault(extra, f"synthetic {extra} {row['id']}")
            name = record.get("_source") or name
            for extra, kinds in self.account.unknown_fields.get(name, {}).items():
                row.setdefault(extra, shaping.synthetic_value(extra, kinds, row["id"]))
            for absent in self.account.omitted_fields.get(name, ()):
                row.pop(absent, None)
        return row


def _plus_minutes(moment: str, minutes: int) -> str:
    start = datetime.strptime(moment[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return iso(start + timedelta(minutes=minutes))
