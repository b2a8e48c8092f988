"""What a write may carry: the API's 422 rules, the fields each collection keeps, a cancellation.

Pure rules over the collection table; the store applies them inside its transaction.
"""

from __future__ import annotations

import re
from typing import Any

from tap_cliniko.sandbox.query import TIME_COLUMNS, TIME_VALUE
from tap_cliniko.sandbox.resources import Resource

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,63}$")
PATIENT_WRITABLE = frozenset(
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
NOT_WRITABLE = frozenset({"id", "links", *TIME_COLUMNS})


class ValidationFailed(ValueError):
    """A write the API refuses with 422."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("Validation Failed")
        self.errors = errors


def validate(resource: Resource, fields: dict[str, Any], *, creating: bool) -> None:
    """Refuse as the API does with 422: blank required fields, a bad email or time."""
    errors: dict[str, list[str]] = {}
    for name in resource.required:
        if (creating or name in fields) and not str(fields.get(name) or "").strip():
            errors[name] = ["can't be blank"]
    email = fields.get("email")
    if email and not EMAIL.match(str(email)):
        errors["email"] = ["is invalid"]
    for name, value in fields.items():
        if name in TIME_COLUMNS or not value or not isinstance(value, str):
            continue
        kind = resource.filters.get(name)
        if kind == "date-time" and not TIME_VALUE.match(value):
            errors[name] = ["is invalid"]
    if errors:
        raise ValidationFailed(errors)


def writable(resource: Resource, fields: dict[str, Any]) -> dict[str, Any]:
    """The fields of a write the collection keeps (ids given as strings become numbers)."""
    if resource.name == "patients":
        return {k: v for k, v in fields.items() if k in PATIENT_WRITABLE}
    names = {n for n, kind in resource.fields if not kind.startswith(("url:", "self"))}
    names |= {f"{n}_id" for n, kind in resource.fields if kind.startswith("ref:")}
    names |= set(resource.filters)
    return {
        k: int(v) if k.endswith("_id") and isinstance(v, str) and v.isdigit() else v
        for k, v in fields.items()
        if k in names and k not in NOT_WRITABLE
    }


CANCELLATION_REASONS = {
    10: "Feeling Better",
    20: "Condition Worse",
    30: "Sick",
    40: "Away",
    50: "Other",
    60: "Work",
    70: "COVID-19 related",
}


def cancellation(fields: dict[str, Any]) -> dict[str, Any]:
    """What a cancellation records on the row: the reason (Other unless given), its name, a note."""
    reason = fields.get("cancellation_reason", 50)
    return {
        "cancellation_reason": reason,
        "cancellation_reason_description": CANCELLATION_REASONS.get(reason, "Other"),
        "cancellation_note": fields.get("cancellation_note"),
    }
