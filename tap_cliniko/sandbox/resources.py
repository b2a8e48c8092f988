"""Every collection the local Cliniko serves, as data: one line per collection.

Filters, records keys and record fields come from the spec (shapes.json); this table adds what
the spec does not say: which rows a plain list hides, the older docs' variant routes, how rows
are removed, and the nested routes that carry a relation no top-level list has.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from tap_cliniko.sandbox.shapes import shapes

ARCHIVED = ("archived_at",)
ARCHIVED_CANCELLED = ("archived_at", "cancelled_at")

# Which rows each variant route holds (the older docs' /…/archived, /…/cancelled, /…/deleted;
# the spec's /practitioners/inactive and /patient_cases/active).
VARIANT_MEMBERS = {
    "archived": "deleted_at IS NULL AND archived_at IS NOT NULL",
    "cancelled": "deleted_at IS NULL AND cancelled_at IS NOT NULL",
    "deleted": "deleted_at IS NOT NULL",
    "inactive": "deleted_at IS NULL AND json_extract(data, '$.active') = 0",
    "active": "deleted_at IS NULL AND archived_at IS NULL AND json_extract(data, '$.closed') = 0",
}
LEGACY_VARIANTS = frozenset({"archived", "cancelled", "deleted"})  # off with variant_routes=False


@dataclass(frozen=True)
class Resource:
    """How the local Cliniko serves one collection."""

    name: str  # path /NAME, records key NAME, table NAME
    #: Markers whose rows a plain list leaves out unless a q[] filter names the marker.
    hidden: tuple[str, ...] = ()
    #: Extra condition of the plain list (practitioners: active ones only).
    plain: str = ""
    #: Variant routes /NAME/VARIANT (keys of VARIANT_MEMBERS).
    variants: tuple[str, ...] = ()
    #: "soft": DELETE sets deleted_at; "hard": the row is gone; "archive": DELETE archives.
    deletion: str = "soft"
    #: Fields a create must carry (422 "can't be blank" otherwise).
    required: tuple[str, ...] = ()
    #: (child resource, the child's field naming this row): writes here apply to those too.
    cascade: tuple[tuple[str, str], ...] = ()
    #: Rows computed from other collections, never stored (services).
    computed: bool = False
    #: The union of these collections' rows (bookings).
    union: tuple[str, ...] = ()

    @cached_property
    def spec(self) -> dict[str, Any]:
        """The spec's facts about the top-level list route."""
        found: dict[str, Any] = shapes()["paths"][f"/{self.name}"]
        return found

    @cached_property
    def fields(self) -> tuple[tuple[str, str], ...]:
        """(name, kind) of every field of a record, in the spec's order."""
        return tuple((name, kind) for name, kind in shapes()["schemas"][self.spec["schema"]])

    @cached_property
    def filters(self) -> dict[str, str]:
        """q[] column -> format (int64, date-time, date, string, boolean, integer, array)."""
        return dict(self.spec["filters"])

    @cached_property
    def sortable(self) -> frozenset[str]:
        """Columns sort= accepts: the scalar filter columns (none where q[] is not offered)."""
        if self.computed:
            return frozenset({"created_at"})
        return frozenset(c for c, kind in self.filters.items() if kind != "array") | {"id"}

    @cached_property
    def markers(self) -> frozenset[str]:
        """Which of archived_at, cancelled_at, deleted_at the records carry."""
        names = {name for name, _ in self.fields}
        return frozenset(names & {"archived_at", "cancelled_at", "deleted_at"})


R = Resource
APPOINTMENT = ("appointment_type_id", "business_id", "practitioner_id", "starts_at")

RESOURCES: tuple[Resource, ...] = (
    R(
        "patients",
        hidden=ARCHIVED,
        variants=("archived", "deleted"),
        required=("first_name", "last_name"),
    ),
    R("appointment_types", hidden=ARCHIVED, variants=("archived",), deletion="archive"),
    R("appointment_type_billable_items", deletion="hard"),
    R("appointment_type_products", deletion="hard"),
    R(
        "attendees",
        hidden=ARCHIVED_CANCELLED,
        variants=("cancelled", "deleted"),
        required=("booking_id", "patient_id"),
    ),
    R("availability_blocks", deletion="hard"),
    R("billable_items", hidden=ARCHIVED, deletion="archive"),
    R(
        "bookings",
        hidden=ARCHIVED_CANCELLED,
        union=("individual_appointments", "group_appointments", "unavailable_blocks"),
    ),
    R("businesses", hidden=ARCHIVED, deletion="archive"),
    R("communications", hidden=ARCHIVED, deletion="archive"),
    R("concession_prices", deletion="hard"),
    R("concession_types", hidden=ARCHIVED, deletion="archive"),
    R("contacts", hidden=ARCHIVED, deletion="archive"),
    R("daily_availabilities", deletion="hard"),
    R(
        "group_appointments",
        hidden=ARCHIVED,
        variants=("deleted",),
        required=APPOINTMENT,
        cascade=(("attendees", "booking_id"),),
    ),
    R(
        "individual_appointments",
        hidden=ARCHIVED_CANCELLED,
        variants=("cancelled", "deleted"),
        required=(*APPOINTMENT, "patient_id"),
        cascade=(("attendees", "booking_id"),),
    ),
    R(
        "invoices",
        hidden=ARCHIVED,
        variants=("deleted",),
        required=("patient_id", "business_id"),
        cascade=(("invoice_items", "invoice_id"),),
    ),
    R("invoice_items", hidden=ARCHIVED, variants=("deleted",), required=("invoice_id",)),
    R("medical_alerts", hidden=ARCHIVED, variants=("deleted",)),
    R("patient_attachments", hidden=ARCHIVED, deletion="archive"),
    R("patient_cases", hidden=ARCHIVED, variants=("active",), deletion="archive"),
    R("patient_forms", hidden=ARCHIVED, deletion="archive"),
    R("patient_form_templates", hidden=ARCHIVED, deletion="archive"),
    R(
        "practitioners",
        plain="json_extract(data, '$.active') = 1",
        variants=("inactive",),
        deletion="hard",
    ),
    R("practitioner_reference_numbers", deletion="hard"),
    R("products", hidden=ARCHIVED, deletion="archive"),
    R("product_suppliers", deletion="archive"),
    R("referral_sources", hidden=ARCHIVED, deletion="archive"),
    R("referral_source_types", hidden=ARCHIVED, deletion="archive"),
    R("relationships", hidden=ARCHIVED, deletion="archive"),
    R("services", computed=True, deletion="hard"),
    R("stock_adjustments", hidden=ARCHIVED, deletion="archive"),
    R("taxes", deletion="hard"),
    R("treatment_notes", hidden=ARCHIVED, variants=("deleted",)),
    R("treatment_note_templates", hidden=ARCHIVED, variants=("deleted",)),
    R("unavailable_blocks", hidden=ARCHIVED, variants=("deleted",)),
    R("unavailable_block_types", hidden=ARCHIVED, deletion="archive"),
    R("users", deletion="hard"),
)
BY_NAME = {resource.name: resource for resource in RESOURCES}
STORED = tuple(r for r in RESOURCES if not r.computed and not r.union)


@dataclass(frozen=True)
class Nested:
    """A nested list route: the CHILD rows that belong to one PARENT row."""

    parent: str
    child: str
    variant: str = ""  # "inactive": the child's variant route under the parent
    #: How a child belongs: the child's list field holding parent ids ("business_ids"), or
    #: the parent's list field holding child ids ("^appointment_type_ids"), or the child's
    #: field naming the parent ("=patient_id").
    link: str = ""

    @property
    def path(self) -> str:
        suffix = f"/{self.variant}" if self.variant else ""
        return f"/{self.parent}/<int:parent_id>/{self.child}{suffix}"


NESTED: tuple[Nested, ...] = (
    Nested("businesses", "practitioners", link="business_ids"),
    Nested("businesses", "practitioners", "inactive", link="business_ids"),
    Nested("appointment_types", "practitioners", link="appointment_type_ids"),
    Nested("appointment_types", "practitioners", "inactive", link="appointment_type_ids"),
    Nested("practitioners", "appointment_types", link="^appointment_type_ids"),
    Nested("businesses", "daily_availabilities", link="=business_id"),
    Nested("practitioners", "daily_availabilities", link="=practitioner_id"),
    Nested("patients", "treatment_notes", link="=patient_id"),
    Nested("patient_cases", "invoices", link="=patient_case_id"),
    Nested("patient_cases", "patient_attachments", link="=patient_case_id"),
    Nested("businesses", "services", link="=business_id"),
)
