-- One row per availability_blocks id: its row of the last full read, with its status.
-- Written by scripts/generate_models.py from tap_cliniko/resources.py: do not edit.
{{ latest_record('availability_blocks', loader_deletes=true) }}
