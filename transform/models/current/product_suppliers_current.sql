-- One row per product_suppliers id: its row of the last full read, with its status.
-- Written by scripts/generate_models.py from tap_cliniko/resources.py: do not edit.
{{ latest_record('product_suppliers', loader_deletes=true) }}
