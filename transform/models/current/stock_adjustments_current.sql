-- One row per stock_adjustments id: its latest record, with its status.
-- Written by scripts/generate_models.py from tap_cliniko/resources.py: do not edit.
{{ latest_record('stock_adjustments') }}
