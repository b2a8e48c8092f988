"""Every Cliniko collection the tap reads, as data: one line per collection.

One generic stream class reads this table (tap_cliniko.streams); a collection Cliniko publishes
tomorrow is one line here plus one schema from scripts/generate_schemas.py. The facts behind
each line (filters, hidden rows, deletions) are in COLLECTIONS.md of the API research.
"""

from __future__ import annotations

from dataclasses import dataclass

ARCHIVED = "archived_at:*"
CANCELLED = "cancelled_at:*"
ARCHIVED_AND_CANCELLED = (ARCHIVED, CANCELLED)


@dataclass(frozen=True)
class Collection:
    """How to read one Cliniko collection into one stream."""

    #: Stream name (also the schema's file name under schemas/).
    name: str
    #: List route; a child stream's holds `{parent_id}`, filled from each parent row.
    path: str
    #: Key of the records list in each page (`{"appointment_types": [...], ...}`).
    records_key: str = ""
    #: q[] values that bring back rows the route hides by default (archived, cancelled).
    hidden: tuple[str, ...] = ()
    #: Further routes whose rows belong to the same stream (`/practitioners/inactive`).
    also: tuple[str, ...] = ()
    #: The older docs' list of deleted rows, read after the main route where it still answers.
    deleted_route: str | None = None
    #: False: no usable updated_at filter, or rows vanish without a trace, so every run reads
    #: the whole list and sends ACTIVATE_VERSION (targets drop the rows that are gone).
    incremental: bool = True
    #: Clinical content: discovered, but synced only when the catalog selects it.
    clinical: bool = False
    #: Parent collection of a child stream (rows exist only under `/parent/{id}/...`).
    parent: str | None = None
    #: Field that carries the parent's id in a child stream's rows.
    parent_key: str = ""
    #: Link fields that may name a patient: privacy_redaction looks at their consent.
    patient_fields: tuple[str, ...] = ()
    #: No `id`: the primary key is these fields (derived from the rows' link objects).
    key: tuple[str, ...] = ("id",)
    #: False: no q[] at all (no id or updated_at filter), so pages are read by number.
    keyset: bool = True
    #: What Cliniko calls the permission to read it, for the one-line 403 warning.
    permission: str = ""

    def __post_init__(self) -> None:
        if not self.records_key:
            object.__setattr__(self, "records_key", self.name)
        if not self.permission:
            object.__setattr__(self, "permission", f"read {self.name.replace('_', ' ')}")

    @property
    def routes(self) -> tuple[str, ...]:
        """Every list route of the collection, main route first (deleted rows not included)."""
        return (self.path, *self.also)


C = Collection
PATIENT = ("patient",)

#: Every top-level list collection of Cliniko's OpenAPI spec except patients (which has its
#: own three streams), in the spec's order, then the child streams.
COLLECTIONS: tuple[Collection, ...] = (
    C("appointment_types", "/appointment_types", hidden=(ARCHIVED,)),
    C("appointment_type_billable_items", "/appointment_type_billable_items", incremental=False),
    C("appointment_type_products", "/appointment_type_products", incremental=False),
    C(
        "attendees",
        "/attendees",
        hidden=ARCHIVED_AND_CANCELLED,
        deleted_route="/attendees/deleted",
        patient_fields=PATIENT,
    ),
    C("availability_blocks", "/availability_blocks", incremental=False),
    C("billable_items", "/billable_items", hidden=(ARCHIVED,)),
    C("bookings", "/bookings", hidden=ARCHIVED_AND_CANCELLED, patient_fields=PATIENT),
    C("businesses", "/businesses", hidden=(ARCHIVED,)),
    C(
        "communications",
        "/communications",
        hidden=(ARCHIVED,),
        clinical=True,
        patient_fields=PATIENT,
    ),
    C("concession_prices", "/concession_prices", incremental=False),
    C("concession_types", "/concession_types", hidden=(ARCHIVED,)),
    C("contacts", "/contacts", hidden=(ARCHIVED,)),
    C("daily_availabilities", "/daily_availabilities", incremental=False),
    C(
        "group_appointments",
        "/group_appointments",
        hidden=(ARCHIVED,),
        deleted_route="/group_appointments/deleted",
    ),
    C(
        "individual_appointments",
        "/individual_appointments",
        hidden=ARCHIVED_AND_CANCELLED,
        deleted_route="/individual_appointments/deleted",
        patient_fields=PATIENT,
    ),
    C(
        "invoices",
        "/invoices",
        hidden=(ARCHIVED,),
        deleted_route="/invoices/deleted",
        patient_fields=PATIENT,
    ),
    C(
        "invoice_items",
        "/invoice_items",
        hidden=(ARCHIVED,),
        deleted_route="/invoice_items/deleted",
    ),
    C(
        "medical_alerts",
        "/medical_alerts",
        hidden=(ARCHIVED,),
        deleted_route="/medical_alerts/deleted",
        clinical=True,
        patient_fields=PATIENT,
    ),
    C(
        "patient_attachments",
        "/patient_attachments",
        hidden=(ARCHIVED,),
        clinical=True,
        patient_fields=PATIENT,
    ),
    C("patient_cases", "/patient_cases", hidden=(ARCHIVED,), patient_fields=PATIENT),
    C("patient_forms", "/patient_forms", hidden=(ARCHIVED,), clinical=True, patient_fields=PATIENT),
    C("patient_form_templates", "/patient_form_templates", hidden=(ARCHIVED,)),
    C("practitioners", "/practitioners", also=("/practitioners/inactive",)),
    C("practitioner_reference_numbers", "/practitioner_reference_numbers", incremental=False),
    C("products", "/products", hidden=(ARCHIVED,)),
    C("product_suppliers", "/product_suppliers", incremental=False),
    C(
        "referral_sources",
        "/referral_sources",
        hidden=(ARCHIVED,),
        patient_fields=("patient", "referrer"),
    ),
    C("referral_source_types", "/referral_source_types", hidden=(ARCHIVED,)),
    C(
        "relationships",
        "/relationships",
        hidden=(ARCHIVED,),
        patient_fields=("patient", "related_patient"),
    ),
    C(
        "services",
        "/services",
        incremental=False,
        keyset=False,
        key=("business_id", "appointment_type_id"),
    ),
    C("stock_adjustments", "/stock_adjustments", hidden=(ARCHIVED,)),
    C("taxes", "/taxes", incremental=False),
    C(
        "treatment_notes",
        "/treatment_notes",
        hidden=(ARCHIVED,),
        deleted_route="/treatment_notes/deleted",
        clinical=True,
        patient_fields=PATIENT,
    ),
    C(
        "treatment_note_templates",
        "/treatment_note_templates",
        hidden=(ARCHIVED,),
        deleted_route="/treatment_note_templates/deleted",
    ),
    C(
        "unavailable_blocks",
        "/unavailable_blocks",
        hidden=(ARCHIVED,),
        deleted_route="/unavailable_blocks/deleted",
    ),
    C("unavailable_block_types", "/unavailable_block_types", hidden=(ARCHIVED,)),
    C("users", "/users", incremental=False, permission="administer users (administrator role)"),
    # Child streams: which practitioners work at which business, and offer which type.
    C(
        "business_practitioners",
        "/businesses/{parent_id}/practitioners",
        records_key="practitioners",
        also=("/businesses/{parent_id}/practitioners/inactive",),
        incremental=False,
        parent="businesses",
        parent_key="business_id",
        key=("business_id", "id"),
        permission="read practitioners",
    ),
    C(
        "appointment_type_practitioners",
        "/appointment_types/{parent_id}/practitioners",
        records_key="practitioners",
        also=("/appointment_types/{parent_id}/practitioners/inactive",),
        incremental=False,
        parent="appointment_types",
        parent_key="appointment_type_id",
        key=("appointment_type_id", "id"),
        permission="read practitioners",
    ),
)

BY_NAME = {collection.name: collection for collection in COLLECTIONS}
