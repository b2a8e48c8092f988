"""The dbt model generator: committed models match resources.py, and its status rules."""

from __future__ import annotations

from scripts.generate_models import TRANSFORM, generate, main, modelled, statuses
from tap_cliniko.resources import BY_NAME, COLLECTIONS


def test_committed_models_match_the_collections() -> None:
    assert main(["--check"]) == 0, "run python scripts/generate_models.py"
    written = {p.name for p in (TRANSFORM / "models" / "current").glob("*_current.sql")}
    expected = {f"{c.name}_current.sql" for c in COLLECTIONS if modelled(c)} | {
        "patients_current.sql"
    }
    assert written == expected, "a model without a collection (or the reverse)"


def test_default_selected_incremental_collections_are_modelled() -> None:
    names = {c.name for c in COLLECTIONS if modelled(c)}
    assert {"individual_appointments", "invoices", "invoice_items", "practitioners"} <= names
    assert "treatment_notes" not in names  # clinical: not synced unless selected
    assert "taxes" not in names  # full table: ACTIVATE_VERSION keeps it current
    assert "business_practitioners" not in names  # child stream, keyed by two ids


def test_statuses_follow_the_schema_lifecycle_dates() -> None:
    assert statuses(BY_NAME["individual_appointments"]) == [
        "active",
        "archived",
        "cancelled",
        "deleted",
    ]
    assert statuses(BY_NAME["appointment_types"]) == ["active", "archived"]
    assert statuses(BY_NAME["practitioners"]) == ["active", "inactive"]


def test_every_source_table_a_model_reads_is_declared() -> None:
    sources = generate()[next(p for p in generate() if p.name == "sources.yml")]
    for collection in COLLECTIONS:
        declared = f"      - name: {collection.name}\n" in sources
        assert declared == modelled(collection), collection.name
