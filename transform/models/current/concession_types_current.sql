-- One row per concession_types id: its latest record, with its status.
-- Written by scripts/generate_models.py from tap_cliniko/resources.py: do not edit.
{{ latest_record('concession_types') }}
