-- One row per concession_prices id: its row of the last full read, with its status.
-- Written by scripts/generate_models.py from tap_cliniko/resources.py: do not edit.
{{ latest_record('concession_prices', loader_deletes=true) }}
