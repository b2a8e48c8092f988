"""Dagster definitions for tap-cliniko's data stack (see definitions.py)."""
