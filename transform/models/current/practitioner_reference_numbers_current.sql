-- One row per practitioner_reference_numbers id: its row of the last full read, with its status.
-- Written by scripts/generate_models.py from tap_cliniko/resources.py: do not edit.
{{ latest_record('practitioner_reference_numbers', loader_deletes=true) }}
