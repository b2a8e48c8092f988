"""The account's set-up: businesses, staff, the price list, templates and forms (first weeks)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tap_cliniko.sandbox.clinic.rows import Clinic, money, parse
from tap_cliniko.sandbox.synth import FIRST_NAMES, LAST_NAMES

BUSINESSES = [
    ("Fitzroy Physio", "Melbourne", "Victoria", "3065", "Australia", "AU", "Australia/Melbourne"),
    ("Ponsonby Health", "Auckland", "Auckland", "1011", "New Zealand", "NZ", "Pacific/Auckland"),
    ("Northside Clinic", "Brisbane", "Queensland", "4000", "Australia", "AU", "Australia/Brisbane"),
]
# name, category, minutes, price, group size (1: individual)
APPOINTMENT_TYPES = [
    ("Initial consultation", "Physiotherapy", 60, "120.00", 1),
    ("Standard consultation", "Physiotherapy", 30, "85.00", 1),
    ("Extended consultation", "Physiotherapy", 45, "105.00", 1),
    ("Telehealth review", "Physiotherapy", 30, "75.00", 1),
    ("Remedial massage", "Massage", 60, "110.00", 1),
    ("Clinical pilates class", "Classes", 55, "35.00", 8),
    ("Hydrotherapy group", "Classes", 45, "30.00", 6),
    ("Dry needling (retired)", "Physiotherapy", 30, "80.00", 1),
]
PRODUCTS = [
    ("Rigid sports tape", "12.50"),
    ("Foam roller", "39.00"),
    ("Resistance band", "18.00"),
    ("Heat pack", "24.00"),
    ("Posture brace", "65.00"),
    ("Massage ball", "9.50"),
]
DESIGNATIONS = [
    "Physiotherapist",
    "Senior Physiotherapist",
    "Massage Therapist",
    "Exercise Physiologist",
]
BLOCK_TYPES = [("Lunch", 30), ("Leave", 480), ("Meeting", 60)]
REFERRAL_TYPES = ["Google", "Friend or family", "GP referral", "Instagram", "Walked past"]
FORM_QUESTIONS = [
    ("Where is your pain?", ["Lower back", "Left knee", "Right shoulder", "Neck"]),
    ("How long have you had it?", ["A week", "About a month", "Over a year"]),
    ("Pain today (0-10)?", ["2", "4", "6", "7"]),
]
NOTE_ANSWERS = {
    "Subjective": [
        "<p>Reports less pain climbing stairs; sleeping through the night.</p>",
        "<p>Aggravated after a long drive. Morning stiffness 30 min.</p>",
        "<p>Returned to running 3 km without symptoms.</p>",
    ],
    "Objective": [
        "<p>Knee flexion 0-125°, quads lag resolved.</p>",
        "<p>Lumbar flexion limited to mid-shin, painful arc at 60°.</p>",
        "<p>Shoulder abduction 160°, ER strength 4+/5.</p>",
    ],
    "Assessment": [
        "<p>Improving as expected; week 6 of the ACL protocol.</p>",
        "<p>Mechanical low back pain, no red flags.</p>",
    ],
    "Plan": [
        "<p>Progress home exercises; review in 2 weeks.</p>",
        "<p>Dry needling and taping; review in 1 week.</p>",
    ],
}


def set_up(clinic: Clinic, opened: datetime) -> dict[str, Any]:
    """Businesses, staff, the price list and the forms: the first weeks of the account."""
    rng = clinic.rng

    def day(n: float) -> datetime:
        return opened + timedelta(days=n, seconds=rng.randint(0, 36000))

    taxes = [
        clinic.add("taxes", day(0), name="GST", rate="10.0", amount="10.0"),
        clinic.add("taxes", day(0), name="No tax", rate="0.0", amount="0.0"),
    ]
    admin = clinic.add(
        "users",
        day(0),
        first_name="Practice",
        last_name="Manager",
        title="",
        email="manager@clinic.example.com",
        role="administrator",
        active=True,
        user_active=True,
        time_zone="Melbourne",
        time_zone_identifier="Australia/Melbourne",
        phone_numbers=[{"phone_type": "Work", "number": "61390000000"}],
    )
    suppliers = [
        clinic.add("product_suppliers", day(1), name=name)
        for name in ("Allied Health Supplies", "Physio Direct")
    ]
    products = []
    for index, (name, price) in enumerate(PRODUCTS):
        supplier = suppliers[index % 2]
        products.append(
            clinic.add(
                "products",
                day(2 + index / 10),
                name=name,
                item_code=f"P{100 + index}",
                price_ex_tax=price,
                price_including_tax=money(float(price) * 1.1),
                cost_price=money(float(price) * 0.45),
                stock_level=str(rng.randint(0, 40)),
                serial_number=None,
                notes="",
                tax_id=taxes[0]["id"],
                product_supplier_id=supplier["id"],
                product_supplier_name=supplier["name"],
            )
        )
    clinic.fate(products[-1], "archived_at")
    billable = []
    for index, (name, _, _, price, _) in enumerate(APPOINTMENT_TYPES):
        billable.append(
            clinic.add(
                "billable_items",
                day(3 + index / 10),
                name=name,
                item_code=f"B{200 + index}",
                item_type="Service",
                price=price,
                tax_id=taxes[1]["id"],
            )
        )
    billable.append(
        clinic.add(
            "billable_items",
            day(3.9),
            name="Cancellation fee",
            item_code="B299",
            item_type="Other",
            price="40.00",
            tax_id=taxes[1]["id"],
        )
    )
    clinic.fate(billable[7], "archived_at")
    concessions = [
        clinic.add("concession_types", day(4), name=name) for name in ("Pensioner", "Student")
    ]
    for item in billable[:5]:
        for concession in concessions:
            clinic.add(
                "concession_prices",
                day(4.5),
                billable_item_id=item["id"],
                concession_type_id=concession["id"],
                price=money(float(item["price"]) * 0.8),
            )
    note_templates = [
        clinic.add(
            "treatment_note_templates",
            day(5 + index),
            name=name,
            content={
                "sections": [
                    {"name": s, "questions": [{"name": s, "type": "paragraph"}]}
                    for s in NOTE_ANSWERS
                ]
            },
            print_settings={"include_patient_address": index == 0, "title": name},
        )
        for index, name in enumerate(("SOAP note", "Initial assessment", "Old template"))
    ]
    clinic.fate(note_templates[-1], "deleted_at")
    types = []
    for index, (name, category, minutes, _, size) in enumerate(APPOINTMENT_TYPES):
        types.append(
            clinic.add(
                "appointment_types",
                day(6 + index / 10),
                name=name,
                category=category,
                color=f"#{rng.randrange(0x1000000):06x}",
                description="",
                duration_in_minutes=minutes,
                max_attendees=size,
                show_in_online_bookings=size == 1,
                online_payments_enabled=False,
                online_payments_mode="optional",
                online_bookings_lead_time_hours=2,
                deposit_price=None,
                add_deposit_to_account_credit=False,
                telehealth_enabled=name.startswith("Telehealth"),
                billable_item_id=billable[index]["id"],
                product_id=None,
                treatment_note_template_id=note_templates[index == 0]["id"],
                appointment_confirmation_template_ids=[],
                appointment_follow_up_template_ids=[],
                appointment_reminder_template_ids=[],
            )
        )
    clinic.fate(types[-1], "archived_at")
    for kind, item in zip(types, billable, strict=False):
        clinic.add(
            "appointment_type_billable_items",
            day(7),
            appointment_type_id=kind["id"],
            billable_item_id=item["id"],
            quantity="1.0",
            discount_percentage="0.0",
            discounted_amount="0.0",
            is_monetary_discount=False,
        )
    for kind, product in ((types[0], products[0]), (types[4], products[5])):
        clinic.add(
            "appointment_type_products",
            day(7),
            appointment_type_id=kind["id"],
            product_id=product["id"],
            quantity="1.0",
            discount_percentage="0.0",
            discounted_amount="0.0",
            is_monetary_discount=False,
        )
    offered = [t["id"] for t in types[:-1]]
    businesses = []
    for index, (name, city, state, post_code, country, code, zone) in enumerate(BUSINESSES):
        businesses.append(
            clinic.add(
                "businesses",
                day(8 + index * 200),
                business_name=name,
                display_name=name,
                label=name,
                address_1=f"{rng.randint(1, 300)} High Street",
                address_2="",
                city=city,
                state=state,
                post_code=post_code,
                country=country,
                country_code=code,
                time_zone=zone.split("/")[1],
                time_zone_identifier=zone,
                contact_information="(03) 9000 0000",
                email_reply_to=f"hello{index}@clinic.example.com",
                website_address="https://clinic.example.com",
                additional_information="",
                additional_invoice_information="ABN 00 000 000 000",
                business_registration_name="ABN",
                business_registration_value="00 000 000 000",
                appointment_reminders_enabled=True,
                show_in_online_bookings=True,
                appointment_type_ids=offered if index == 0 else offered[: 4 + index],
            )
        )
    practitioners = []
    for index in range(7):
        first, last = (
            FIRST_NAMES[(index * 7 + 3) % len(FIRST_NAMES)],
            LAST_NAMES[(index * 5 + 2) % len(LAST_NAMES)],
        )
        hired = day(9 + index * 150)
        user = clinic.add(
            "users",
            hired,
            first_name=first,
            last_name=last,
            title="",
            email=f"practitioner{index + 1}@clinic.example.com",
            role="practitioner",
            active=index < 5,
            user_active=index < 5,
            time_zone="Melbourne",
            time_zone_identifier="Australia/Melbourne",
            phone_numbers=[],
        )
        at = [b["id"] for b in businesses if rng.random() < 0.6] or [businesses[0]["id"]]
        kinds = sorted(rng.sample(offered, rng.randint(3, len(offered))), key=offered.index)
        practitioners.append(
            clinic.add(
                "practitioners",
                hired,
                first_name=first,
                last_name=last,
                title="",
                display_name=f"{first} {last}",
                label=f"{first} {last}",
                designation=DESIGNATIONS[index % len(DESIGNATIONS)],
                description="",
                active=index < 5,
                show_in_online_bookings=index < 5,
                user_id=user["id"],
                default_appointment_type_id=kinds[0],
                business_ids=at,
                appointment_type_ids=kinds,
            )
        )
    for practitioner in practitioners:
        for business_id in practitioner["business_ids"]:
            clinic.add(
                "practitioner_reference_numbers",
                parse(practitioner["created_at"]) + timedelta(days=1),
                practitioner_id=practitioner["id"],
                business_id=business_id,
                name="Provider number",
                reference_number=f"{rng.randint(1000000, 9999999)}X",
            )
    block_types = [
        clinic.add(
            "unavailable_block_types",
            day(10),
            name=name,
            duration_in_minutes=minutes,
            color="#cccccc",
            system_controlled=False,
        )
        for name, minutes in BLOCK_TYPES
    ]
    source_types = [
        clinic.add(
            "referral_source_types",
            day(11),
            name=name,
            referrer_type="Patient" if name == "Friend or family" else None,
            subcategories=[],
        )
        for name in REFERRAL_TYPES
    ]
    contacts = []
    for index in range(12):
        doctor = index < 8
        contacts.append(
            clinic.add(
                "contacts",
                day(12 + index * 90),
                first_name=FIRST_NAMES[(index * 3) % len(FIRST_NAMES)],
                last_name=LAST_NAMES[(index * 11) % len(LAST_NAMES)],
                preferred_name=None,
                title="Dr" if doctor else "",
                company_name="Medical Centre" if doctor else "Super Insurance",
                occupation="General Practitioner" if doctor else "Claims officer",
                doctor_type=rng.choice(["general_practitioner", "specialist"]) if doctor else None,
                provider_number=f"{rng.randint(100000, 999999)}A" if doctor else None,
                type="Doctor" if doctor else "3rd Party Payer",
                type_code=1 if doctor else 2,
                email=f"contact{index}@example.com",
                phone_numbers=[{"phone_type": "Work", "number": "61398765432"}],
                address_1="1 Collins Street",
                address_2="",
                address_3="",
                city="Melbourne",
                state="Victoria",
                post_code="3000",
                country="Australia",
                country_code="AU",
                notes="",
            )
        )
    form_templates = [
        clinic.add(
            "patient_form_templates",
            day(13),
            name=name,
            content={
                "sections": [
                    {
                        "name": "About you",
                        "questions": [{"name": q, "type": "text"} for q, _ in FORM_QUESTIONS],
                    }
                ]
            },
            email_to_patient_on_completion=True,
            restricted_to_practitioner=False,
        )
        for name in ("New patient intake", "Consent to treatment")
    ]
    return {
        "admin": admin,
        "businesses": businesses,
        "practitioners": practitioners,
        "types": types,
        "billable": billable,
        "products": products,
        "block_types": block_types,
        "source_types": source_types,
        "contacts": contacts,
        "form_templates": form_templates,
        "note_templates": note_templates,
        "users": clinic.rows["users"],
    }
