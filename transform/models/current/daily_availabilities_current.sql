-- One row per daily_availabilities id: its row of the last full read, with its status.
-- Written by scripts/generate_models.py from tap_cliniko/resources.py: do not edit.
{{ latest_record('daily_availabilities', loader_deletes=true) }}
