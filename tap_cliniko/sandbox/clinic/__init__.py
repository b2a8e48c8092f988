"""A synthetic clinic around the synthetic patients: deterministic for a seed, nobody real.

Businesses, practitioners and the price list are set up early in the account's history; every
patient then books appointments (some cancelled, some did-not-arrive, some archived, some
deleted), attends them alone or in group classes, gets invoiced, and has notes written. Rows
are mostly made in creation order, so ids mostly grow with created_at, as on real accounts.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tap_cliniko.sandbox.clinic.configuration import set_up
from tap_cliniko.sandbox.clinic.records import patient_records
from tap_cliniko.sandbox.clinic.rows import Clinic, NewId, Record, iso, parse
from tap_cliniko.sandbox.clinic.visits import (
    group_classes,
    individual_appointments,
    invoices_and_notes,
)


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
