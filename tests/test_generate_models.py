"""The dbt model generator: committed models match resources.py, and its status rules."""

from __future__ import annotations

from pathlib import Path

from scripts.generate_models import (
    TRANSFORM,
    full_table,
    generate,
    key_sql,
    main,
    model_sql,
    modelled,
    statuses,
)
from tap_cliniko.resources import BY_NAME, COLLECTIONS


def test_committed_models_match_the_collections() -> None:
    assert main(["--check"]) == 0, "run python scripts/generate_models.py"
    written = {p.name for p in (TRANSFORM / "models" / "current").glob("*_current.sql")}
    expected = {f"{c.name}_current.sql" for c in COLLECTIONS if modelled(c)} | {
        "patients_current.sql"
    }
    assert written == expected, "a model without a collection (or the reverse)"


def test_every_default_selected_collection_is_modelled() -> None:
    names = {c.name for c in COLLECTIONS if modelled(c)}
    assert {"individual_appointments", "invoices", "invoice_items", "practitioners"} <= names
    assert {"taxes", "services", "users", "business_practitioners"} <= names  # full-table, child
    assert names == {c.name for c in COLLECTIONS if not c.clinical}
    assert "treatment_notes" not in names  # clinical: not synced unless selected


def test_full_table_models_take_the_key_and_the_loaders_deletions() -> None:
    assert full_table(BY_NAME["taxes"]) and full_table(BY_NAME["business_practitioners"])
    assert not full_table(BY_NAME["invoices"])
    assert "loader_deletes=true" in model_sql(BY_NAME["taxes"])
    assert "loader_deletes" not in model_sql(BY_NAME["invoices"])
    assert "key=['business_id', 'id']" in model_sql(BY_NAME["business_practitioners"])
    assert "key=" not in model_sql(BY_NAME["taxes"])
    assert key_sql(BY_NAME["services"]) == "business_id || ':' || appointment_type_id"


def test_composite_keys_are_tested_unique_as_one_expression() -> None:
    tests = generate()[Path("models/current/collections_current.yml")]
    for collection in COLLECTIONS:
        if modelled(collection) and collection.key != ("id",):
            assert f"name: unique_{collection.name}_current_key\n" in tests, collection.name
            assert f'column_name: "{key_sql(collection)}"\n' in tests, collection.name
    assert "to: ref('businesses_current')" in tests  # a child row belongs to a read parent


def test_statuses_follow_the_schema_lifecycle_dates() -> None:
    assert statuses(BY_NAME["individual_appointments"]) == [
        "active",
        "archived",
        "cancelled",
        "deleted",
    ]
    assert statuses(BY_NAME["appointment_types"]) == ["active", "archived"]
    assert statuses(BY_NAME["practitioners"]) == ["active", "inactive"]
    # Full-table: gone from Cliniko is deleted (the loader's _sdc_deleted_at).
    assert statuses(BY_NAME["taxes"]) == ["active", "deleted"]
    assert statuses(BY_NAME["users"]) == ["active", "inactive", "deleted"]
    assert statuses(BY_NAME["business_practitioners"]) == ["active", "inactive", "deleted"]


def test_every_source_table_a_model_reads_is_declared() -> None:
    sources = generate()[next(p for p in generate() if p.name == "sources.yml")]
    for collection in COLLECTIONS:
        declared = f"      - name: {collection.name}\n" in sources
        assert declared == modelled(collection), collection.name
