"""A synthetic clinic around the synthetic patients: deterministic for a seed, nobody real.

Businesses, practitioners and the price list are set up early in the account's history; every
patient then books appointments (some cancelled, some did-not-arrive, some archived, some
deleted), attends them alone or in group classes, gets invoiced, and has notes written. Rows
are mostly made in creation order, so ids mostly grow with created_at, as on real accounts.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from tap_cliniko.sandbox.clinic.configuration import set_up
from tap_cliniko.sandbox.clinic.records import patient_records
from tap_cliniko.sandbox.clinic.rows import Clinic, NewId, Record
from tap_cliniko.sandbox.clinic.schedule import schedule
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
