-- One row per users id: its row of the last full read, with its status.
-- Written by scripts/generate_models.py from tap_cliniko/resources.py: do not edit.
{{ latest_record('users', status_sql="case when coalesce(active, false) then 'active' else 'inactive' end", loader_deletes=true) }}
