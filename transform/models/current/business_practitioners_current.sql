-- One row per business_practitioners business_id, id: its row of the last full read, with its status.
-- Written by scripts/generate_models.py from tap_cliniko/resources.py: do not edit.
{{ latest_record('business_practitioners', status_sql="case when coalesce(active, false) then 'active' else 'inactive' end", key=['business_id', 'id'], loader_deletes=true) }}
