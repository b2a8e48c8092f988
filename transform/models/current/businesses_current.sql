-- One row per businesses id: its latest record, with its status.
-- Written by scripts/generate_models.py from tap_cliniko/resources.py: do not edit.
{{ latest_record('businesses') }}
