"""Visits: appointments and group classes with their attendees, then invoices and notes."""

from __future__ import annotations

import bisect
from datetime import datetime, timedelta
from typing import Any

from tap_cliniko.sandbox.clinic.configuration import NOTE_ANSWERS
from tap_cliniko.sandbox.clinic.rows import Clinic, Record, first_of, iso, money, parse

SERIES_FIELDS = ("appointment_type_id", "business_id", "practitioner_id", "notes", "telehealth_url")
CANCELLATION = [(10, "Feeling Better"), (30, "Sick"), (40, "Away"), (50, "Other"), (60, "Work")]


def _unit_price(billable: Record | None, product: Record | None) -> float:
    return float(billable["price"] if billable else (product or {})["price_including_tax"])


def _booking(clinic: Clinic, setup: dict[str, Any], when: datetime, group: bool) -> Record:
    """Who, where and what an appointment starting at `when` is."""
    rng = clinic.rng
    types = [t for t in setup["types"] if (t["max_attendees"] > 1) == group]
    kind = rng.choice(types)
    staff = [p for p in setup["practitioners"] if kind["id"] in p["appointment_type_ids"]]
    practitioner = rng.choice(staff or setup["practitioners"])
    business_id = rng.choice(practitioner["business_ids"])
    start = when.replace(minute=rng.choice([0, 15, 30, 45]), second=0)
    return {
        "appointment_type_id": kind["id"],
        "business_id": business_id,
        "practitioner_id": practitioner["id"],
        "starts_at": iso(start),
        "ends_at": iso(start + timedelta(minutes=kind["duration_in_minutes"])),
        "repeat_rule": None,
        "repeated_from_id": None,
        "telehealth_url": None,
        "notes": rng.choice(["", "", "Bring scans.", "Running shoes please."]),
    }


def individual_appointments(
    clinic: Clinic, patients: list[Record], setup: dict[str, Any], scale: float
) -> None:
    """Individual appointments and their attendees: a few per patient, over the years."""
    rng, now = clinic.rng, clinic.now
    # (booked, patient, starts, series, repeat): a weekly series is booked at once.
    planned: list[tuple[datetime, Record, datetime, int, int]] = []
    for patient in patients:
        joined = parse(patient["created_at"])
        count = round(rng.choice([0, 1, 1, 2, 2, 3, 3, 4, 5, 6, 8, 12]) * scale)
        for _ in range(count):
            booked = clinic.later(joined, within_days=900)
            starts = booked + timedelta(
                days=rng.choice([1, 2, 3, 7, 7, 14, 21]), hours=rng.randint(0, 9)
            )
            repeats = rng.choice([3, 4, 6]) if rng.random() < 0.04 else 1
            series = len(planned)
            for repeat in range(repeats):
                later = starts + timedelta(days=7 * repeat)
                if later <= now + timedelta(days=60):
                    planned.append((booked, patient, later, series, repeat))
    heads: dict[int, Record] = {}
    for booked, patient, starts, series, repeat in sorted(planned, key=first_of):
        if repeat:  # the same booking as the series' first, a week later each time
            head = heads[series]
            fields = {k: head[k] for k in SERIES_FIELDS}
            fields.update(
                starts_at=iso(starts),
                ends_at=iso(starts + (parse(head["ends_at"]) - parse(head["starts_at"]))),
                repeated_from_id=head["id"],
            )
        else:
            fields = _booking(clinic, setup, starts, group=False)
        if any(p[3] == series and p[4] for p in planned[series : series + 6]):
            fields["repeat_rule"] = {
                "repeat_type": "Weekly",
                "repeating_interval": 1,
                "number_of_repeats": sum(1 for p in planned[series : series + 6] if p[3] == series),
            }
        past = starts < now
        arrived = past and rng.random() < 0.9
        fields.update(
            patient_id=patient["id"],
            patient_name=patient.get("label") or f"{patient['first_name']} {patient['last_name']}",
            patient_case_id=None,
            did_not_arrive=past and not arrived,
            patient_arrived=arrived,
            email_reminder_sent=True,
            sms_reminder_sent=rng.random() < 0.7,
            has_patient_appointment_notes=False,
            online_booking_policy_accepted=rng.random() < 0.3,
            booking_ip_address=f"10.0.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            invoice_status=None,
            treatment_note_status=None,
            cancellation_reason=None,
            cancellation_reason_description=None,
            cancellation_note=None,
        )
        updated = clinic.later(booked, within_days=max(1.0, (starts - booked).days + 2))
        appointment = clinic.add("individual_appointments", booked, updated=updated, **fields)
        if not repeat:
            heads[series] = appointment
        attendee = clinic.add(
            "attendees",
            booked,
            updated=updated,
            booking_id=appointment["id"],
            patient_id=patient["id"],
            patient_case_id=None,
            arrived=arrived,
            notes="",
            email_reminder_sent=True,
            sms_reminder_sent=fields["sms_reminder_sent"],
            online_booking_policy_accepted=fields["online_booking_policy_accepted"],
            booking_ip_address=fields["booking_ip_address"],
            cancellation_reason=None,
            cancellation_reason_description=None,
            cancellation_note=None,
            cancellation_url=None,
            telehealth_url=None,
            invoice_status=None,
            treatment_note_status=None,
            sent_email_reminders_count=1,
            sent_sms_reminders_count=int(fields["sms_reminder_sent"]),
            sent_email_follow_ups_count=0,
            sent_sms_follow_ups_count=0,
        )
        roll = rng.random()
        if roll < 0.09 and not arrived:
            code, reason = rng.choice(CANCELLATION)
            for row in (appointment, attendee):
                row.update(
                    cancellation_reason=code,
                    cancellation_reason_description=reason,
                    cancellation_note=rng.choice(["", "Called the clinic.", "Online"]),
                    did_not_arrive=False,
                )
                clinic.fate(row, "cancelled_at")
            appointment["patient_arrived"] = False
        elif roll < 0.12:
            for row in (appointment, attendee):
                clinic.fate(row, "archived_at")
        elif roll < 0.15:
            for row in (appointment, attendee):
                clinic.fate(row, "deleted_at")


def group_classes(
    clinic: Clinic, patients: list[Record], setup: dict[str, Any], scale: float
) -> None:
    """Group classes with a handful of attendees each; some attendees cancel."""
    rng, now = clinic.rng, clinic.now
    if not patients:
        return
    count = max(3, round(len(patients) * scale / 12))
    created = [p["created_at"] for p in patients]  # in creation order
    first = parse(created[0])
    plans = []
    for _ in range(count):
        booked = clinic.later(first, within_days=365 * 7)
        plans.append((booked, booked + timedelta(days=rng.randint(3, 20), hours=rng.randint(0, 9))))
    for serial, (booked, starts) in enumerate(sorted(plans, key=first_of)):
        fields = _booking(clinic, setup, starts, group=True)
        kind = next(t for t in setup["types"] if t["id"] == fields["appointment_type_id"])
        joined = patients[: bisect.bisect_right(created, iso(booked))]
        chosen = rng.sample(joined, min(len(joined), rng.randint(2, kind["max_attendees"])))
        group = clinic.add(
            "group_appointments",
            booked,
            max_attendees=kind["max_attendees"],
            patient_ids=[p["id"] for p in chosen],
            **fields,
        )
        roll = rng.random()
        if roll < 0.03 or serial == 1:  # every account has one of each, for the tests
            clinic.fate(group, "archived_at")
        elif roll < 0.06 or serial == 2:
            clinic.fate(group, "deleted_at")
        for patient in chosen:
            arrived = starts < now and rng.random() < 0.88
            attendee = clinic.add(
                "attendees",
                booked + timedelta(minutes=rng.randint(0, 600)),
                booking_id=group["id"],
                patient_id=patient["id"],
                patient_case_id=None,
                arrived=arrived,
                notes="",
                email_reminder_sent=True,
                sms_reminder_sent=False,
                online_booking_policy_accepted=False,
                booking_ip_address=None,
                cancellation_reason=None,
                cancellation_reason_description=None,
                cancellation_note=None,
                cancellation_url=None,
                telehealth_url=None,
                invoice_status=None,
                treatment_note_status=None,
                sent_email_reminders_count=1,
                sent_sms_reminders_count=0,
                sent_email_follow_ups_count=0,
                sent_sms_follow_ups_count=0,
            )
            for marker in ("archived_at", "deleted_at"):
                if group[marker]:
                    attendee[marker] = group[marker]
            if not arrived and not group["deleted_at"] and rng.random() < 0.5:
                code, reason = rng.choice(CANCELLATION)
                attendee.update(cancellation_reason=code, cancellation_reason_description=reason)
                clinic.fate(attendee, "cancelled_at")


def invoices_and_notes(clinic: Clinic, setup: dict[str, Any]) -> None:
    """An invoice (with items) and usually a treatment note for each attended visit."""
    rng, now = clinic.rng, clinic.now
    appointments = {
        a["id"]: a
        for name in ("individual_appointments", "group_appointments")
        for a in clinic.rows.get(name, [])
    }
    price = {b["id"]: b for b in setup["billable"]}
    by_type = {t["id"]: t for t in setup["types"]}
    invoices, notes = [], []
    for attendee in clinic.rows.get("attendees", []):
        if not attendee["arrived"] or attendee["cancelled_at"]:
            continue
        booking = appointments[attendee["booking_id"]]
        ended = parse(booking["ends_at"])
        if ended > now:
            continue
        if rng.random() < 0.88:
            invoices.append((ended + timedelta(minutes=rng.randint(1, 90)), (attendee, booking)))
        if rng.random() < 0.75:
            notes.append((ended + timedelta(minutes=rng.randint(5, 2000)), (attendee, booking)))
    for number, (issued, (attendee, booking)) in enumerate(sorted(invoices, key=first_of), 1):
        kind = by_type[booking["appointment_type_id"]]
        item = price[kind["billable_item_id"]]
        lines: list[tuple[Record | None, Record | None, int]] = [(item, None, 1)]
        if rng.random() < 0.15:
            lines.append((None, rng.choice(setup["products"]), rng.randint(1, 2)))
        total = sum(_unit_price(i, p) * q for i, p, q in lines)
        status, label = rng.choices(
            [(20, "Paid"), (10, "Open"), (30, "Closed"), (40, "Open credit")], [80, 14, 4, 2]
        )[0]
        invoice = clinic.add(
            "invoices",
            issued,
            number=number,
            issue_date=iso(issued)[:10],
            status=status,
            status_description=label,
            closed_at=iso(clinic.later(issued, 30)) if status == 30 else None,
            patient_id=attendee["patient_id"],
            practitioner_id=booking["practitioner_id"],
            business_id=booking["business_id"],
            appointment_id=booking["id"],
            attendee_id=attendee["id"],
            original_invoice_id=None,
            signature_id=None,
            calculation_method=3,
            calculation_method_description="Tax inclusive",
            invoice_to="",
            notes="",
            patient_extra_information="",
            online_payment_url=None,
            net_amount=money(total / 1.1 if len(lines) > 1 else total),
            tax_amount=money(total - total / 1.1 if len(lines) > 1 else 0),
            discounted_amount="0.00",
            total_amount=money(total),
        )
        for billable, product, quantity in lines:
            unit = _unit_price(billable, product)
            source: Record = billable or product or {}
            clinic.add(
                "invoice_items",
                issued,
                updated=parse(invoice["updated_at"]),
                invoice_id=invoice["id"],
                billable_item_id=billable["id"] if billable else None,
                product_id=product["id"] if product else None,
                source_item_id=source["id"],
                name=source["name"],
                code=source["item_code"],
                quantity=f"{quantity}.0",
                unit_price=money(unit),
                net_price=money(unit * quantity),
                discount_percentage="0.0",
                discounted_amount="0.00",
                is_monetary_discount=False,
                concession_type_name=None,
                tax_name="GST" if product else "No tax",
                tax_rate="10.0" if product else "0.0",
                tax_amount=money(unit * quantity / 11 if product else 0),
                total_including_tax=round(unit * quantity, 2),
            )
        attendee["invoice_status"] = 20 if status == 20 else 10
        roll = rng.random()
        if roll < 0.02:
            clinic.fate(invoice, "deleted_at")
        elif roll < 0.03:
            clinic.fate(invoice, "archived_at")
        for line in clinic.rows["invoice_items"][-len(lines) :]:
            for marker in ("deleted_at", "archived_at"):
                line[marker] = invoice[marker]
    for written, (attendee, booking) in sorted(notes, key=lambda n: n[0]):
        practitioner = next(
            p for p in setup["practitioners"] if p["id"] == booking["practitioner_id"]
        )
        draft = rng.random() < 0.08
        note = clinic.add(
            "treatment_notes",
            written,
            title="SOAP note",
            author_name=practitioner["label"],
            draft=draft,
            finalized_at=None if draft else iso(written),
            pinned_at=None,
            patient_id=attendee["patient_id"],
            practitioner_id=practitioner["id"],
            attendee_id=attendee["id"],
            booking_id=booking["id"],
            treatment_note_template_id=setup["note_templates"][0]["id"],
            content={
                "sections": [
                    {
                        "name": section,
                        "questions": [
                            {"name": section, "type": "paragraph", "answer": rng.choice(answers)}
                        ],
                    }
                    for section, answers in NOTE_ANSWERS.items()
                ]
            },
        )
        attendee["treatment_note_status"] = 10 if draft else 90
        roll = rng.random()
        if roll < 0.02:
            clinic.fate(note, "archived_at")
        elif roll < 0.03:
            clinic.fate(note, "deleted_at")
