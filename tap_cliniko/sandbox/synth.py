"""Synthetic patients, deterministic for a seed: varied, realistic, and nobody real."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

FIRST_NAMES = [
    "Peter",
    "José",
    "Zoë",
    "Łukasz",
    "Aroha",
    "Mei",
    "Siobhán",
    "Nguyễn Văn",
    "Amélie",
    "Oluwaseun",
    "Björn",
    "Priya",
    "Chloé",
    "Mohammed",
    "Ana-María",
    "Kai",
    "Saoirse",
    "Dmitrij",
    "Hana",
    "Tomasz",
    "Wiremu",
    "Leilani",
    "Renée",
    "Jürgen",
    "Fatima",
    "李",
]
LAST_NAMES = [
    "Patientman",
    "O'Brien",
    "García Márquez",
    "Nowak",
    "Ngata",
    "Zhang",
    "Müller",
    "Smith-Jones",
    "Nguyễn",
    "Okonkwo",
    "Lindqvist",
    "Patel",
    "Dubois",
    "Al-Sayed",
    "Kowalczyk",
    "Tanaka",
    "Ó Briain",
    "Ivanova",
    "Sørensen",
    "van der Berg",
    "王",
]
STREETS = ["Smith Street", "Rue de l'Église", "Königstraße", "Ōtaki Road", "Main Road"]
CITIES = [
    ("Melbourne", "Victoria", "3000", "Australia", "AU", "Australia/Melbourne"),
    ("Auckland", "Auckland", "1010", "New Zealand", "NZ", "Pacific/Auckland"),
    ("London", "", "SW1A 1AA", "United Kingdom", "GB", "Europe/London"),
    ("Toronto", "Ontario", "M5H 2N2", "Canada", "CA", "America/Toronto"),
    ("Brisbane", "Queensland", "4000", "Australia", "AU", "Australia/Brisbane"),
]
PHONE_TYPES = ["Mobile", "Home", "Work", "Fax", "Other"]
REMINDER_TYPES = ["SMS", "Email", "SMS & Email", "None"]
PRONOUNS = [
    None,
    {
        "accusative": "her",
        "nominative": "she",
        "predicative_possessive": "hers",
        "pronominal_possessive": "her",
        "reflexive": "herself",
    },
    {
        "accusative": "them",
        "nominative": "they",
        "predicative_possessive": "theirs",
        "pronominal_possessive": "their",
        "reflexive": "themselves",
    },
]
NOTE_LINES = [
    "Prefers morning appointments.",
    "Allergic to latex — use nitrile gloves.",
    "Referred by GP after knee reconstruction (ACL), week 6 protocol.",
    "Interpreter: Vietnamese. Tiếng Việt.",
    "Follow-up every 3 weeks; review home exercise program.",
]
YEARS_OF_HISTORY = 6


# Patient 1 is the example patient of Cliniko's own Patients page, field for field, so that
# the older shape's responses (and the cassettes recorded from them) hold the documented one.
DOCUMENTED_PATIENT: dict[str, Any] = {
    "accepted_privacy_policy": True,
    "accepted_sms_marketing": False,
    "address_1": "1 Smith Street",
    "address_2": "",
    "address_3": "",
    "city": "Melbourne",
    "country": "Australia",
    "created_at": "2013-03-26T14:00:00Z",
    "date_of_birth": "2001-05-26",
    "email": "peter@example.com",
    "emergency_contact": "",
    "first_name": "Peter",
    "invoice_default_to": "Super Insurance",
    "invoice_email": "super.insurance@example.com",
    "invoice_extra_information": "Insurance #123456\r\nClaim #123456",
    "gender": "Male",
    "gender_identity": "Transgender",
    "last_name": "Patientman",
    "label": "Peter Patientman",
    "medicare": "",
    "medicare_reference_number": "",
    "notes": "",
    "appointment_notes": "",
    "occupation": "",
    "old_reference_id": "",
    "post_code": "3000",
    "receives_confirmation_emails": True,
    "referral_source": "",
    "reminder_type": "SMS & Email",
    "sex": "Female to Male",
    "state": "Victoria",
    "title": "Mr",
    "updated_at": "2013-03-26T14:00:00Z",
    "patient_phone_numbers": [
        {"phone_type": "Mobile", "number": "61444444444"},
        {"phone_type": "Home", "number": "61399999999"},
    ],
}


def iso(moment: datetime) -> str:
    """A UTC moment as Cliniko writes it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _notes(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.35:
        return ""
    if kind < 0.40:
        return "\n".join(rng.choice(NOTE_LINES) for _ in range(120))  # several KB
    return " ".join(rng.sample(NOTE_LINES, rng.randint(1, 3)))


def _custom_fields(rng: random.Random) -> dict[str, Any] | None:
    if rng.random() < 0.3:
        return None
    token = uuid.UUID(int=rng.getrandbits(128))
    return {
        "sections": [
            {
                "name": "Intake",
                "token": str(token),
                "archived": False,
                "fields": [
                    {
                        "name": "Injury date",
                        "token": str(uuid.UUID(int=rng.getrandbits(128))),
                        "type": "date",
                        "archived": False,
                        "value": f"20{rng.randint(10, 24)}-0{rng.randint(1, 9)}-15",
                    },
                    {
                        "name": "Goals",
                        "token": str(uuid.UUID(int=rng.getrandbits(128))),
                        "type": "paragraph",
                        "archived": False,
                        "value": rng.choice(["Run 10 km", "Sleep without pain", "Garden again"]),
                    },
                ],
            }
        ]
    }


def patient_fields(rng: random.Random, serial: int) -> dict[str, Any]:
    """Everything about a patient except identity and timestamps."""
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    city, state, post_code, country, country_code, time_zone = rng.choice(CITIES)
    blank = rng.random() < 0.15
    phones = [
        {"phone_type": rng.choice(PHONE_TYPES), "number": f"61{rng.randint(400000000, 499999999)}"}
        for _ in range(rng.choice([0, 1, 1, 2, 3]))
    ]
    return {
        "first_name": first,
        "last_name": last,
        "preferred_first_name": rng.choice([None, None, first.split()[0][:3]]),
        "label": f"{first} {last}",
        "title": rng.choice(["", "Mr", "Ms", "Mx", "Dr"]),
        "email": None if blank else f"patient{serial}@example.com",
        "date_of_birth": None
        if blank
        else f"{rng.randint(1930, 2020)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "address_1": f"{rng.randint(1, 300)} {rng.choice(STREETS)}",
        "address_2": rng.choice(["", "", "Unit 4"]),
        "address_3": "",
        "city": city,
        "state": state,
        "post_code": post_code,
        "country": country,
        "country_code": country_code,
        "time_zone": time_zone,
        "patient_phone_numbers": phones,
        "notes": _notes(rng),
        "appointment_notes": rng.choice(["", "Go for fist bumps over handshakes."]),
        "emergency_contact": rng.choice(["", "Partner 0400 000 000"]),
        "occupation": rng.choice(["", "Nurse", "Carpenter", "Student", "Retired"]),
        "old_reference_id": rng.choice(["", f"REF-{serial:05d}"]),
        "referral_source": rng.choice(["", "Google", "Friend", "GP"]),
        "reminder_type": rng.choice(REMINDER_TYPES),
        "sex": rng.choice(["Female", "Male", "Intersex", ""]),
        "gender": rng.choice(["Female", "Male", ""]),
        "gender_identity": rng.choice(["Woman", "Man", "Non-binary", ""]),
        "pronouns": rng.choice(PRONOUNS),
        "medicare": rng.choice(["", f"{rng.randint(2000000000, 6999999999)}"]),
        "medicare_reference_number": rng.choice(["", "1", "2"]),
        "dva_card_number": rng.choice([None, None, "NX123456"]),
        "invoice_default_to": rng.choice(["", "Super Insurance"]),
        "invoice_email": rng.choice([None, "claims@insurer.example.com"]),
        "invoice_extra_information": rng.choice(["", "Insurance #123456\r\nClaim #123456"]),
        "accepted_privacy_policy": rng.choice([True, True, False, None]),
        "accepted_sms_marketing": rng.choice([True, False]),
        "accepted_email_marketing": rng.choice([True, False, None]),
        "receives_confirmation_emails": rng.choice([True, False]),
        "receives_cancellation_emails": rng.choice([True, False]),
        "custom_fields": _custom_fields(rng),
        "merged_at": None,
    }


def synthetic_patients(count: int, seed: int, now: datetime) -> list[dict[str, Any]]:
    """Patients in creation order with created/updated/archived/deleted moments before now.

    Creation times spread over years, with bursts sharing one second (imports); about one in
    ten is archived and one in twenty deleted.
    """
    rng = random.Random(seed)
    start = now - timedelta(days=365 * YEARS_OF_HISTORY)
    span = (now - start).total_seconds() - 86400
    moments: list[datetime] = []
    while len(moments) < count:
        moment = start + timedelta(seconds=int(rng.random() * span))
        burst = rng.choice([1, 1, 1, 1, 2, 3, 5, 40, 250]) if rng.random() < 0.2 else 1
        moments.extend([moment] * min(burst, count - len(moments)))
    moments.sort()
    patients = []
    for serial, created in enumerate(moments, 1):
        updated = created + timedelta(seconds=int(rng.random() * (now - created).total_seconds()))
        patient = patient_fields(rng, serial)
        patient["created_at"] = iso(created)
        patient["updated_at"] = iso(updated)
        patient["archived_at"] = None
        patient["deleted_at"] = None
        fate = rng.random()
        if fate < 0.10:
            patient["archived_at"] = patient["updated_at"]
        elif fate < 0.15:
            patient["deleted_at"] = patient["updated_at"]
        patients.append(patient)
    if patients:  # active, as in the example
        patients[0].update(DOCUMENTED_PATIENT, archived_at=None, deleted_at=None)
    return patients
