"""Rows as the API shows them: every collection from its field kinds, patients by their page.

"current" accounts show ids as strings and empty strings as null; "legacy" ones the older
page's shapes (integer ids, "" for an empty text).
"""

from __future__ import annotations

from typing import Any

from tap_cliniko.sandbox.resources import BY_NAME


def render_row(
    record: dict[str, Any], base: str, *, listing: str, name: str, behaviour: str
) -> dict[str, Any]:
    """The row as the API shows it, in the account's behaviour ("current" or "legacy")."""
    name = record.get("_source") or name
    if name == "patients":
        return render_patient(record, base, listing=listing, behaviour=behaviour)
    resource = BY_NAME[name]
    legacy = behaviour == "legacy"
    own = record.get("id")
    self_link = f"{base}/{name}/{own}"
    if listing == "deleted" and not legacy:
        return {"deleted_at": record["deleted_at"], "links": {"self": self_link}}
    rendered: dict[str, Any] = {}
    for field, kind in resource.fields:
        rendered[field] = _render_field(record, field, kind, base, own, self_link, legacy)
    return rendered


def render_patient(
    patient: dict[str, Any], base: str, *, listing: str, behaviour: str
) -> dict[str, Any]:
    """A patient as the Patients page shows one: its own field list and links."""
    pid = patient["id"]
    self_link = f"{base}/patients/{pid}"
    if listing == "deleted" and behaviour == "current":
        return {"deleted_at": patient["deleted_at"], "links": {"self": self_link}}
    links = {  # in the order and form of the Patients page's example
        "concession_type": {"links": {"self": f"{base}/concession_types/123"}},
        "referring_doctor": {"links": {"self": f"{base}/contacts/123"}},
        "medical_alerts": {"links": {"self": f"{self_link}/medical_alerts?page=1"}},
        "invoices": {"links": {"self": f"{self_link}/invoices?page=1"}},
        "appointments": {"links": {"self": f"{self_link}/appointments?page=1"}},
        "links": {"self": self_link},
    }
    if behaviour == "legacy":
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


def _link(url: str) -> dict[str, Any]:
    return {"links": {"self": url}}


def _render_field(
    record: dict[str, Any],
    field: str,
    kind: str,
    base: str,
    own: Any,
    self_link: str,
    legacy: bool,
) -> Any:
    """One field of a record as the API shows it (kinds: see shapes.py)."""
    if kind == "id":
        return own if legacy else str(own)
    if kind == "self":
        return {"self": self_link}
    if kind.startswith("ref:"):
        target = record.get(f"{field}_id")
        return None if target is None else _link(f"{base}/{kind[4:]}/{target}")
    if kind.startswith("refs:"):
        return [_link(f"{base}/{kind[5:]}/{i}") for i in record.get(f"{field}_ids") or []]
    if kind.startswith("url:"):
        return _link(kind[4:].format(base=base, id=own))
    value = record.get(field)
    if kind in ("ids", "int64") and value is not None:
        return value if legacy else ([str(v) for v in value] if kind == "ids" else str(value))
    if legacy:
        return "" if value is None and kind in ("date-time", "date", "string") else value
    return None if value == "" else value


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
