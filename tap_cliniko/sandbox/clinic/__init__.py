"""A synthetic clinic around the synthetic patients: deterministic for a seed, nobody real.

Businesses, practitioners and the price list are set up early in the account's history; every
patient then books appointments (some cancelled, some did-not-arrive, some archived, some
deleted), attends them alone or in group classes, gets invoiced, and has notes written. Rows
are mostly made in creation order, so ids mostly grow with created_at, as on real accounts.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tap_cliniko.sandbox.clinic.configuration import FORM_QUESTIONS, set_up
from tap_cliniko.sandbox.clinic.rows import Clinic, NewId, Record, iso, parse
from tap_cliniko.sandbox.clinic.visits import (
    group_classes,
    individual_appointments,
    invoices_and_notes,
)

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


def synthetic_clinic(
    patients: list[Record], seed: int, now: datetime, scale: float, new_id: NewId
) -> dict[str, list[Record]]:
    """Every collection but patients, for these patients (rows per collection, in id order)."""
    clinic = Clinic(seed, now, new_id)
    rng = clinic.rng
    opened = now - timedelta(days=365 * 6 + 30)
    setup = set_up(clinic, opened)
    live = [p for p in patients if not p.get("deleted_at")]
    individual_appointments(clinic, patients, setup, scale)
    group_classes(clinic, live, setup, scale)
    invoices_and_notes(clinic, setup)
    patient_records(clinic, patients, setup)
    schedule(clinic, setup, scale)
    # Some configuration retires late in the account's life.
    clinic.fate(rng.choice(clinic.rows["contacts"]), "archived_at")
    return clinic.rows


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


def schedule(clinic: Clinic, setup: dict[str, Any], scale: float) -> None:
    """Rosters, extra availability, leave and breaks; stock counts."""
    rng = clinic.rng
    for practitioner in setup["practitioners"]:
        hired = parse(practitioner["created_at"])
        for business_id in practitioner["business_ids"]:
            for weekday in sorted(rng.sample(range(1, 6), rng.randint(2, 5))):
                clinic.add(
                    "daily_availabilities",
                    hired + timedelta(hours=1),
                    practitioner_id=practitioner["id"],
                    business_id=business_id,
                    day_of_week=weekday,
                    time_zone="Melbourne",
                    time_zone_identifier="Australia/Melbourne",
                    availabilities=[
                        {"starts_at": "08:00", "ends_at": "12:00"},
                        {"starts_at": "13:00", "ends_at": "17:00"},
                    ],
                )
    blocks = []
    for _ in range(max(2, round(len(setup["practitioners"]) * 6 * scale))):
        practitioner = rng.choice(setup["practitioners"])
        created = clinic.later(parse(practitioner["created_at"]), 365 * 6)
        starts = (created + timedelta(days=rng.randint(1, 30))).replace(minute=0, second=0)
        kind = rng.choice(setup["block_types"])
        blocks.append(
            (
                created,
                {
                    "practitioner_id": practitioner["id"],
                    "business_id": rng.choice(practitioner["business_ids"]),
                    "unavailable_block_type_id": kind["id"],
                    "starts_at": iso(starts),
                    "ends_at": iso(starts + timedelta(minutes=kind["duration_in_minutes"])),
                    "notes": "",
                    "repeat_rule": None,
                    "repeated_from_id": None,
                },
            )
        )
    for block in clinic.sorted_add("unavailable_blocks", blocks):
        roll = rng.random()
        if roll < 0.05:
            clinic.fate(block, "archived_at")
        elif roll < 0.1:
            clinic.fate(block, "deleted_at")
    extra = []
    for practitioner in setup["practitioners"][:4]:
        created = clinic.later(parse(practitioner["created_at"]), 365)
        starts = (created + timedelta(days=7)).replace(hour=18, minute=0, second=0)
        extra.append(
            (
                created,
                {
                    "practitioner_id": practitioner["id"],
                    "business_id": practitioner["business_ids"][0],
                    "starts_at": iso(starts),
                    "ends_at": iso(starts + timedelta(hours=2)),
                    "repeat_rule": {
                        "repeat_type": "Weekly",
                        "repeating_interval": 1,
                        "number_of_repeats": 4,
                    },
                },
            )
        )
    clinic.sorted_add("availability_blocks", extra)
    adjustments = []
    for product in setup["products"]:
        for _ in range(2):
            adjustments.append(
                (
                    clinic.later(parse(product["created_at"]), 365 * 6),
                    {
                        "product_id": product["id"],
                        "user_id": setup["admin"]["id"],
                        "adjustment_type": rng.choice(["Stock Purchase", "Returned", "Damaged"]),
                        "quantity": str(rng.randint(1, 20)),
                        "comment": "",
                        "notes": "",
                    },
                )
            )
    clinic.sorted_add("stock_adjustments", adjustments)
