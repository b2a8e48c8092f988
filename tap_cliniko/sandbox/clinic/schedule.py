"""The practitioners' time: weekly rosters, extra availability, leave, breaks; stock counts."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tap_cliniko.sandbox.clinic.rows import Clinic, iso, parse


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
