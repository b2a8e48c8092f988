-- One row per appointment_type_practitioners appointment_type_id, id: its row of the last full read, with its status.
-- Written by scripts/generate_models.py from tap_cliniko/resources.py: do not edit.
{{ latest_record('appointment_type_practitioners', status_sql="case when coalesce(active, false) then 'active' else 'inactive' end", key=['appointment_type_id', 'id'], loader_deletes=true) }}
