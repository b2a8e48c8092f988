"""Patients in one SQLite file: filtering, sorting, counting and paging are real queries."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from tap_cliniko.sandbox.synth import iso, synthetic_patients

# Which rows each list route holds (the partial indexes repeat these conditions exactly).
ROUTE_MEMBERS = {
    "active": "deleted_at IS NULL AND archived_at IS NULL",
    "archived": "deleted_at IS NULL AND archived_at IS NOT NULL",
    "deleted": "deleted_at IS NOT NULL",
}
CURRENT_ID_BASE = 1_100_000_000_000_000_000  # 19-digit ids, as on today's accounts
CURRENT_ID_STEP = 7919
TIME_COLUMNS = ("created_at", "updated_at", "archived_at", "deleted_at")
TEXT_COLUMNS = ("email", "first_name", "last_name", "old_reference_id", "preferred_first_name")
SEARCHABLE = frozenset(
    {"accepted_privacy_policy", "archived_at", "created_at", "date_of_birth", "id", *TEXT_COLUMNS}
    | {"updated_at"}
)
SEARCHABLE_CURRENT_DELETED = frozenset({"deleted_at", "id"})
SORTABLE = frozenset({"created_at", "updated_at", "id", "archived_at", "deleted_at"}) | {
    "first_name",
    "last_name",
}
SORT_MODES = ("honoured", "ignored", "refused")  # what the server does with a sort on id
BAD_SORT = "Sort parameter must be a valid column name"
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,63}$")
WRITABLE = frozenset(
    {
        "first_name",
        "last_name",
        "preferred_first_name",
        "label",
        "title",
        "email",
        "date_of_birth",
        "address_1",
        "address_2",
        "address_3",
        "city",
        "state",
        "post_code",
        "country",
        "country_code",
        "time_zone",
        "patient_phone_numbers",
        "notes",
        "appointment_notes",
        "emergency_contact",
        "occupation",
        "old_reference_id",
        "referral_source",
        "reminder_type",
        "sex",
        "gender",
        "gender_identity",
        "pronouns",
        "medicare",
        "medicare_reference_number",
        "dva_card_number",
        "invoice_default_to",
        "invoice_email",
        "invoice_extra_information",
        "accepted_privacy_policy",
        "accepted_sms_marketing",
        "accepted_email_marketing",
        "receives_confirmation_emails",
        "receives_cancellation_emails",
        "custom_fields",
    }
)
COLUMNS = ("id", *TIME_COLUMNS, "date_of_birth", *TEXT_COLUMNS, "accepted_privacy_policy")
PLACEHOLDERS = ",".join("?" * (len(COLUMNS) + 1))  # the columns, then the JSON of the rest


class QueryError(ValueError):
    """A list request the API refuses with 400; the message is the API's."""


class ValidationFailed(ValueError):
    """A write the API refuses with 422."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("Validation Failed")
        self.errors = errors


@dataclass(frozen=True)
class Condition:
    """One parsed `q[]` filter: column, operator, value."""

    column: str
    operator: str
    value: str


DATETIME_OPS = (">=", "<=", "!?", ">", "<", "?", "*")
VALUE_OPS = ("!=", ">=", "<=", ">", "<", "=", "~")
TIME_VALUE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]00:?00)$")
DATE_VALUE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_condition(text: str, searchable: frozenset[str]) -> Condition:
    """Parse `field:OPvalue`, refusing columns that cannot be searched."""
    column, _, rest = text.partition(":")
    if column not in searchable:
        raise QueryError("This column is not searchable.")
    if column in TIME_COLUMNS:
        operator = next((op for op in DATETIME_OPS if rest.startswith(op)), None)
        value = rest[len(operator) :] if operator else ""
        if operator is None or (operator in (">=", "<=", ">", "<") and not TIME_VALUE.match(value)):
            raise QueryError(f"Invalid filter value for {column}.")
        return Condition(column, operator, value[:19] + "Z" if value else "")
    if rest in ("?", "!?"):
        return Condition(column, rest, "")
    operator = next((op for op in VALUE_OPS if rest.startswith(op)), None)
    if operator is None:
        raise QueryError(f"Invalid filter for {column}.")
    value = rest[len(operator) :]
    if column == "id" and not value.isdigit() and operator not in ("?", "!?"):
        raise QueryError("Invalid filter value for id.")
    if column == "date_of_birth" and operator != "~" and not DATE_VALUE.match(value):
        raise QueryError("Invalid filter value for date_of_birth.")
    return Condition(column, operator, value)


def condition_sql(condition: Condition) -> tuple[str, list[Any]]:
    """SQL for one condition."""
    column, operator, value = condition.column, condition.operator, condition.value
    if operator == "*":
        return "1=1", []
    if operator == "?":
        return f"{column} IS NOT NULL", []
    if operator == "!?":
        return f"{column} IS NULL", []
    if column == "accepted_privacy_policy":
        flag = {"true": 1, "false": 0}.get(value.lower())
        if flag is None:
            raise QueryError("Invalid filter value for accepted_privacy_policy.")
        return (
            "accepted_privacy_policy = ?" if operator == "=" else "accepted_privacy_policy IS NOT ?"
        ), [flag]
    if operator == "~":
        return f"lower({column}) LIKE ?", [f"%{value.lower()}%"]
    sql_operator = "<>" if operator == "!=" else operator
    argument: Any = int(value) if column == "id" else value
    return f"{column} {sql_operator} ?", [argument]


class Store:
    """The patients of one local Cliniko account, in a SQLite file that survives restarts."""

    def __init__(
        self,
        path: Path,
        *,
        behaviour: str,
        clock: Callable[[], datetime],
        archive_touches_updated_at: bool = True,
        unarchive_touches_updated_at: bool = True,
        sort_mode: str = "honoured",
    ) -> None:
        self.behaviour = behaviour
        self.clock = clock
        self.archive_touches_updated_at = archive_touches_updated_at
        self.unarchive_touches_updated_at = unarchive_touches_updated_at
        self.sort_mode = sort_mode
        self.link_base = "http://127.0.0.1/v1"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.RLock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS patients (id INTEGER PRIMARY KEY, created_at TEXT"
                " NOT NULL, updated_at TEXT NOT NULL, archived_at TEXT, deleted_at TEXT,"
                " date_of_birth TEXT, email TEXT, first_name TEXT, last_name TEXT,"
                " old_reference_id TEXT, preferred_first_name TEXT,"
                " accepted_privacy_policy INTEGER, data TEXT NOT NULL)"
            )
            # One pair of partial indexes per list route, so that keyset pages (by id), page
            # numbers (by created_at), and each page's count(*) read only that route's rows.
            for old in ("by_archived_at", "by_deleted_at", "by_deleted_at_archived_at"):
                self._db.execute(f"DROP INDEX IF EXISTS {old}")  # earlier versions' indexes
            self._db.execute(
                "CREATE INDEX IF NOT EXISTS by_created_at_id ON patients (created_at, id)"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS by_updated_at ON patients (updated_at)")
            for route, members in ROUTE_MEMBERS.items():
                for name, columns in (("id", "id"), ("created", "created_at, id")):
                    self._db.execute(
                        f"CREATE INDEX IF NOT EXISTS {route}_by_{name} ON patients ({columns})"
                        f" WHERE {members}"
                    )

    def count(self) -> int:
        """How many patients the account holds, deleted ones included."""
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM patients").fetchone()[0])

    def seed(self, count: int, seed: int) -> None:
        """Fill an empty store with synthetic patients."""
        with self._lock:
            if self.count():
                return
            rows = [
                self._row(self._new_id(serial), patient)
                for serial, patient in enumerate(synthetic_patients(count, seed, self.clock()), 1)
            ]
            self._db.execute("BEGIN")
            self._db.executemany(f"INSERT INTO patients VALUES ({PLACEHOLDERS})", rows)
            self._db.execute("COMMIT")

    def _new_id(self, serial: int) -> int:
        return serial if self.behaviour == "legacy" else CURRENT_ID_BASE + serial * CURRENT_ID_STEP

    def _next_serial(self) -> int:
        top = self._db.execute("SELECT max(id) FROM patients").fetchone()[0]
        if top is None:
            return 1
        return (
            top + 1
            if self.behaviour == "legacy"
            else (top - CURRENT_ID_BASE) // CURRENT_ID_STEP + 1
        )

    @staticmethod
    def _row(patient_id: int, patient: dict[str, Any]) -> tuple[Any, ...]:
        data = {k: v for k, v in patient.items() if k not in COLUMNS}
        consent = patient.get("accepted_privacy_policy")
        return (
            patient_id,
            *(patient.get(c) for c in TIME_COLUMNS),
            patient.get("date_of_birth"),
            *(patient.get(c) for c in TEXT_COLUMNS),
            None if consent is None else int(consent),
            json.dumps(data, ensure_ascii=False),
        )

    def _patient(self, row: Sequence[Any]) -> dict[str, Any]:
        patient = dict(zip(COLUMNS, row[:-1], strict=True))
        consent = patient["accepted_privacy_policy"]
        patient["accepted_privacy_policy"] = None if consent is None else bool(consent)
        patient.update(msgspec.json.decode(row[-1]))
        return patient

    # Reading

    def page(
        self,
        route: str,
        filters: list[str],
        sort: str | None,
        page: int,
        per_page: int,
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of a list route and the total the filters select."""
        where, args = self._membership(route, filters)
        for text in filters:
            searchable = (
                SEARCHABLE_CURRENT_DELETED
                if route == "deleted" and self.behaviour == "current"
                else SEARCHABLE | ({"deleted_at"} if route == "deleted" else set())
            )
            sql, values = condition_sql(parse_condition(text, searchable))
            where.append(sql)
            args.extend(values)
        order = self._order(sort)
        clause = " AND ".join(where) or "1=1"
        with self._lock:
            total = self._db.execute(f"SELECT count(*) FROM patients WHERE {clause}", args)
            count = int(total.fetchone()[0])
            rows = self._db.execute(
                f"SELECT * FROM patients WHERE {clause} ORDER BY {order} LIMIT ? OFFSET ?",
                [*args, per_page, (page - 1) * per_page],
            ).fetchall()
        return [self._patient(row) for row in rows], count

    @staticmethod
    def _membership(route: str, filters: list[str]) -> tuple[list[str], list[Any]]:
        if route == "active" and any(f.startswith("archived_at:") for f in filters):
            return ["deleted_at IS NULL"], []
        return [ROUTE_MEMBERS[route]], []

    def _order(self, sort: str | None) -> str:
        terms = []
        parts = [part.strip().partition(":") for part in (sort or "created_at").split(",")]
        if any(column == "id" for column, _, _ in parts) and self.sort_mode != "honoured":
            if self.sort_mode == "refused":
                raise QueryError(BAD_SORT)
            parts = [("created_at", "", "")]  # "ignored": the default order, silently
        for column, _, direction in parts:
            if column not in SORTABLE or direction not in ("", "asc", "desc"):
                raise QueryError(BAD_SORT)
            terms.append(f"{column} {'DESC' if direction == 'desc' else 'ASC'}")
        if not any(t.startswith("id ") for t in terms):
            terms.append("id ASC")  # a stable order, so that page numbers mean something
        return ", ".join(terms)

    def get(self, patient_id: int | str) -> dict[str, Any] | None:
        """One patient, deleted or not, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM patients WHERE id = ?", [int(patient_id)]
            ).fetchone()
        return None if row is None else self._patient(row)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every patient's status and full record as GET /patients/:id renders it."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM patients ORDER BY id").fetchall()
        result = {}
        for row in rows:
            patient = self._patient(row)
            status = (
                "deleted"
                if patient["deleted_at"]
                else "archived"
                if patient["archived_at"]
                else "active"
            )
            result[str(patient["id"])] = {
                "status": status,
                "record": self.render(patient, self.link_base),
            }
        return result

    # Writing

    def create_patient(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Create a patient (422 rules of the API); return it rendered."""
        self._validate(fields, creating=True)
        with self._lock:
            now = iso(self.clock())
            patient = {k: v for k, v in fields.items() if k in WRITABLE}
            patient.update(created_at=now, updated_at=now, archived_at=None, deleted_at=None)
            patient.setdefault("patient_phone_numbers", [])
            patient_id = self._new_id(self._next_serial())
            self._db.execute(
                f"INSERT INTO patients VALUES ({PLACEHOLDERS})",
                self._row(patient_id, patient),
            )
            return self.render(self._require(patient_id), self.link_base)

    def update_patient(self, patient_id: int | str, fields: dict[str, Any]) -> dict[str, Any]:
        """Change some fields and touch updated_at; return the patient rendered."""
        self._validate(fields, creating=False)
        with self._lock:
            patient = self._require(patient_id)
            patient.update({k: v for k, v in fields.items() if k in WRITABLE})
            patient["updated_at"] = iso(self.clock())
            self._replace(patient)
            return self.render(patient, self.link_base)

    def archive_patient(self, patient_id: int | str) -> None:
        """Archive; moves updated_at only when the account is set to."""
        with self._lock:
            patient = self._require(patient_id)
            now = iso(self.clock())
            patient["archived_at"] = now
            if self.archive_touches_updated_at:
                patient["updated_at"] = now
            self._replace(patient)

    def unarchive_patient(self, patient_id: int | str) -> dict[str, Any]:
        """Unarchive; moves updated_at only when the account is set to."""
        with self._lock:
            patient = self._require(patient_id)
            patient["archived_at"] = None
            if self.unarchive_touches_updated_at:
                patient["updated_at"] = iso(self.clock())
            self._replace(patient)
            return self.render(patient, self.link_base)

    def delete_patient(self, patient_id: int | str) -> None:
        """Delete; sets deleted_at and updated_at."""
        with self._lock:
            patient = self._require(patient_id)
            now = iso(self.clock())
            patient["deleted_at"] = now
            patient["updated_at"] = now
            self._replace(patient)

    def _require(self, patient_id: int | str) -> dict[str, Any]:
        patient = self.get(patient_id)
        if patient is None or patient["deleted_at"]:
            raise KeyError(str(patient_id))
        return patient

    def _replace(self, patient: dict[str, Any]) -> None:
        row = self._row(patient["id"], patient)
        self._db.execute(f"REPLACE INTO patients VALUES ({PLACEHOLDERS})", row)

    @staticmethod
    def _validate(fields: dict[str, Any], *, creating: bool) -> None:
        errors: dict[str, list[str]] = {}
        for name in ("first_name", "last_name"):
            if (creating or name in fields) and not str(fields.get(name) or "").strip():
                errors[name] = ["can't be blank"]
        email = fields.get("email")
        if email and not EMAIL.match(str(email)):
            errors["email"] = ["is invalid"]
        if errors:
            raise ValidationFailed(errors)

    # Rendering

    def render(self, patient: dict[str, Any], base: str, *, listing: str = "") -> dict[str, Any]:
        """The patient as the API shows it, in this account's behaviour."""
        pid = patient["id"]
        self_link = f"{base}/patients/{pid}"
        if listing == "deleted" and self.behaviour == "current":
            return {"deleted_at": patient["deleted_at"], "links": {"self": self_link}}
        links = {  # in the order and form of the Patients page's example
            "concession_type": {"links": {"self": f"{base}/concession_types/123"}},
            "referring_doctor": {"links": {"self": f"{base}/contacts/123"}},
            "medical_alerts": {"links": {"self": f"{self_link}/medical_alerts?page=1"}},
            "invoices": {"links": {"self": f"{self_link}/invoices?page=1"}},
            "appointments": {"links": {"self": f"{self_link}/appointments?page=1"}},
            "links": {"self": self_link},
        }
        if self.behaviour == "legacy":
            record = {k: patient.get(k) for k in LEGACY_FIELDS}
            for key, value in record.items():
                if value is None and key not in LEGACY_BOOLEANS:
                    record[key] = ""
            record["id"] = pid
            record["patient_phone_numbers"] = patient.get("patient_phone_numbers") or []
            record.update(links)
            return record
        record = {k: patient.get(k) for k in CURRENT_FIELDS}
        for key, value in record.items():
            if value == "":
                record[key] = None
        record["id"] = str(pid)
        record["patient_phone_numbers"] = patient.get("patient_phone_numbers") or []
        record.update(links)
        record.update(
            attendees={"links": {"self": f"{base}/attendees?q%5B%5D=patient_id%3A%3D{pid}"}},
            latest_booking={"links": {"self": f"{base}/bookings/1"}},
            patient_attachments={"links": {"self": f"{self_link}/patient_attachments"}},
            relationships={"links": {"self": f"{self_link}/relationships"}},
            merged_with_patient=None,
        )
        return record


LEGACY_BOOLEANS = frozenset(
    {"accepted_privacy_policy", "accepted_sms_marketing", "receives_confirmation_emails"}
)
LEGACY_FIELDS = (
    "accepted_privacy_policy",
    "accepted_sms_marketing",
    "address_1",
    "address_2",
    "address_3",
    "archived_at",
    "city",
    "country",
    "created_at",
    "date_of_birth",
    "deleted_at",
    "email",
    "emergency_contact",
    "first_name",
    "invoice_default_to",
    "invoice_email",
    "invoice_extra_information",
    "gender",
    "gender_identity",
    "id",
    "last_name",
    "medicare",
    "medicare_reference_number",
    "notes",
    "appointment_notes",
    "occupation",
    "old_reference_id",
    "post_code",
    "receives_confirmation_emails",
    "referral_source",
    "reminder_type",
    "sex",
    "state",
    "title",
    "updated_at",
)
CURRENT_FIELDS = (
    *LEGACY_FIELDS,
    "accepted_email_marketing",
    "country_code",
    "custom_fields",
    "dva_card_number",
    "label",
    "merged_at",
    "preferred_first_name",
    "pronouns",
    "receives_cancellation_emails",
    "time_zone",
)
