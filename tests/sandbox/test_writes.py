"""Writes to appointments, attendees and invoices through the API, and the Store's own methods."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tap_cliniko.sandbox import SandboxServer
from tests.sandbox.conftest import Client

BAD_SORT = {"message": "Sort parameter must be a valid column name"}


def first_id(client: Client, name: str) -> str:
    return str(client.get(f"/{name}").json()[name][0]["id"])


def booking_fields(client: Client) -> dict[str, str]:
    practitioner = client.get("/practitioners").json()["practitioners"][0]
    kind = client.get(f"/practitioners/{practitioner['id']}/appointment_types").json()
    business = client.get("/businesses").json()["businesses"][0]
    return {
        "patient_id": first_id(client, "patients"),
        "practitioner_id": practitioner["id"],
        "appointment_type_id": kind["appointment_types"][0]["id"],
        "business_id": business["id"],
        "starts_at": "2031-03-04T09:00:00Z",
    }


def listed(client: Client, name: str, row_id: str, *filters: str, route: str = "") -> bool:
    rows = client.get(f"/{name}{route}", **{"q[]": [f"id:={row_id}", *filters]}).json()[name]
    return bool(rows)


def test_appointment_lifecycle_through_the_api(start: Any) -> None:
    server, client = start(patients=40, seed=41)
    missing = client.send("POST", "/individual_appointments", {"patient_id": "1"})
    assert missing.status_code == 422 and "starts_at" in missing.json()["errors"]
    created = client.send("POST", "/individual_appointments", booking_fields(client))
    assert created.status_code == 201, created.text
    appointment = created.json()
    row_id = appointment["id"]
    assert created.headers["Location"].endswith(f"/individual_appointments/{row_id}")
    assert appointment["ends_at"] > appointment["starts_at"]
    assert appointment["patient"]["links"]["self"].endswith(booking_fields(client)["patient_id"])
    attendees = client.get("/attendees", **{"q[]": f"booking_id:={row_id}"}).json()["attendees"]
    assert len(attendees) == 1, "an individual appointment comes with its attendee"
    assert listed(client, "individual_appointments", row_id)
    assert listed(client, "bookings", row_id)

    time.sleep(1.05)  # updated_at has one-second resolution
    updated = client.send("PATCH", f"/individual_appointments/{row_id}", {"notes": "Moved"})
    assert updated.status_code == 200 and updated.json()["notes"] == "Moved"
    assert updated.json()["updated_at"] > appointment["updated_at"]
    bad = client.send("PATCH", f"/individual_appointments/{row_id}", {"starts_at": "soon"})
    assert bad.status_code == 422

    time.sleep(1.05)
    cancelled = client.send(
        "PATCH", f"/individual_appointments/{row_id}/cancel", {"cancellation_reason": 30}
    )
    assert cancelled.status_code == 200
    body = cancelled.json()
    assert body["cancelled_at"] and body["cancellation_reason_description"] == "Sick"
    assert body["updated_at"] > updated.json()["updated_at"]
    assert not listed(client, "individual_appointments", row_id)
    assert listed(client, "individual_appointments", row_id, "cancelled_at:*")
    assert listed(client, "individual_appointments", row_id, route="/cancelled")
    attendee = attendees[0]["id"]
    assert listed(client, "attendees", attendee, "cancelled_at:?"), "its attendee cancels too"
    assert server.store.snapshot("individual_appointments")[row_id]["status"] == "cancelled"

    assert client.send("POST", f"/individual_appointments/{row_id}/archive").status_code == 204
    assert listed(client, "individual_appointments", row_id, "archived_at:?", "cancelled_at:*")
    assert client.send("DELETE", f"/individual_appointments/{row_id}").status_code == 204
    assert client.get(f"/individual_appointments/{row_id}").status_code == 404
    assert not listed(client, "individual_appointments", row_id, "archived_at:*", "cancelled_at:*")
    deleted = client.get("/individual_appointments/deleted", **{"q[]": f"id:={row_id}"}).json()
    assert [r["links"]["self"].rsplit("/", 1)[1] for r in deleted["individual_appointments"]] == [
        row_id
    ]
    assert listed(client, "attendees", attendee, route="/deleted")
    assert client.send("PATCH", f"/individual_appointments/{row_id}", {}).status_code == 404


def test_group_appointment_and_its_attendees(start: Any) -> None:
    _, client = start(patients=40, seed=42)
    fields = booking_fields(client)
    patient = fields.pop("patient_id")
    group = client.send("POST", "/group_appointments", {**fields, "max_attendees": 6}).json()
    joined = client.send("POST", "/attendees", {"booking_id": group["id"], "patient_id": patient})
    assert joined.status_code == 201
    assert client.get(f"/group_appointments/{group['id']}").json()["patient_ids"] == [patient]
    attendee = joined.json()["id"]
    assert client.send("PATCH", f"/attendees/{attendee}/cancel", {}).status_code == 200
    assert listed(client, "attendees", attendee, route="/cancelled")
    assert client.send("PATCH", f"/group_appointments/{group['id']}/cancel").status_code in (
        404,
        405,
    ), "group appointments are not cancelled; their attendees are"
    assert client.send("DELETE", f"/group_appointments/{group['id']}").status_code == 204
    assert listed(client, "group_appointments", group["id"], route="/deleted")


def test_invoice_lifecycle_and_its_items(start: Any) -> None:
    server, client = start(patients=40, seed=43)
    fields = booking_fields(client)
    invoice = client.send(
        "POST",
        "/invoices",
        {"patient_id": fields["patient_id"], "business_id": fields["business_id"]},
    )
    assert invoice.status_code == 201, invoice.text
    row_id = invoice.json()["id"]
    assert invoice.json()["status"] == 10 and invoice.json()["number"] > 1
    item = client.send(
        "POST", "/invoice_items", {"invoice_id": row_id, "name": "Foam roller", "quantity": "1.0"}
    )
    assert item.status_code == 201
    item_id = item.json()["id"]
    time.sleep(1.05)
    paid = client.send("PATCH", f"/invoices/{row_id}", {"status": 20, "status_description": "Paid"})
    assert paid.json()["status"] == 20
    assert paid.json()["updated_at"] > invoice.json()["updated_at"]
    assert listed(client, "invoices", row_id, "status:=20")
    assert client.send("POST", f"/invoices/{row_id}/archive").status_code == 204
    assert listed(client, "invoice_items", item_id, "archived_at:?"), "its items are archived"
    assert client.send("POST", f"/invoices/{row_id}/unarchive").json()["archived_at"] is None
    assert client.send("DELETE", f"/invoices/{row_id}").status_code == 204
    assert listed(client, "invoices", row_id, route="/deleted")
    assert listed(client, "invoice_items", item_id, route="/deleted")
    assert server.store.snapshot("invoice_items")[item_id]["status"] == "deleted"


def test_join_tables_and_taxes_delete_rows_outright(start: Any) -> None:
    server, client = start(patients=10, seed=44)
    for name in ("taxes", "appointment_type_billable_items", "practitioner_reference_numbers"):
        row_id = first_id(client, name)
        assert client.send("DELETE", f"/{name}/{row_id}").status_code == 204
        assert client.get(f"/{name}/{row_id}").status_code == 404
        assert row_id not in server.store.snapshot(name)
    kind = first_id(client, "billable_items")
    assert client.send("DELETE", f"/billable_items/{kind}").status_code == 204
    assert server.store.snapshot("billable_items")[kind]["status"] == "archived"


@pytest.mark.parametrize("touches", [True, False])
def test_archive_and_cancel_switches_apply_to_every_collection(start: Any, touches: bool) -> None:
    server, client = start(
        patients=30,
        seed=45,
        archive_touches_updated_at=touches,
        cancel_touches_updated_at=touches,
    )
    appointments = client.get("/individual_appointments", per_page=2).json()
    first, second = (r["id"] for r in appointments["individual_appointments"])
    time.sleep(1.05)
    server.store.archive("individual_appointments", first)
    server.store.cancel("individual_appointments", second)
    after = server.store.snapshot("individual_appointments")
    before = {r["id"]: r["updated_at"] for r in appointments["individual_appointments"]}
    for row_id in (first, second):
        assert (after[row_id]["record"]["updated_at"] > before[row_id]) is touches


def test_store_methods_write_as_the_api_does(start: Any) -> None:
    server, client = start(patients=20, seed=46)
    fields = server.store.booking_fields(pick=3)
    assert fields != server.store.booking_fields(pick=4)
    created = server.store.create("individual_appointments", fields)
    assert created["starts_at"] > created["created_at"]
    assert listed(client, "individual_appointments", created["id"])
    server.store.update("individual_appointments", created["id"], {"did_not_arrive": True})
    assert listed(client, "individual_appointments", created["id"], "did_not_arrive:=true")
    server.store.delete("individual_appointments", created["id"])
    assert server.store.snapshot("individual_appointments")[created["id"]]["status"] == "deleted"
    with pytest.raises(KeyError):
        server.store.update("individual_appointments", created["id"], {"notes": "gone"})


def test_sort_modes_apply_to_every_collection(start: Any) -> None:
    _, refused = start(patients=20, seed=47, sort_mode="refused")
    answer = refused.get("/invoices", sort="id")
    assert answer.status_code == 400 and answer.json() == BAD_SORT
    _, ignored = start(patients=20, seed=47, sort_mode="ignored")
    rows = ignored.get("/invoices", per_page=100, sort="id:desc").json()["invoices"]
    created = [r["created_at"] for r in rows]
    assert created == sorted(created)


def test_writes_survive_a_restart(start: Any, tmp_path: Any) -> None:
    first, client = start(patients=20, seed=48, data_dir=tmp_path / "kept")
    invoice = first_id(client, "invoices")
    first.store.update("invoices", invoice, {"notes": "kept"})
    first.stop()
    again: SandboxServer
    again, _ = start(patients=20, seed=48, data_dir=tmp_path / "kept")
    assert again.store.snapshot("invoices")[invoice]["record"]["notes"] == "kept"
