"""What a clinic keeps about some patients: alerts, cases, forms, files, referrals, messages."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tap_cliniko.sandbox.clinic.configuration import FORM_QUESTIONS
from tap_cliniko.sandbox.clinic.rows import Clinic, Record, iso, parse

RELATIONS = [
    (10, "Parent"),
    (20, "Child"),
    (30, "Sibling"),
    (40, "Spouse"),
    (50, "Partner"),
    (60, "Relative"),
    (70, "Other"),
]
MESSAGE_TYPES = ["Email", "Other", "Phone call", "SMS"]
ALERTS = ["Allergic to latex", "Pacemaker", "Type 1 diabetes", "Anticoagulants", "Epilepsy"]


def patient_records(clinic: Clinic, patients: list[Record], setup: dict[str, Any]) -> None:
    """What a clinic keeps about some patients: alerts, cases, forms, referrals, messages."""
    rng = clinic.rng
    plans: dict[str, list[tuple[datetime, dict[str, Any]]]] = {}

    def plan(collection: str, created: datetime, /, **fields: Any) -> None:
        plans.setdefault(collection, []).append((created, fields))

    live = [p for p in patients if not p.get("deleted_at")]
    for patient in patients:
        joined = parse(patient["created_at"])
        if rng.random() < 0.5:
            source_type = rng.choice(setup["source_types"])
            referrer = (
                rng.choice(live) if source_type["referrer_type"] == "Patient" and live else None
            )
            plan(
                "referral_sources",
                joined,
                patient_id=patient["id"],
                referral_source_type_id=source_type["id"],
                referrer_id=referrer["id"] if referrer else None,
                referrer_type="Patient" if referrer else None,
                subcategory=None,
                notes="",
            )
        if rng.random() < 0.2:
            plan(
                "medical_alerts",
                clinic.later(joined, 60),
                patient_id=patient["id"],
                name=rng.choice(ALERTS),
            )
        if rng.random() < 0.1:
            opened = clinic.later(joined, 200)
            closed = rng.random() < 0.4
            plan(
                "patient_cases",
                opened,
                patient_id=patient["id"],
                name=rng.choice(["WorkCover claim", "TAC claim", "Chronic disease plan"]),
                contact_id=rng.choice(setup["contacts"])["id"],
                issue_date=iso(opened)[:10],
                expiry_date=iso(opened + timedelta(days=365))[:10],
                closed=closed,
                closed_at=iso(clinic.later(opened, 300)) if closed else None,
                max_sessions=rng.choice([5, 10, 12]),
                max_invoiceable_amount=rng.choice(["1000.00", "2500.00"]),
                notes="",
                referral=True,
                referral_type=rng.choice(["medicare", "dva", None]),
                include_cancelled_attendees=False,
                include_dna_attendees=False,
                attendee_ids=[],
            )
        if rng.random() < 0.3:
            template = setup["form_templates"][0]
            sent = clinic.later(joined, 30)
            completed = rng.random() < 0.8
            plan(
                "patient_forms",
                sent,
                patient_id=patient["id"],
                business_id=setup["businesses"][0]["id"],
                attendee_id=None,
                booking_id=None,
                name=template["name"],
                completed_at=iso(clinic.later(sent, 10)) if completed else None,
                email_to_patient_on_completion=True,
                restricted_to_practitioner=False,
                url=f"https://clinic.example.com/forms/{rng.getrandbits(48):012x}",
                content={
                    "sections": [
                        {
                            "name": "About you",
                            "questions": [
                                {"name": q, "type": "text", "required": False}
                                | ({"answer": rng.choice(a)} if completed else {})
                                for q, a in FORM_QUESTIONS
                            ],
                        }
                    ]
                },
            )
        if rng.random() < 0.1:
            plan(
                "patient_attachments",
                clinic.later(joined, 300),
                patient_id=patient["id"],
                user_id=setup["admin"]["id"],
                filename=rng.choice(["mri-report.pdf", "referral.pdf", "xray.jpg"]),
                description=rng.choice(["", "From GP"]),
                content_type="application/pdf",
                size=rng.randint(20_000, 4_000_000),
                processed_at=None,
                processing_completed=True,
                pinned_at=None,
            )
        if rng.random() < 0.05 and len(live) > 1:
            other = rng.choice(live)
            if other["id"] != patient["id"]:
                plan(
                    "relationships",
                    clinic.later(joined, 300),
                    patient_id=patient["id"],
                    related_patient_id=other["id"],
                    **dict(
                        zip(
                            ("relation", "relation_description"), rng.choice(RELATIONS), strict=True
                        )
                    ),
                )
        if rng.random() < 0.4:
            kind, memo = rng.choice([("Email", False), ("SMS", False), ("Phone call", True)])
            plan(
                "communications",
                clinic.later(joined, 500),
                patient_id=patient["id"],
                type=kind,
                type_code=MESSAGE_TYPES.index(kind) + 1,
                category="Memo" if memo else "Appointment Reminder",
                category_code=12 if memo else 6,
                direction_code=2,
                direction_description="Sent",
                confidential=memo and rng.random() < 0.3,
                content="Called about the referral." if memo else "Reminder: tomorrow at 9:00.",
                content_subject="Appointment Reminder" if kind == "Email" else None,
                to=patient.get("email") or "",
                **{"from": "hello@clinic.example.com"},
                attendee_id=None,
                booking_id=None,
                invoice_id=None,
                letter_id=None,
                payment_id=None,
            )
    for name, items in plans.items():
        for serial, record in enumerate(clinic.sorted_add(name, items)):
            roll = rng.random()  # and one of each state in every account, for the tests
            if roll < 0.04 or serial == 1:
                clinic.fate(record, "archived_at")
            elif (roll < 0.06 or serial == 2) and name == "medical_alerts":
                clinic.fate(record, "deleted_at")
