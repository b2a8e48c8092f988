-- One row per practitioners id: its latest record, with its status.
-- Written by scripts/generate_models.py from tap_cliniko/resources.py: do not edit.
{{ latest_record('practitioners', status_sql="case when coalesce(active, false) then 'active' else 'inactive' end") }}
