-- One row per services business_id, appointment_type_id: its row of the last full read, with its status.
-- Written by scripts/generate_models.py from tap_cliniko/resources.py: do not edit.
{{ latest_record('services', key=['business_id', 'appointment_type_id'], loader_deletes=true) }}
