-- One row per appointment_type_billable_items id: its row of the last full read, with its status.
-- Written by scripts/generate_models.py from tap_cliniko/resources.py: do not edit.
{{ latest_record('appointment_type_billable_items', loader_deletes=true) }}
