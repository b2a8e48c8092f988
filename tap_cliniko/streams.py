"""The three Cliniko patient streams."""

from __future__ import annotations

from typing import ClassVar

from tap_cliniko.client import ClinikoStream


class PatientsStream(ClinikoStream):
    """Active patients: `GET /patients` (Cliniko leaves out archived and deleted ones)."""

    name = "patients"
    path = "/patients"


class ArchivedPatientsStream(ClinikoStream):
    """Archived patients: `GET /patients/archived`, or `/patients?q[]=archived_at:*` without it."""

    name = "archived_patients"
    path = "/patients/archived"
    # Today's spec has no /patients/archived; its documented way to hidden rows is the `*`.
    route_fallback: ClassVar[tuple[str, str] | None] = ("/patients", "archived_at:*")
    # Whether archiving moves updated_at is not known, so archived_at is watched too.
    since_fields: ClassVar[tuple[str, ...]] = ("updated_at", "archived_at")
    fallbacks: ClassVar[dict[str, str | None]] = {"archived_at": None}


class DeletedPatientsStream(ClinikoStream):
    """Deleted patients: `GET /patients/deleted` (today often just deleted_at and a link)."""

    name = "deleted_patients"
    path = "/patients/deleted"
    fallbacks: ClassVar[dict[str, str | None]] = {"updated_at": "deleted_at"}
    append_only: ClassVar[bool] = True  # nobody is undeleted
